"""Part 4, detection latency: from a fault (the server stopped, the postmaster SIGSTOPped, a black
hole) to the daemon's alert-log line, in both connection modes."""
from __future__ import annotations

import os
import signal
import subprocess
import time

from harness import goals
from harness.bench.common import Bench, log, stats
from harness.bench.faults import Relay
from harness.cluster import as_owner

# Probes never overlap: with a timeout longer than the interval the bound would be
# interval + fall × timeout. Here timeout = interval, as in most set-ups.
INTERVAL_MS, TIMEOUT_MS, FALL = 1000, 1000, 2
# A kept session goes on answering while the postmaster is frozen or new connections hang: those
# faults are seen by the fresh connection opened at least every `fresh_every`, so their bound is
# fresh_every more (5 s here, 30 s by default).
FRESH_EVERY_MS = 5000


def detection_bound(interval_ms: int, timeout_ms: int, fall: int, mode: str = "fresh",
                    new_connections_only: bool = False, fresh_every_ms: int = FRESH_EVERY_MS) -> int:
    """fall × interval + timeout + 50 ms; in session mode, for a fault only a new connection sees,
    fresh_every more."""
    bound = fall * interval_ms + timeout_ms + 50
    return bound + (fresh_every_ms if mode == "session" and new_connections_only else 0)


def detection_row(fault: str, mode: str, values: list[float], bound: int) -> str:
    lo, med, hi = stats(values)
    return f"| {fault} | {mode} | {len(values)} | {lo:.0f} | {med:.0f} | {hi:.0f} | {bound} | {'met' if hi <= bound else 'MISSED'} |"


def title(interval_ms: int = INTERVAL_MS, timeout_ms: int = TIMEOUT_MS, fall: int = FALL, fresh_every_ms: int = FRESH_EVERY_MS) -> str:
    return (f"4. Detection latency, fault to alert-log line (interval {interval_ms} ms, timeout {timeout_ms} ms, fall {fall}; "
            f"{goals.heading_clause('detection')}; in session mode, for faults only a new connection sees, fresh_every "
            f"({fresh_every_ms} ms here) more), milliseconds")


def section(rows: list[str]) -> tuple[str, str]:
    return (title(),
            "| fault | connection mode | n | min | median | max | bound | |\n|---|---|---|---|---|---|---|---|\n" + "\n".join(rows)
            + "\n\nFaults land at different points of the probe schedule, hence the spread; the stop is timed from the moment `pg_ctl` is started. "
            "A kept session sees a stopped server at once (its connection breaks, and a fresh probe follows at once); a frozen postmaster "
            "or a listener that never answers leaves it working, and the next fresh connection finds them.")


def alert_lines(path: str) -> int:
    try:
        with open(path) as f:
            return f.read().count("\n")
    except FileNotFoundError:
        return 0


def detect(daemon, inject, undo, trials: int = 5) -> list[float]:
    latencies = []
    for _ in range(trials):
        daemon.wait_state("healthy")
        # Spread the faults over the probe schedule.
        time.sleep(0.2 + (len(latencies) * 137 % INTERVAL_MS) / 1000)
        lines = alert_lines(daemon.alerts)
        t0 = time.monotonic()
        inject()
        while alert_lines(daemon.alerts) == lines and time.monotonic() - t0 < 30:
            time.sleep(0.001)
        latencies.append((time.monotonic() - t0) * 1000)
        undo()
    return latencies


def run(bench: Bench) -> tuple[str, str]:
    log("4/7 detection latency")
    s = bench.settings
    relay = Relay(s.pg_port, "forward")
    rows, worst = [], []

    def stop_server():
        subprocess.Popen(as_owner([f"{s.pg_bin}/pg_ctl", "-D", f"{s.work}/data", "-m", "immediate", "-W", "stop"]), cwd=s.work,
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def start_server():
        for _ in range(100):
            if not os.path.exists(f"{s.work}/data/postmaster.pid"):
                break
            time.sleep(0.05)
        bench.cluster.start()

    faults = (
        ("server stopped (`pg_ctl -m immediate`)", stop_server, start_server, False),
        ("postmaster SIGSTOPped", lambda: os.kill(bench.postmaster_pid(), signal.SIGSTOP),
         lambda: os.kill(bench.postmaster_pid(), signal.SIGCONT), True),
        ("black hole (connections accepted, never answered)", lambda: setattr(relay, "mode", "blackhole"), relay.forward, True),
    )
    for mode, extra in (("fresh", ["--probe-connection", "fresh"]),
                        ("session", ["--probe-connection", "session", "--fresh-every", f"{FRESH_EVERY_MS}ms"])):
        daemon = bench.daemon(f"detect-{mode}", ["--database-url", s.url_at(relay.port), "--interval", f"{INTERVAL_MS}ms",
                                                 "--timeout", f"{TIMEOUT_MS}ms", "--fall", str(FALL), "--rise", "1", "--flap-threshold", "1000", *extra,
                                                 *(["--connect-timeout", f"{TIMEOUT_MS}ms"] if bench.supports("--connect-timeout") else [])])
        daemon.wait_state("healthy")
        for name, inject, undo, new_connections_only in faults:
            values = detect(daemon, inject, undo)
            bound = detection_bound(INTERVAL_MS, TIMEOUT_MS, FALL, mode, new_connections_only)
            rows.append(detection_row(name, mode, values, bound))
            worst.append(max(values) / bound)
        daemon.stop()
    relay.close()
    bench.figures["detection.max_over_bound"] = max(worst)
    return section(rows)
