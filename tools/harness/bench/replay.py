"""Part 5, spool replay: 10 000 events put into a stopped daemon's spool, then the time from its
start until every one is a row in system_events."""
from __future__ import annotations

import sqlite3
import time
import uuid

from harness import goals
from harness.bench.common import Bench, log

EVENTS = 10_000


def title() -> str:
    return f"5. Spool replay ({goals.heading_clause('replay')})"


def section(total: int, rows: int, elapsed: float) -> tuple[str, str]:
    return (title(),
            f"| events | rows in system_events | seconds, from daemon start | events/s |\n|---|---|---|---|\n"
            f"| {total:,} | {rows:,} | {elapsed:.2f} | **{total / elapsed:,.0f}** |")


def fill_spool(path: str, copies: int) -> None:
    """Adds `copies` of the spool's first event, each with an id of its own."""
    db = sqlite3.connect(path)
    template = db.execute("SELECT kind, severity, observed_at, payload, origin, summary FROM events LIMIT 1").fetchone()
    db.executemany("INSERT INTO events (id, kind, severity, observed_at, payload, origin, summary, attempts) VALUES (?, ?, ?, ?, ?, ?, ?, 1)",
                   [(str(uuid.uuid4()),) + template for _ in range(copies)])
    db.commit()
    db.close()


def run(bench: Bench) -> tuple[str, str]:
    log("5/7 spool replay")
    s = bench.settings
    events_url = s.url_at(s.pg_port, "bench_events")
    replay = bench.daemon("replay", ["--database-url", s.url, "--events-database-url", events_url])
    deadline = time.monotonic() + 20
    while replay.status()["spool"]["pending"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    replay.stop()
    fill_spool(f"{replay.dir}/state/spool.sqlite3", EVENTS)
    total = EVENTS + 1
    bench.psql("CREATE DATABASE bench_events")
    started = time.monotonic()
    # No splay: the first probe (which the loop below waits for) at once, not up to an interval later.
    replay = bench.daemon("replay", ["--database-url", s.url, "--events-database-url", events_url, "--no-splay"])
    while time.monotonic() - started < 120:
        # The status socket answers before the spool's count is in the snapshot (pending 0 for
        # a moment): a probe reported means the daemon is past that point.
        status = replay.status()
        if status.get("last_probe") and status["spool"]["pending"] == 0:
            break
        time.sleep(0.01)
    elapsed = time.monotonic() - started
    rows = int(bench.psql("SELECT count(*) FROM system_events", database="bench_events"))
    replay.stop()
    # Events that are not rows were not replayed: the rate counts only the rows.
    bench.figures["replay.events_per_s"] = min(rows, total) / elapsed
    return section(total, rows, elapsed)
