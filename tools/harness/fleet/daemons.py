"""The fleet's processes: a daemon each in a directory of its own, naming its connections, started
one after the other or all behind one gate, and polled through their status sockets."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time

from harness import procmem, statusclient


def log(message: str) -> None:
    print(f"fleet: {message}", file=sys.stderr, flush=True)


class Daemon:
    def __init__(self, binary: str, url: str, pids_file: str, base: str, index: int):
        self.binary, self.url, self.pids_file = binary, url, pids_file
        self.dir = f"{base}/d{index:03d}"
        # Each daemon names its connections, so the server's log tells them apart.
        self.name = f"dreamnet-healthd-{index:03d}"
        os.makedirs(self.dir, exist_ok=True)
        self.sock, self.alerts, self.proc, self.pids = f"{self.dir}/status.sock", f"{self.dir}/alerts.log", None, []

    def start(self, args: list[str], gate: str | None = None) -> None:
        """Starts the daemon; with `gate` (a FIFO) it waits, exec'd from a shell, until a line
        can be read from it, so that a hundred can be let go at the same moment."""
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NOTIFY_SOCKET")}
        command = [self.binary, "--socket", self.sock, "--state-dir", f"{self.dir}/state", "--alert-log", self.alerts,
                   "--log-level", "warning", "--database-url", f"{self.url}?application_name={self.name}", *args]
        if gate:
            command = ["sh", "-c", 'read -r _ <"$0"; exec "$@"', gate, *command]
        with open(f"{self.dir}/daemon.log", "ab") as out:
            self.proc = subprocess.Popen(command, env=env, stdout=out, stderr=out)
        self.pids.append(self.proc.pid)
        with open(self.pids_file, "a") as f:
            f.write(f"{self.proc.pid}\n")

    def status(self) -> dict | None:
        try:
            return json.loads(statusclient.get(self.sock, "/status", timeout=2.0)[1])
        except (OSError, ValueError, IndexError):
            return None

    def cpu(self) -> float:
        return procmem.cpu_seconds(self.proc.pid)

    def pss_mib(self) -> float:
        with open(f"/proc/{self.proc.pid}/smaps_rollup") as f:
            for line in f:
                if line.startswith("Pss:"):
                    return int(line.split()[1]) / 1024
        return 0.0

    def alert_ids(self) -> list[str]:
        with open(self.alerts) as f:
            return [json.loads(line)["id"] for line in f if line.strip()]


def start_all(fleet: list[Daemon], args: list[str]) -> None:
    for d in fleet:
        d.start(args)


def start_all_at_once(fleet: list[Daemon], args: list[str], gate: str) -> tuple[float, list]:
    """Spawns every daemon behind one gate, then opens it: returns the moment they were let go
    and, per daemon, when its status socket appeared (seconds after; None: not within 30 s)."""
    if os.path.exists(gate):
        os.unlink(gate)
    os.mkfifo(gate)
    for d in fleet:
        d.start(args, gate=gate)
    # Opening the FIFO for reading and writing never blocks; each waiting shell reads one line.
    fd = os.open(gate, os.O_RDWR)
    released = time.time()
    os.write(fd, b"\n" * len(fleet))
    up = [None] * len(fleet)
    deadline = time.time() + 30
    while any(u is None for u in up) and time.time() < deadline:
        for i, d in enumerate(fleet):
            if up[i] is None and os.path.exists(d.sock):
                up[i] = time.time() - released
        time.sleep(0.005)
    os.close(fd)
    return released, up


def stop_all(fleet: list[Daemon]) -> None:
    for d in fleet:
        d.proc.send_signal(signal.SIGTERM)
    for d in fleet:
        try:
            d.proc.wait(20)
        except subprocess.TimeoutExpired:
            log(f"{d.dir} did not stop within 20 s of SIGTERM: killed")
            d.proc.kill()
            d.proc.wait()


def wait_for(fleet: list[Daemon], predicate, timeout: float, step: float = 0.1) -> list:
    """Polls every daemon's /status until predicate holds for all; returns, per daemon, the time
    it first held (None: never within the timeout)."""
    seen = [None] * len(fleet)
    deadline = time.time() + timeout
    while time.time() < deadline and any(t is None for t in seen):
        for i, d in enumerate(fleet):
            if seen[i] is None:
                s = d.status()
                if s is not None and predicate(s):
                    seen[i] = time.time()
        time.sleep(step)
    return seen


def pending(s: dict) -> int:
    return (s.get("spool") or {}).get("pending", 0)


def healthy_and_empty(s: dict) -> bool:
    return s["state"] == "healthy" and pending(s) == 0


class Sampler:
    """Counts client backends every 100 ms, from /proc (asking the server would add to what is measured)."""

    def __init__(self, cluster):
        self.cluster = cluster
        self.samples, self.stop = [], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)
        self.thread.start()

    def run(self) -> None:
        while not self.stop.is_set():
            self.samples.append((time.time(), len(self.cluster.client_backends())))
            self.stop.wait(0.1)

    def most(self, t0: float, t1: float) -> int:
        return max((n for t, n in self.samples if t0 <= t <= t1), default=0)
