"""The five remote stores behind a proxy (``benchmarks/proxy.py``) that can cut connections in the middle of a
download: ``proxied_store`` (parametrized over ``STORES``) yields the :class:`~tests.stores.Store` reached through
the proxy, and the proxy. The servers are the suite's own (``tests/store_servers.py``)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from benchmarks.proxy import Proxy, proxy
from tests import store_servers
from tests.stores import STORES, Store

_SERVERS = {
    "s3": "moto_server",
    "wasb": "azurite",
    "landing_zone": "azurite",
    "gcs": "gcs_emulator",
    "sftp": "sftp_server",
}


def _through(name: str, server: dict[str, Any], port: int) -> dict[str, Any]:
    """``server``'s description with its address replaced by the proxy's."""
    if name == "s3":
        return {**server, "url": f"http://127.0.0.1:{port}"}
    if name in ("wasb", "landing_zone"):
        endpoint = server["endpoint"].replace(server["endpoint"].split("/")[2], f"127.0.0.1:{port}")
        return {
            **server,
            "endpoint": endpoint,
            "connection_string": server["connection_string"].replace(server["endpoint"], endpoint),
        }
    if name == "gcs":
        return {**server, "host": f"http://127.0.0.1:{port}"}
    return {**server, "port": port}


def _target(name: str, server: dict[str, Any]) -> tuple[str, int]:
    if name == "sftp":
        return "127.0.0.1", int(server["port"])
    url = {"s3": "url", "gcs": "host"}.get(name, "endpoint")
    host, port = server[url].split("/")[2].split(":")
    return host, int(port)


@pytest.fixture(params=STORES)
def proxied_store(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Store, Proxy]]:
    name = request.param
    server = request.getfixturevalue(_SERVERS[name])
    with proxy(*_target(name, server)) as running:
        build: Callable[..., Store] = getattr(store_servers, f"{name}_store")
        yield build(_through(name, server, running.port), monkeypatch, f"feed-{uuid.uuid4().hex[:10]}"), running
