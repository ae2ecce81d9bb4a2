"""A dreamnet-healthd process on a socket, state directory and alert log of its own."""

from __future__ import annotations

import os
import signal
import subprocess
import time

from harness import statusclient


class Daemon:
    """Starts the daemon in `directory` and stops it with SIGTERM; `pid` is its process."""

    def __init__(self, binary: str, directory: str, args: list[str] = (), env: dict[str, str] | None = None):
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self.socket_path = os.path.join(directory, "status.sock")
        self.log_path = os.path.join(directory, "daemon.log")
        environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NOTIFY_SOCKET")}
        # As the packaged unit runs it (systemd/dreamnet-healthd.service).
        environment["GNUTLS_NO_IMPLICIT_INIT"] = "1"
        environment.update(env or {})
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [binary, "--socket", self.socket_path, "--state-dir", os.path.join(directory, "state"),
                 "--alert-log", os.path.join(directory, "alerts.log"), "--log-level", "warning", *args],
                env=environment, stdout=log, stderr=log,
            )
        deadline = time.monotonic() + 10
        while not os.path.exists(self.socket_path):
            if time.monotonic() > deadline or self.process.poll() is not None:
                self.stop()
                raise RuntimeError(f"the daemon did not start; its log:\n{self.log()}")
            time.sleep(0.01)

    @property
    def pid(self) -> int:
        return self.process.pid

    def log(self) -> str:
        with open(self.log_path, encoding="utf-8", errors="replace") as log:
            return log.read()

    def get(self, path: str, timeout: float = 10) -> tuple[int, bytes]:
        """One request on a connection of its own: the status code and the body."""
        return statusclient.get(self.socket_path, path, timeout)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
