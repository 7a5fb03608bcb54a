"""A TCP proxy for fault tests: forwards 127.0.0.1:<port> to a target, and can misbehave.

``pause()`` stops forwarding in both directions (bytes already read are held, the rest
waits in the kernel: TCP back-pressure, as on a stalled network path); ``resume()``
releases them; ``drop()`` cuts every connection at once (both sides see a reset).
New connections are accepted while paused and stall like the others. ``cut()`` is an
outage: every connection dropped and new ones refused until ``restore()``. It runs its
own event loop on a thread, so synchronous tests can drive it.
"""

from __future__ import annotations

import asyncio
import threading


class TcpProxy:
    def __init__(self, target_host: str, target_port: int, host: str = "127.0.0.1") -> None:
        self.target = (target_host, target_port)
        self.host = host
        self.port = 0
        self.connections = 0  # accepted since start
        self.refused = 0  # connections refused during a cut()
        self._loop = asyncio.new_event_loop()
        self._open = asyncio.Event()
        self._refusing = False
        self._writers: set[asyncio.StreamWriter] = set()
        self._server: asyncio.Server | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, name="tcp-proxy", daemon=True)

    def start(self) -> TcpProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(10)
        return self

    async def _start(self) -> None:
        self._open.set()
        self._server = await asyncio.start_server(self._accept, self.host, 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            self.refused += 1
            writer.transport.abort()
            return
        self.connections += 1
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._writers |= {writer, up_writer}
        await asyncio.gather(self._pump(reader, up_writer), self._pump(up_reader, writer))
        self._writers -= {writer, up_writer}

    async def _pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                await self._open.wait()
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            writer.transport.abort()

    def _call(self, func) -> None:
        self._loop.call_soon_threadsafe(func)

    def pause(self) -> None:
        self._call(self._open.clear)

    def resume(self) -> None:
        self._call(self._open.set)

    def drop(self) -> None:
        """Reset every open connection (the proxy keeps accepting new ones)."""

        def cut() -> None:
            for writer in list(self._writers):
                writer.transport.abort()

        self._call(cut)

    def cut(self) -> None:
        """An outage: reset every connection and refuse new ones until ``restore()``."""

        def refuse() -> None:
            self._refusing = True

        self._call(refuse)
        self.drop()

    def restore(self) -> None:
        def accept() -> None:
            self._refusing = False

        self._call(accept)

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()

        if self._thread.is_alive():
            asyncio.run_coroutine_threadsafe(close(), self._loop).result(10)
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
        self._loop.close()
