"""A TCP proxy on 127.0.0.1 in front of a server: latency per request, a bandwidth cap per connection, and cuts.

The S3 shapes of the benchmark put it in front of moto (25 ms a request, optionally 50 MB/s a connection), so that
a store far away is measured on one machine; the tests use it to cut connections in the middle of a download.

A request is what the client sends after the server last spoke (or on a new connection): its first bytes wait
``latency`` seconds before they go on, as a round trip to a distant store would make them. The server's bytes are
sent at most at ``bandwidth`` bytes a second on each connection. Once :meth:`Proxy.cut` is called, each
connection is cut (reset) after that many more bytes from the server, until :meth:`Proxy.heal`.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Iterator
from dataclasses import dataclass

_CHUNK = 64 * 1024


@dataclass
class ProxyStats:
    """What went through: connections opened, requests (client turns), bytes each way, connections cut."""

    connections: int = 0
    requests: int = 0
    bytes_up: int = 0
    bytes_down: int = 0
    cut: int = 0


class Proxy:
    """Forwards 127.0.0.1:``port`` to ``target_host``:``target_port`` on a thread of its own.

    :param target_host: the server's host.
    :param target_port: the server's port.
    :param latency: seconds each request waits before it is forwarded.
    :param bandwidth: bytes a second the server's answers get on each connection (``None``: no cap).
    """

    def __init__(
        self, target_host: str, target_port: int, *, latency: float = 0.0, bandwidth: float | None = None
    ) -> None:
        self.target_host, self.target_port = target_host, target_port
        self.latency, self.bandwidth = latency, bandwidth
        self.stats = ProxyStats()
        self.port = 0
        self._cut_after: int | None = None
        self._cut_epoch = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="bench-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self._pumps: set[asyncio.Future[None]] = set()  # each connection's two directions
        self._stopping = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> Proxy:
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def stop(self) -> None:
        async def close() -> None:
            assert self._server is not None
            self._stopping = True
            self._server.close()
            for pump in self._pumps:
                pump.cancel()  # each connection's task then ends on its own
            connections = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
            if connections:
                await asyncio.wait(connections, timeout=5)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def cut(self, after_bytes: int) -> None:
        """Reset each connection once the server has sent ``after_bytes`` more on it."""
        self._cut_after, self._cut_epoch = after_bytes, self._cut_epoch + 1

    def heal(self) -> None:
        """Stop cutting connections."""
        self._cut_after = None

    async def _listen(self) -> asyncio.Server:
        return await asyncio.start_server(self._serve, "127.0.0.1", 0)

    async def _serve(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.stats.connections += 1
        try:
            server_reader, server_writer = await asyncio.open_connection(self.target_host, self.target_port)
        except OSError:
            client_writer.close()
            return
        turn = ["server"]  # who spoke last: a client's first bytes after the server's are a new request
        pumps = {
            asyncio.ensure_future(self._up(client_reader, server_writer, turn)),
            asyncio.ensure_future(self._down(server_reader, client_writer, turn)),
        }
        self._pumps |= pumps
        try:
            if not self._stopping:
                await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.wait(pumps)
            self._pumps -= pumps
            for writer in (client_writer, server_writer):
                with contextlib.suppress(Exception):
                    writer.close()

    async def _up(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, turn: list[str]) -> None:
        while data := await reader.read(_CHUNK):
            if turn[0] == "server":
                turn[0] = "client"
                self.stats.requests += 1
                if self.latency:
                    await asyncio.sleep(self.latency)
            self.stats.bytes_up += len(data)
            writer.write(data)
            await writer.drain()
        with contextlib.suppress(OSError):
            writer.write_eof()

    async def _down(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, turn: list[str]) -> None:
        loop = asyncio.get_running_loop()
        ready_at = loop.time()
        epoch, sent_since_cut = self._cut_epoch, 0
        while data := await reader.read(_CHUNK):
            turn[0] = "server"
            if self._cut_after is not None:
                if epoch != self._cut_epoch:
                    epoch, sent_since_cut = self._cut_epoch, 0
                if sent_since_cut + len(data) > self._cut_after:
                    writer.write(data[: self._cut_after - sent_since_cut])
                    with contextlib.suppress(Exception):
                        await writer.drain()
                    self.stats.cut += 1
                    connection = writer.get_extra_info("socket")
                    connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                    writer.transport.abort()  # a reset (linger 0), as a dropped connection looks to the client
                    return
                sent_since_cut += len(data)
            if self.bandwidth:  # a chunk of n bytes arrives n / bandwidth seconds after the one before it
                ready_at = max(ready_at, loop.time()) + len(data) / self.bandwidth
                delay = ready_at - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
            self.stats.bytes_down += len(data)
            writer.write(data)
            await writer.drain()


@contextlib.contextmanager
def proxy(
    target_host: str, target_port: int, *, latency: float = 0.0, bandwidth: float | None = None
) -> Iterator[Proxy]:
    """A started :class:`Proxy`, stopped on exit."""
    running = Proxy(target_host, target_port, latency=latency, bandwidth=bandwidth).start()
    try:
        yield running
    finally:
        running.stop()
