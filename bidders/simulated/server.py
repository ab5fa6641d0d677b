"""Running simulated providers: in the caller's event loop, in a thread, or as a process."""

from __future__ import annotations

import asyncio
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import TracebackType

from bidders.simulated.app import SimulatedApp
from bidders.simulated.behaviour import FaultPlan, SimConfig, Stats
from bidders.simulated.http_server import HttpServer
from clearing.types import ApiName

THREAD_START_TIMEOUT_S = 10.0


class SimulatedProvider:
    """A simulated provider on 127.0.0.1 in the running event loop; `async with` starts it.

    `base_url` is what the vendor's SDK (and the marketplace's registration) takes. After `stop()`
    the port refuses connections; `start()` again listens on the same port.
    """

    def __init__(
        self,
        api: ApiName,
        config: SimConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        self.api = api
        self.host = host
        self.port = port
        self.app = SimulatedApp(api, config or SimConfig())
        self._http: HttpServer | None = None

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def base_url(self) -> str:
        return self.url + self.app.wire.base_path

    @property
    def stats(self) -> Stats:
        return self.app.stats

    @property
    def faults(self) -> FaultPlan:
        return self.app.faults

    @property
    def config(self) -> SimConfig:
        return self.app.config

    def reconfigure(self, config: SimConfig) -> None:
        """New settings while running, e.g. `replace(provider.config, ttft_ms=200)`."""
        self.app.reconfigure(config)

    @property
    def running(self) -> bool:
        return self._http is not None

    async def start(self) -> None:
        if self._http is not None:
            return
        http = HttpServer(self.app, max_body_bytes=self.app.config.max_body_bytes)
        self.port = await http.start(self.host, self.port)
        self._http = http

    async def stop(self) -> None:
        """Stop listening and cut every connection; requests in progress end at once."""
        http, self._http = self._http, None
        if http is not None:
            await http.close()

    async def __aenter__(self) -> SimulatedProvider:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()


async def serve(
    api: ApiName,
    config: SimConfig,
    stop: asyncio.Event,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    on_ready: Callable[[SimulatedProvider], None] | None = None,
) -> None:
    """Serve until `stop` is set; `on_ready` learns the bound port and base URL."""
    async with SimulatedProvider(api, config, host=host, port=port) as provider:
        if on_ready is not None:
            on_ready(provider)
        await stop.wait()


def run(
    api: ApiName,
    host: str,
    port: int,
    config: SimConfig,
    on_ready: Callable[[SimulatedProvider], None] | None = None,
) -> None:
    """Serve in this process until SIGINT or SIGTERM (uvloop when installed)."""

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        await serve(api, config, stop, host=host, port=port, on_ready=on_ready)

    try:
        import uvloop
    except ImportError:  # uvicorn[standard] brings it; plain asyncio works too, only slower
        asyncio.run(main())
    else:
        uvloop.run(main())


@contextmanager
def provider_in_thread(
    api: ApiName, config: SimConfig | None = None, *, host: str = "127.0.0.1", port: int = 0
) -> Iterator[SimulatedProvider]:
    """A simulated provider with its own event loop in a daemon thread, for synchronous callers.

    Read its stats from this thread freely (plain integers); change its settings only through the
    HTTP control routes, which run in its own loop.
    """
    ready = threading.Event()
    started: list[SimulatedProvider] = []
    failure: list[BaseException] = []
    control: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def main() -> None:
        stop = asyncio.Event()
        control.append((asyncio.get_running_loop(), stop))
        try:
            async with SimulatedProvider(api, config, host=host, port=port) as provider:
                started.append(provider)
                ready.set()
                await stop.wait()
        except OSError as exc:
            failure.append(exc)
            ready.set()

    thread = threading.Thread(target=asyncio.run, args=(main(),), name=f"sim-{api}", daemon=True)
    thread.start()
    if not ready.wait(THREAD_START_TIMEOUT_S) or failure:
        cause = failure[0] if failure else None
        raise RuntimeError(f"simulated {api} provider did not start") from cause
    try:
        yield started[0]
    finally:
        loop, stop = control[0]
        loop.call_soon_threadsafe(stop.set)
        thread.join(THREAD_START_TIMEOUT_S)
