"""Part 6, start-up: process start to READY=1 (sd_notify) with a healthy database, without splay,
the first start ever and ten restarts."""
from __future__ import annotations

import os
import socket
import statistics
import time

from harness import goals
from harness.bench.common import Bench, log, stats

TRIALS = 11


def title() -> str:
    return (f"6. Start-up: process start to READY=1, healthy database, `--no-splay` ({goals.heading_clause('startup')}), "
            "milliseconds")


def summary(startup: list[tuple[float, float, str]]) -> dict:
    """From (READY=1 after, the first probe's latency, "first start ever" or "restart") in ms."""
    restarts = [s for s in startup if s[2] == "restart"]
    lo, med, hi = stats([ready - probe for ready, probe, _ in restarts])
    return {"restarts": len(restarts), "ready_median": statistics.median(s[0] for s in restarts),
            "probe_median": statistics.median(s[1] for s in restarts), "without_probe": (lo, med, hi), "first": startup[0]}


def section(startup: list[tuple[float, float, str]]) -> tuple[str, str]:
    s = summary(startup)
    lo, med, hi = s["without_probe"]
    first = s["first"]
    return (title(),
            "| run | n | READY=1 after (median) | of it the first probe (median) | start-up without the probe: min / median / max |\n|---|---|---|---|---|\n"
            + f"| restart (state kept) | {s['restarts']} | {s['ready_median']:.1f} | {s['probe_median']:.1f} | {lo:.1f} / {med:.1f} / {hi:.1f} |\n"
            + f"| first start ever (spool created, first event stored) | 1 | {first[0]:.1f} | {first[1]:.1f} | {first[0] - first[1]:.1f} |")


def run(bench: Bench) -> tuple[str, str]:
    log("6/7 start-up")
    notify_path = f"{bench.settings.work}/notify.sock"
    startup = []
    for trial in range(TRIALS):
        if os.path.exists(notify_path):
            os.unlink(notify_path)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        listener.bind(notify_path)
        listener.settimeout(20)
        t0 = time.monotonic()
        # No splay: with it (the default) READY=1 waits for a first probe up to one interval later.
        d = bench.daemon("startup", ["--database-url", bench.settings.url, "--no-splay"], env={"NOTIFY_SOCKET": notify_path})
        while b"READY=1" not in listener.recv(4096):
            pass
        ready_ms = (time.monotonic() - t0) * 1000
        first_probe = d.status()["last_probe"]["latency_ms"]
        d.stop()
        listener.close()
        startup.append((ready_ms, first_probe, "first start ever" if trial == 0 else "restart"))
    bench.figures["startup.median_ms"] = summary(startup)["without_probe"][1]
    return section(startup)
