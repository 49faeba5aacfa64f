"""Fault injection for the fault tests: a loopback proxy that loses answers."""

from __future__ import annotations

import asyncio
import contextlib

from tests.support.server import ServerProcess


class DropAnswersProxy:
    """A TCP proxy on loopback that forwards requests and loses every answer.

    The server sees its answer written; the client sees its connection closed instead, as
    when a connection drops or a client times out at the worst moment.
    """

    def __init__(self, upstream_port: int) -> None:
        self._upstream_port = upstream_port
        self._server: asyncio.Server | None = None
        self.port = 0
        self.answers_dropped = 0

    async def __aenter__(self) -> DropAnswersProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()

    def base(self, server: ServerProcess) -> str:
        return f"http://127.0.0.1:{self.port}{server.mount}"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self._upstream_port)

        async def forward() -> None:
            while data := await reader.read(65536):
                up_writer.write(data)
                await up_writer.drain()

        forwarding = asyncio.create_task(forward())
        try:
            # The first byte of the answer arrives: drop it and hang up on the client.
            if await up_reader.read(1):
                self.answers_dropped += 1
        finally:
            forwarding.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await forwarding
            for w in (writer, up_writer):
                w.close()
                with contextlib.suppress(OSError):
                    await w.wait_closed()
