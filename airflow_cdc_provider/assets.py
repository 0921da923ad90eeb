"""The URI of every source and destination: one per table or folder, in the form Airflow normalises to.

A destination's URI is the sync's outlet :class:`~airflow.sdk.Asset`; a source's names its input in OpenLineage;
both make the default stream id (``source.uri -> destination.uri``). Airflow rewrites an asset URI it is given
(``urlsplit``/``urlunsplit``, without trailing slashes, then the scheme's own sanitizer), and keeps the raw string as
the asset's name. So each URI here is built already in that normal form: the name the UI shows is the URI the REST
API returns and the one a downstream DAG schedules on. One table has one URI whatever its role: a Delta table is
named by its storage location (read or written), a warehouse table by ``cdc-<engine>://<conn_id>/<table>`` (read
by a table hook or written by a push-down destination).

The forms, and why:

* ``file:///abs/path``, ``s3://bucket/prefix``, ``gs://bucket/prefix``, ``wasb://container@account/prefix``,
  ``https://account.blob.core.windows.net/container/prefix``, ``sftp://host:port/path``: where the files are.
  SFTP always names its port, as the SFTP provider's sanitizer does.
* ``duckdb:/abs/file.duckdb/schema/table``: a URI without a host loses its ``//`` in Airflow (``duckdb:///p`` is
  stored as ``duckdb:/p``), so it is written without it.
* ``cdc-postgres://conn_id/schema/table``, ``cdc-snowflake://conn_id/DB.SCHEMA.TABLE``, ``cdc-bigquery://...``,
  ``cdc-databricks://...``: named by connection id, since a DAG file is parsed without looking a connection up. The
  schemes are this provider's own; :func:`sanitize_uri` is registered for them (``asset-uris`` in provider info).

Characters a URI cannot carry as they are (space, ``?``, ``#``, ``%``) are percent-encoded, so nothing of a path is
read as a query or a fragment and dropped.

URIs of earlier versions (``duckdb:///p``, ``delta+file:///p``, ``snowflake://conn/t`` for a source, SFTP without its
port) made other default stream ids: :func:`previous_stream_ids` lists them, so a stream that has a checkpoint under
its old id keeps it (see :mod:`airflow_cdc_provider.streams`).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import SplitResult, quote, unquote, urlsplit, urlunsplit

from airflow_cdc_provider.exceptions import AssetUriError

OWN_SCHEMES = ("duckdb", "cdc-postgres", "cdc-snowflake", "cdc-bigquery", "cdc-databricks")
"""The asset URI schemes this provider owns and registers :func:`sanitize_uri` for."""
SFTP_PORT = 22
_PATH_SAFE = "/:@!$&'()*+,;=~"  # reserved characters that mean nothing special in a path


def _path(path: str) -> str:
    return quote(path, safe=_PATH_SAFE)


def _uri(scheme: str, netloc: str, path: str) -> str:
    """``scheme://netloc/path`` without a trailing slash, as Airflow normalises it."""
    path = "/" + _path(path.strip("/"))
    return urlunsplit((scheme, netloc, path.rstrip("/") or "/", "", ""))


def file_uri(path: str | Path) -> str:
    """``file:///abs/path`` of a local folder or table."""
    return _uri("file", "", Path(path).absolute().as_posix())


def bucket_uri(scheme: str, bucket: str, prefix: str) -> str:
    """``s3://bucket/prefix`` (or ``gs``, ``wasb`` with ``container@account``): a folder of an object store."""
    return _uri(scheme, bucket, prefix)


def container_uri(container_url: str, prefix: str) -> str:
    """``https://account.blob.core.windows.net/container/prefix``: a folder of a container known by its URL.

    :param container_url: the container's URL; a query (a SAS) or user info is left out.
    :param prefix: the folder inside the container.
    """
    parts = urlsplit(container_url)
    netloc = parts.netloc.rpartition("@")[2]
    return _uri(parts.scheme, netloc, f"{unquote(parts.path).strip('/')}/{prefix.strip('/')}")


def sftp_uri(host: str, port: int | None, path: str) -> str:
    """``sftp://host:port/path``; the port is always named, as the SFTP provider's sanitizer adds it."""
    return _uri("sftp", f"{host}:{port or SFTP_PORT}", path)


def storage_uri(location: str) -> str:
    """Where a Delta table is stored: ``file:///abs`` for a local path, else the URL without user info or query."""
    parts = urlsplit(location)
    if len(parts.scheme) <= 1:  # a path (or a Windows drive letter)
        return file_uri(location)
    netloc = parts.hostname or ""
    if parts.port:
        netloc = f"{netloc}:{parts.port}"
    if parts.username and parts.scheme in ("abfs", "abfss", "wasb", "wasbs"):  # container@account, not a login
        netloc = f"{parts.username}@{netloc}"
    return _uri(parts.scheme, netloc, unquote(parts.path))


def duckdb_uri(path: str, table: str) -> str:
    """``duckdb:/abs/file.duckdb/schema/table`` (schema ``main`` unless the table is qualified)."""
    schema, _, name = table.rpartition(".")
    return "duckdb:" + _path(f"{Path(path).absolute().as_posix()}/{schema or 'main'}/{name}")


def warehouse_uri(engine: str, conn_id: str | None, table: str) -> str:
    """``cdc-<engine>://<conn_id>/<table>``: a warehouse table, read or written, named by its connection."""
    return _uri(f"cdc-{engine}", conn_id or "", table)


def postgres_uri(conn_id: str | None, table: str) -> str:
    """``cdc-postgres://<conn_id>/<schema>/<table>`` (schema ``public`` unless the table is qualified)."""
    schema, _, name = table.rpartition(".")
    return warehouse_uri("postgres", conn_id, f"{schema or 'public'}/{name}")


def sanitize_uri(parts: SplitResult) -> SplitResult:
    """Airflow's sanitizer for this provider's schemes: refuse a URI that names no table; change nothing else.

    :param parts: the URI as Airflow split and normalised it.
    """
    if parts.scheme == "duckdb":
        if parts.netloc or len(parts.path.strip("/").split("/")) < 3 or not parts.path.startswith("/"):
            raise AssetUriError(f"{urlunsplit(parts)}: expected duckdb:/<absolute path of the file>/<schema>/<table>")
        return parts
    if not parts.netloc or not parts.path.strip("/"):
        raise AssetUriError(f"{urlunsplit(parts)}: expected {parts.scheme}://<connection id>/<table>")
    return parts


def previous_stream_ids(source_uri: str, destination_uri: str) -> list[str]:
    """Default stream ids that earlier versions made for the same source and destination, newest form first.

    The source's or the destination's URI of an earlier version, whichever differs (both may); a candidate that no
    earlier version could have made costs one checkpoint look-up that finds nothing.
    """
    sources = [source_uri, *_previous_source_uris(source_uri)]
    destinations = [destination_uri, *_previous_destination_uris(destination_uri)]
    current = f"{source_uri} -> {destination_uri}"
    found: list[str] = []
    for source in sources:
        for destination in destinations:
            candidate = f"{source} -> {destination}"
            if candidate != current and candidate not in found:
                found.append(candidate)
    return found


def _previous_source_uris(uri: str) -> list[str]:
    parts = urlsplit(uri)
    found = []
    if parts.scheme.startswith("cdc-"):  # table hooks named their table <engine>://conn/table
        found.append(uri.removeprefix("cdc-"))
    elif parts.scheme == "sftp" and parts.port == SFTP_PORT:  # the port was left out when 22
        found.append(urlunsplit(parts._replace(netloc=parts.hostname or "")))
    else:  # a Delta table read from storage was delta+<storage URI> without user info; a path was not encoded
        delta = "delta+" + urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
        found.extend(dict.fromkeys(candidate for candidate in (delta, unquote(uri)) if candidate != uri))
    if parts.scheme == "https":  # a landing zone's whole container ended in "/"
        found.append(uri + "/")
    return found


def _previous_destination_uris(uri: str) -> list[str]:
    if uri.startswith("duckdb:"):
        return ["duckdb://" + unquote(uri.removeprefix("duckdb:"))]
    return [unquote(uri)] if unquote(uri) != uri else []
