"""Part 1, deadline precision: against a listener that never answers, a SIGSTOPped postmaster and
a hung query (the backend stopped after authentication), `dreamnet-healthctl probe`, the daemon's
own probes, `pg_isready -t 1`, `psql` with connect_timeout=1 and `check_pgsql -t 1`."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time

from harness import goals
from harness.bench.common import CHECK_PGSQL, Bench, log, stats
from harness.bench.faults import BlackHole, Relay

WINDOW_MS = (1000.0, 1020.0)
KILLED_AT_S = 10.0
TABLE_HEAD = "| fault | tool | n | min | median | max | note |\n|---|---|---|---|---|---|---|\n"


def deadline_row(tool: str, fault: str, values: list, note: str = "") -> str:
    """One row: `values` in ms, None for a run that never ended by itself (killed at 10 s)."""
    finished = [v for v in values if v is not None]
    if not finished:
        return f"| {fault} | {tool} | {len(values)} | | | | never ended by itself: killed at 10 s {note} |"
    lo, med, hi = stats(finished)
    within = sum(1 for v in finished if WINDOW_MS[0] <= v <= WINDOW_MS[1])
    extra = "" if len(finished) == len(values) else f"; {len(values) - len(finished)} never ended (killed at 10 s)"
    return f"| {fault} | {tool} | {len(values)} | {lo:.1f} | {med:.1f} | {hi:.1f} | {within}/{len(values)} in 1.000–1.020 s{extra} {note} |"


def suite_rows(fault: str, results: dict, hung: bool) -> list[str]:
    """The six rows of one fault from each tool's timings."""
    own, wall = results["ctl"]
    note = "(connects only: a hung query looks healthy to it)" if hung else ""
    return [
        deadline_row("`dreamnet-healthctl probe` (the probe's own clock)", fault, own),
        deadline_row("`dreamnet-healthctl probe` (whole command)", fault, wall),
        deadline_row("dreamnet-healthd's probes", fault, results["daemon"]),
        deadline_row("`pg_isready -t 1`", fault, results["pg_isready"], note),
        deadline_row("`psql` connect_timeout=1 `-c 'SELECT 1'`", fault, results["psql"]),
        deadline_row("`check_pgsql -t 1`", fault, results["check_pgsql"], note),
    ]


def probe_range(all_results: list[dict]) -> tuple[float, float] | None:
    """The shortest and longest of the probes the goal is about (the daemon's, and the CLI's own
    clock) over every fault; a probe that never ended counts as the 10 s it was killed at."""
    values = []
    for results in all_results:
        values += results["ctl"][0] + results["daemon"]
    if not values:
        return None
    values = [KILLED_AT_S * 1000 if v is None else v for v in values]
    return min(values), max(values)


def title() -> str:
    return f"1. Deadline precision ({goals.heading_clause('deadline')}), milliseconds"


def timed_runs(cmd: list[str], n: int, cap: float = KILLED_AT_S) -> list:
    wall = []
    for _ in range(n):
        t = time.monotonic()
        try:
            subprocess.run(cmd, capture_output=True, timeout=cap)
            wall.append((time.monotonic() - t) * 1000)
        except subprocess.TimeoutExpired:
            wall.append(None)
    return wall


def ctl_probes(bench: Bench, target: str, n: int):
    own, wall = [], []
    # One budget for the connection and the answer, as the other tools have one deadline.
    budget = ["--connect-timeout", "1s"] if bench.supports("--connect-timeout") else []
    for _ in range(n):
        t = time.monotonic()
        out = subprocess.run([bench.settings.ctl_bin, "probe", "--json", *budget, "--database-url", target],
                             capture_output=True, text=True)
        wall.append((time.monotonic() - t) * 1000)
        own.append(json.loads(out.stdout)["latency_ms"])
    return own, wall


def daemon_probes(bench: Bench, target: str, n: int) -> list[float]:
    d = bench.daemon(f"deadline-{time.monotonic_ns()}", ["--database-url", target, "--interval", "1s", "--timeout", "1s",
                                                         *(["--connect-timeout", "1s"] if bench.supports("--connect-timeout") else [])])
    seen, latencies = set(), []
    deadline = time.monotonic() + n * 3 + 10
    while len(latencies) < n and time.monotonic() < deadline:
        probe = d.status().get("last_probe")
        if probe and probe["at"] not in seen:
            seen.add(probe["at"])
            if not probe["ok"]:
                latencies.append(probe["latency_ms"])
        time.sleep(0.05)
    d.stop()
    return latencies


def suite(bench: Bench, host_port: tuple[str, int], target: str, n: int = 20, hung: bool = False) -> dict:
    """Every tool against one fault at once; their timings by tool."""
    host, port = host_port
    pg_bin = bench.settings.pg_bin
    results = {}
    jobs = {
        "ctl": lambda: ctl_probes(bench, target, n),
        "daemon": lambda: daemon_probes(bench, target, n),
        "pg_isready": lambda: timed_runs([f"{pg_bin}/pg_isready", "-t", "1", "-h", host, "-p", str(port)], n),
        "psql": lambda: timed_runs([f"{pg_bin}/psql", "-X", f"host={host} port={port} user=postgres dbname=postgres connect_timeout=1",
                                    "-c", "SELECT 1"], 3 if hung else n),
        "check_pgsql": lambda: timed_runs([CHECK_PGSQL, "-H", host, "-P", str(port), "-t", "1"], n),
    }

    def run(name, fn):
        results[name] = fn()
    threads = [threading.Thread(target=run, args=(name, fn)) for name, fn in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return results


def run(bench: Bench) -> tuple[str, str]:
    log("1/7 deadline precision (about 2.5 minutes)")
    port = bench.settings.pg_port
    rows, all_results = [], []

    def record(fault, results, hung=False):
        rows.extend(suite_rows(fault, results, hung))
        all_results.append(results)

    hole = BlackHole()
    record("listener never answers", suite(bench, ("127.0.0.1", hole.port), bench.settings.url_at(hole.port)))
    hole.close()
    os.kill(bench.postmaster_pid(), signal.SIGSTOP)
    try:
        record("SIGSTOPped postmaster", suite(bench, ("127.0.0.1", port), bench.settings.url))
    finally:
        os.kill(bench.postmaster_pid(), signal.SIGCONT)
    relay = Relay(port, "hang")
    record("hung query (backend stopped)", suite(bench, ("127.0.0.1", relay.port), bench.settings.url_at(relay.port), hung=True), hung=True)
    relay.close()
    if (span := probe_range(all_results)) is not None:
        bench.figures["deadline.probe_range_ms"] = span
    return title(), TABLE_HEAD + "\n".join(rows)
