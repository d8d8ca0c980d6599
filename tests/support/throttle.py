"""A loopback TCP proxy that relays what its clients send at a few bytes per second (and the
answers at full speed): the slow sender of a security test, with real gRPC clients behind it."""

import asyncio
import contextlib
import threading


class ThrottlingProxy:
    """Listens on 127.0.0.1 (a free port) and relays each connection to `upstream`; bytes from
    the client go on in chunks of `chunk` bytes every `every_s` seconds."""

    def __init__(self, upstream: str, chunk: int = 200, every_s: float = 0.1):
        self._host, _, port = upstream.rpartition(":")
        self._port = int(port)
        self._chunk, self._every_s = chunk, every_s
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.address = ""

    def __enter__(self) -> "ThrottlingProxy":
        self._thread.start()
        self._server = self._run(asyncio.start_server(self._relay, "127.0.0.1", 0, backlog=1024))
        self.address = f"127.0.0.1:{self._server.sockets[0].getsockname()[1]}"
        return self

    def __exit__(self, *_exc) -> None:
        self._run(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()

    def _run(self, coroutine):
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(10)

    async def _close(self) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        relays = asyncio.all_tasks() - {asyncio.current_task()}
        for task in relays:
            task.cancel()
        await asyncio.gather(*relays, return_exceptions=True)

    async def _relay(self, client_in: asyncio.StreamReader, client_out: asyncio.StreamWriter):
        upstream_in, upstream_out = await asyncio.open_connection(self._host, self._port)
        self._writers.update((client_out, upstream_out))
        with contextlib.suppress(OSError, asyncio.CancelledError):
            await asyncio.gather(
                self._pipe(client_in, upstream_out, self._chunk, self._every_s),
                self._pipe(upstream_in, client_out, 1 << 16, 0.0),
            )
        for writer in (client_out, upstream_out):
            writer.close()

    @staticmethod
    async def _pipe(
        source: asyncio.StreamReader, sink: asyncio.StreamWriter, chunk: int, every_s: float
    ) -> None:
        while data := await source.read(chunk):
            sink.write(data)
            await sink.drain()
            if every_s:
                await asyncio.sleep(every_s)
        sink.close()
