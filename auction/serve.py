"""Running the marketplace: resolve Redis (embedded when none is named) and run uvicorn."""

from __future__ import annotations

import gc
import json
import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import uvicorn
from fastapi import FastAPI

from auction.app import create_app
from auction.embedded import EmbeddedRedis
from auction.settings import Settings

SETTINGS_ENV = "AUCTION_SETTINGS_JSON"  # how the parent hands settings to uvicorn's workers
APP_FACTORY = "auction.serve:app_from_env"
log = logging.getLogger("auction.serve")


def settle_heap() -> None:
    """Freeze a server process's start-up objects, once its app is built.

    A busy market (offers re-quoted tens of thousands of times a second) promotes enough
    short-lived objects to the collector's oldest generation to set off a full collection about
    once a second, and each walked every object of the process, the modules' and FastAPI's and
    pydantic's start-up objects included (~90,000): 30-60 ms in which no quote, request or feed
    frame moved. Frozen, those live in the permanent generation and are never walked again
    (they live as long as the process anyway), and a full collection takes 2-3 ms. Cyclic
    garbage made after start-up is collected as before; the thresholds stay the standard ones,
    whose young collections take tens of microseconds (larger ones cost a request's p99).
    """
    gc.collect()
    gc.freeze()


def settings_json(settings: Settings) -> str:
    """The settings as a worker process reads them from SETTINGS_ENV, admin token included."""
    payload = settings.model_dump(mode="json")
    if settings.admin_token is not None:
        payload["admin_token"] = settings.admin_token.get_secret_value()
    return json.dumps(payload)


def local_process(
    settings: Settings, port: int, *, lean: bool = False
) -> tuple[list[str], dict[str, str]]:
    """The command and environment of one marketplace process on 127.0.0.1:`port`, started
    as `serve`'s workers are (uvicorn with `app_from_env`), for tests and benchmarks; `lean`
    adds uvloop, httptools and no access log, as the benchmarks measure it."""
    command = [
        sys.executable, "-m", "uvicorn", APP_FACTORY, "--factory",
        "--host", "127.0.0.1", "--port", str(port), "--log-level", "warning",
    ]  # fmt: skip
    if lean:
        command += ["--loop", "uvloop", "--http", "httptools", "--no-access-log"]
    return command, {**os.environ, SETTINGS_ENV: settings_json(settings)}


def configure_logging(level: str) -> None:
    """Readable one-line logs: time, level, logger, message."""
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )


@contextmanager
def redis_for(settings: Settings) -> Iterator[Settings]:
    """Yield settings with a redis_url: the given one, or an embedded Redis started here."""
    if settings.redis_url:
        yield settings
        return
    server = EmbeddedRedis(settings.data_dir)
    url = server.start()
    log.info("embedded Redis serving %s (append-only files in %s)", url, settings.data_dir)
    try:
        yield settings.model_copy(update={"redis_url": url})
    finally:
        server.stop()


def app_from_env() -> FastAPI:
    """The app factory uvicorn's worker processes call (settings come from the parent)."""
    data = json.loads(os.environ[SETTINGS_ENV])
    app = create_app(Settings.model_validate(data))
    settle_heap()
    return app


def serve(settings: Settings) -> None:
    """Run the marketplace until interrupted."""
    with redis_for(settings) as resolved:
        log.info("marketplace on http://%s:%d", resolved.host, resolved.port)
        if resolved.workers == 1:
            app = create_app(resolved)
            settle_heap()
            uvicorn.run(
                app,
                host=resolved.host,
                port=resolved.port,
                log_level=resolved.log_level,
                access_log=False,
            )
            return
        os.environ[SETTINGS_ENV] = settings_json(resolved)
        uvicorn.run(
            APP_FACTORY,
            factory=True,
            host=resolved.host,
            port=resolved.port,
            workers=resolved.workers,
            log_level=resolved.log_level,
            access_log=False,
        )
