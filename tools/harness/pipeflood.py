"""Clients that pipeline requests and never read the replies, against a daemon's status socket,
while its resident memory is sampled: what a connection can make the daemon hold, and whether it
gives the memory back once the clients have gone.

    python3 -m harness.pipeflood --daemon BIN --healthctl BIN [--connections 512] [--requests 1000]
        [--rounds 15] [--hold 1.5] [--settle 10] [--json] [-- DAEMON ARGS...]

Each round opens the connections, sends each one's requests at once, holds them `hold` seconds,
asks `dreamnet-healthctl status` meanwhile, and closes them. Prints one JSON object with --json,
else a line per figure.
"""

from __future__ import annotations

import argparse
import json
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import asdict, dataclass, field

from . import procmem
from .daemon import Daemon


@dataclass
class Sample:
    seconds: float
    anon: int
    rss: int


@dataclass
class FloodResult:
    connections: int
    requests_per_connection: int
    rounds: int
    idle_anon: int
    peak_anon: int
    settled_anon: int
    peak_rss: int
    status_answered: int
    status_asked: int
    slowest_status_seconds: float
    cpu_seconds: float
    round_peaks: list[int] = field(default_factory=list)

    @property
    def peak_above_idle(self) -> int:
        return self.peak_anon - self.idle_anon

    @property
    def settled_above_idle(self) -> int:
        return self.settled_anon - self.idle_anon


class Sampler(threading.Thread):
    """Reads the process's memory every `period` seconds until stopped."""

    def __init__(self, pid: int, period: float = 0.05):
        super().__init__(daemon=True)
        self.pid, self.period = pid, period
        self.samples: list[Sample] = []
        self.started = time.monotonic()
        self._stopping = threading.Event()

    def run(self) -> None:
        while not self._stopping.is_set():
            memory = procmem.read(self.pid)
            self.samples.append(Sample(time.monotonic() - self.started, memory.anon, memory.rss))
            self._stopping.wait(self.period)

    def stop(self) -> None:
        self._stopping.set()
        self.join()

    def peak_since(self, seconds: float) -> int:
        return max((s.anon for s in self.samples if s.seconds >= seconds), default=0)


def pipelined_requests(count: int, path: str = "/status") -> bytes:
    return f"GET {path} HTTP/1.1\r\nHost: x\r\n\r\n".encode() * count


def open_flood(socket_path: str, connections: int, payload: bytes) -> list[socket.socket]:
    """Connects and sends every payload without reading; a send the kernel cannot take at once is
    cut short (the point is bytes the daemon has not read)."""
    clients = []
    for _ in range(connections):
        client = socket.socket(socket.AF_UNIX)
        client.connect(socket_path)
        client.setblocking(False)
        try:
            client.send(payload)
        except (BlockingIOError, BrokenPipeError, ConnectionResetError):
            pass
        clients.append(client)
    return clients


def ask_status(healthctl: str, socket_path: str) -> tuple[bool, float]:
    started = time.monotonic()
    result = subprocess.run([healthctl, "--socket", socket_path, "status"], capture_output=True, timeout=60)
    # 0, 1 and 2 are answers (healthy, not-configured, unhealthy); 3 is none.
    return result.returncode in (0, 1, 2), time.monotonic() - started


def flood(daemon: Daemon, healthctl: str, connections: int, requests: int, rounds: int,
          hold: float, settle: float) -> FloodResult:
    payload = pipelined_requests(requests)
    for _ in range(20):  # warm the paths a request takes before idle is measured
        daemon.get("/status")
    sampler = Sampler(daemon.pid)
    sampler.start()
    time.sleep(2)
    idle = int(statistics.median(s.anon for s in sampler.samples))
    round_peaks, answered, slowest = [], 0, 0.0
    cpu_before = procmem.cpu_seconds(daemon.pid)
    for _ in range(rounds):
        began = sampler.samples[-1].seconds
        clients = open_flood(daemon.socket_path, connections, payload)
        time.sleep(hold / 2)
        ok, took = ask_status(healthctl, daemon.socket_path)
        answered += ok
        slowest = max(slowest, took)
        time.sleep(hold / 2)
        for client in clients:
            client.close()
        time.sleep(0.3)
        round_peaks.append(sampler.peak_since(began))
    cpu = procmem.cpu_seconds(daemon.pid) - cpu_before
    time.sleep(settle)
    settled = procmem.read(daemon.pid).anon
    sampler.stop()
    return FloodResult(
        connections=connections, requests_per_connection=requests, rounds=rounds, idle_anon=idle,
        peak_anon=max(s.anon for s in sampler.samples), settled_anon=settled,
        peak_rss=max(s.rss for s in sampler.samples), status_answered=answered, status_asked=rounds,
        slowest_status_seconds=slowest, cpu_seconds=cpu, round_peaks=round_peaks,
    )


def raise_descriptor_limit(needed: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < needed:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, needed), hard))


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The binaries and the rounds' shape, which every flood takes."""
    parser.add_argument("--daemon", required=True)
    parser.add_argument("--healthctl", required=True)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--hold", type=float, default=1.5)
    parser.add_argument("--settle", type=float, default=10)


def measure(options: argparse.Namespace, connections: int, requests: int, daemon_args: list[str] = ()) -> FloodResult:
    """One flood against a daemon of its own, started in a temporary directory and stopped after."""
    raise_descriptor_limit(connections + 256)
    with tempfile.TemporaryDirectory(prefix="dreamnet-pipeflood.") as directory:
        daemon = Daemon(options.daemon, directory, list(daemon_args))
        try:
            return flood(daemon, options.healthctl, connections, requests, options.rounds, options.hold, options.settle)
        finally:
            daemon.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="pipeflood", description=__doc__.split("\n\n")[0])
    add_arguments(parser)
    parser.add_argument("--connections", type=int, default=512)
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--json", action="store_true")
    parser.add_argument("daemon_args", nargs="*")
    options = parser.parse_args(argv)
    result = measure(options, options.connections, options.requests, options.daemon_args)
    if options.json:
        print(json.dumps({**asdict(result), "peak_above_idle": result.peak_above_idle,
                          "settled_above_idle": result.settled_above_idle}))
    else:
        mib = procmem.MIB
        print(f"{result.connections} connections x {result.requests_per_connection} pipelined requests, "
              f"{result.rounds} rounds")
        print(f"RssAnon idle {result.idle_anon / mib:.1f} MiB, peak {result.peak_anon / mib:.1f} MiB "
              f"(+{result.peak_above_idle / mib:.1f}), {options.settle:g} s after "
              f"{result.settled_anon / mib:.1f} MiB (+{result.settled_above_idle / mib:.1f}); "
              f"peak RSS {result.peak_rss / mib:.1f} MiB")
        print(f"status answered {result.status_answered}/{result.status_asked}, "
              f"slowest {result.slowest_status_seconds * 1000:.0f} ms; daemon CPU "
              f"{result.cpu_seconds / result.rounds * 1000:.0f} ms per round")
        print("round peaks, MiB: " + " ".join(f"{p / mib:.1f}" for p in result.round_peaks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
