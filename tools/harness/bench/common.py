"""What the bench's parts share: the run's settings and context, the daemon as the bench starts
it, paced runners and the statistics of a series."""
from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

from harness import daemon as daemon_tools
from harness.bench import procstat
from harness.cluster import Cluster
from harness.managed import metric

PARTS = ("deadline", "steady", "load", "detection", "replay", "startup", "cost")
# The parts that share the `scripts/bench` markers in BENCHMARKS.md; cost has its own.
MAIN_PARTS = PARTS[:-1]
CHECK_PGSQL = "/usr/lib/nagios/plugins/check_pgsql"
EXPORTER = "/usr/bin/prometheus-postgres-exporter"
USAGE = "python3 -m harness.bench BIN_DIR WORK PORT PG_BINDIR STEADY_S LOAD_S COMMIT ONLY COST_S COST_INTERVAL"


def log(message: str) -> None:
    print(f"bench: {message}", file=sys.stderr, flush=True)


def parse_interval(text: str) -> float:
    """A daemon duration as the bench passes it (`200ms`, `1s`, `2`) in seconds."""
    if text.endswith("ms"):
        return float(text[:-2]) / 1000
    return float(text.rstrip("s"))


@dataclass(frozen=True)
class Settings:
    """What scripts/bench passes: where the binaries and the work directory are, the cluster's
    port and server binaries, each part's length, the commit and the parts to run."""

    bin_dir: str
    work: str
    pg_port: int
    pg_bin: str
    steady_seconds: int = 60
    load_seconds: int = 5
    commit: str = "unknown"
    only: frozenset = frozenset({"all"})
    cost_seconds: int = 30
    cost_interval: str = "200ms"

    @classmethod
    def from_argv(cls, argv: list[str]) -> "Settings":
        if len(argv) != 10:
            raise ValueError(f"usage: {USAGE}")
        bin_dir, work, port, pg_bin, steady, load, commit, only, cost, interval = argv
        parts = frozenset(p for p in only.split(",") if p)
        unknown = parts - set(PARTS) - {"all"}
        if unknown:
            raise ValueError(f"unknown part: {', '.join(sorted(unknown))} ({', '.join(PARTS)})")
        parse_interval(interval)
        return cls(bin_dir, work, int(port), pg_bin, int(steady), int(load), commit, parts, int(cost), interval)

    def want(self, part: str) -> bool:
        return "all" in self.only or part in self.only

    @property
    def parts(self) -> list[str]:
        return [p for p in PARTS if self.want(p)]

    @property
    def daemon_bin(self) -> str:
        return f"{self.bin_dir}/dreamnet-healthd"

    @property
    def ctl_bin(self) -> str:
        return f"{self.bin_dir}/dreamnet-healthctl"

    @property
    def probe_bin(self) -> str:
        return f"{self.bin_dir}/dreamnet-probe"

    @property
    def loadgen_bin(self) -> str:
        return f"{self.bin_dir}/dreamnet-loadgen"

    @property
    def url(self) -> str:
        return self.url_at(self.pg_port)

    @staticmethod
    def url_at(port: int, database: str = "postgres") -> str:
        return f"postgresql://postgres@127.0.0.1:{port}/{database}"

    @property
    def cost_interval_s(self) -> float:
        return parse_interval(self.cost_interval)


@dataclass
class Bench:
    """One run: its settings, the cluster scripts/bench started (part 4 stops and starts it), the
    figures the parts record for the goals, and what the daemon binary supports."""

    settings: Settings
    figures: dict = field(default_factory=dict)
    _help: str | None = None

    def __post_init__(self):
        s = self.settings
        self.cluster = Cluster(s.pg_bin, s.work, s.pg_port)

    def psql(self, sql: str, database: str = "postgres") -> str:
        return self.cluster.psql(sql, database=database)

    def postmaster_pid(self) -> int:
        return self.cluster.postmaster_pid()

    def remember_pid(self, pid: int) -> None:
        """For scripts/bench's clean-up, whatever way the run ends."""
        with open(f"{self.settings.work}/pids", "a") as f:
            f.write(f"{pid}\n")

    def supports(self, flag: str) -> bool:
        if self._help is None:
            self._help = subprocess.run([self.settings.daemon_bin, "--help"], capture_output=True, text=True).stdout
        return flag in self._help

    def cgroup(self, name: str, pid: int) -> procstat.CpuCgroup | None:
        """A cpuacct cgroup named after the work directory (scripts/bench removes what is left)."""
        return procstat.cpu_cgroup(f"{os.path.basename(self.settings.work)}{name}", pid)

    def daemon(self, name: str, args: list[str], env: dict[str, str] | None = None) -> "Daemon":
        return Daemon(self, name, args, env)

    def machine(self) -> str:
        return (f"{os.cpu_count()} cores, {procstat.cpu_model()}; Linux {os.uname().release}; "
                f"PostgreSQL {self.psql('SHOW server_version')}")


class Daemon(daemon_tools.Daemon):
    """The daemon on its own socket and state in WORK/NAME, stopped with SIGTERM."""

    def __init__(self, bench: Bench, name: str, args: list[str], env: dict[str, str] | None = None):
        self.dir = f"{bench.settings.work}/{name}"
        self.alerts = f"{self.dir}/alerts.log"
        try:
            super().__init__(bench.settings.daemon_bin, self.dir, args, env)
        except RuntimeError as error:
            raise SystemExit(f"bench: daemon {name} did not start: {error}")
        bench.remember_pid(self.pid)

    @property
    def sock(self) -> str:
        return self.socket_path

    def body(self, path: str) -> bytes:
        return self.get(path)[1]

    def status(self) -> dict:
        return json.loads(self.body("/status"))

    def metric(self, name: str) -> int:
        """The sum of a metric's samples in /metrics."""
        return int(metric(self.body("/metrics").decode(), name))

    def wait_state(self, state: str, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.status()["state"] == state:
                return
            time.sleep(0.02)
        raise SystemExit(f"bench: daemon never became {state}")

    def wait_delivered(self, timeout: float = 20) -> None:
        """Until the spool is empty (the first event delivered), or `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self.status()["spool"]["pending"] > 0 and time.monotonic() < deadline:
            time.sleep(0.05)

    def connection(self) -> str:
        """The last probe's connection in /status (`fresh` when the build does not say)."""
        return (self.status().get("last_probe") or {}).get("connection", "fresh")


def stats(values):
    """Minimum, median and maximum."""
    values = sorted(values)
    return values[0], statistics.median(values), values[-1]


def per_call_ms(tally: dict) -> float:
    return tally["cpu"] / max(tally["calls"], 1) * 1000


def mib(path: str) -> float:
    """A file's size in MB (10^6 bytes, as the binaries' table says)."""
    return os.path.getsize(path) / 1e6


def paced(action, interval_s: float, counter: list | None = None, offset: float = 0.0):
    """A loop for a thread: calls `action` every `interval_s` seconds, the first time `offset`
    seconds in, until `stop` is set; counts the calls in `counter` when one is given."""
    def run(stop: threading.Event):
        if stop.wait(offset):
            return
        next_at = time.monotonic()
        while not stop.is_set():
            action()
            if counter is not None:
                counter[0] += 1
            next_at += interval_s
            stop.wait(max(0, next_at - time.monotonic()))
    return run


def new_tally() -> dict:
    return {"calls": 0, "failed": 0, "cpu": 0.0, "wall": 0.0, "maxrss": 0}


def paced_process(cmd: list[str], tally: dict, offset: float, env: dict[str, str] | None = None):
    """Runs `cmd` once a second, `offset` seconds into each second, and adds each run's CPU
    (from wait4: the whole process, start-up and exit included) to `tally`. `env`: variables
    set for it, on top of this process's."""
    environment = {**os.environ, **env} if env else None

    def run_once():
        t = time.monotonic()
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=environment)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        tally["calls"] += 1
        tally["failed"] += proc.returncode != 0
        tally["cpu"] += usage.ru_utime + usage.ru_stime
        tally["wall"] += time.monotonic() - t
        tally["maxrss"] = max(tally["maxrss"], usage.ru_maxrss)
    return paced(run_once, 1, offset=offset)


def run_threads(loops, seconds: float | None = None, stop: threading.Event | None = None) -> None:
    """Runs each `loop(stop)` on a thread of its own; with `seconds`, sets `stop` after as long."""
    stop = stop or threading.Event()
    threads = [threading.Thread(target=loop, args=(stop,)) for loop in loops]
    for t in threads:
        t.start()
    if seconds is not None:
        time.sleep(seconds)
        stop.set()
    for t in threads:
        t.join()
