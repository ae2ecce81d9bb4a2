"""The fleet's arithmetic, on text and numbers only: the server's connection log, the most
connections open at once, connections per 100 ms after a restart and the busiest bucket against
the mean, every event a row exactly once."""
from __future__ import annotations

import datetime
import re

LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) UTC \[(\d+)\] (\w+):\s+(.*)$")
PER_SECOND = 10  # buckets of 100 ms


def parse_connection_log(lines, alive: set[int]) -> tuple[list[dict], list[float]]:
    """Every connection in a server log written with `log_line_prefix = '%m [%p] '` (UTC),
    `log_connections` and `log_disconnections`: a dict {received, app, end, refused} each, and the
    moments the server said it was ready to accept connections. A session with no end in the log
    whose backend is not in `alive` ended at its last line (a start-up packet that never came, say)."""
    sessions, by_pid, ready, last_line = [], {}, [], {}
    for line in lines:
        m = LINE.match(line)
        if not m:
            continue
        at = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc).timestamp()
        pid, level, message = int(m.group(2)), m.group(3), m.group(4)
        last_line[pid] = at
        if message.startswith("connection received"):
            s = {"received": at, "app": None, "end": None, "refused": False}
            sessions.append(s)
            by_pid[pid] = s
        elif pid in by_pid:
            s = by_pid[pid]
            if message.startswith("connection authorized"):
                app = re.search(r"application_name=(\S+)", message)
                s["app"] = app.group(1) if app else ""
            elif message.startswith("disconnection"):
                s["end"] = at
                del by_pid[pid]
            elif level == "FATAL":
                s["end"] = at
                s["refused"] = s["app"] is None
                del by_pid[pid]
        if message.startswith("database system is ready to accept connections"):
            ready.append(at)
    for pid, s in by_pid.items():
        if pid not in alive:
            s["end"] = last_line.get(pid, s["received"])
    return sessions, ready


def fleet_sessions(sessions: list[dict]) -> list[dict]:
    """Probes and deliveries name themselves; a connection refused before its start-up packet was
    read has no name and is counted with the fleet (nothing else connects meanwhile)."""
    return [s for s in sessions if s["app"] is None or s["app"].startswith("dreamnet-healthd")]


def most_at_once(sessions: list[dict], t0: float, t1: float) -> int:
    """The most connections open at once within [t0, t1] (one without an end is still open)."""
    edges = []
    for s in sessions:
        end = s["end"] if s["end"] is not None else float("inf")
        if end < t0 or s["received"] > t1:
            continue
        edges.append((max(s["received"], t0), 1))
        edges.append((end, -1))
    edges.sort(key=lambda e: (e[0], e[1]))
    most = n = 0
    for _, d in edges:
        n += d
        most = max(most, n)
    return most


def most_of_one(sessions: list[dict], t0: float, t1: float) -> int:
    """The most connections one daemon (by application_name) had open at once within [t0, t1]."""
    by_app = {}
    for s in sessions:
        if s["app"]:
            by_app.setdefault(s["app"], []).append(s)
    return max((most_at_once(v, t0, t1) for v in by_app.values()), default=0)


def buckets(times: list[float], start: float, count: int) -> list[int]:
    """How many of `times` fall in each 100 ms from `start`; one past the last bucket counts in it."""
    out = [0] * count
    for at in times:
        out[min(int((at - start) * PER_SECOND), count - 1)] += 1
    return out


def own_buckets(sessions: list[dict], started: list[tuple[str, float]], count: int) -> list[int]:
    """Connections per 100 ms of each daemon's own time: each session of a daemon (by its name)
    timed from that daemon's start, from 50 ms before it (a clock's granularity) to `count` buckets after."""
    out = [0] * count
    span = count / PER_SECOND
    for name, at in started:
        for s in sessions:
            offset = s["received"] - at
            if s["app"] == name and -0.05 <= offset < span:
                out[min(max(int(offset * PER_SECOND), 0), count - 1)] += 1
    return out


def busiest_over_mean(counts: list[int]) -> float | None:
    """The busiest bucket against the mean; None when there was no connection."""
    total = sum(counts)
    return max(counts) / (total / len(counts)) if total else None


def ratio_text(ratio: float | None, none: str) -> str:
    return none if ratio is None else f"{ratio:.1f}"


def integrity(daemons: list[tuple[list[str], list[int]]], rows: list[tuple[str, int, str]]) -> dict:
    """Every event a row exactly once: per daemon, (its alert-log ids, its processes' pids)
    against the rows (id, metadata pid, a digest of the transition)."""
    by_pid = {}
    for event_id, pid, content in rows:
        by_pid.setdefault(pid, []).append((event_id, content))
    out = {"lines": 0, "rows": len(rows), "lost": 0, "duplicated": 0, "extra": 0, "mismatched": 0}
    claimed = 0
    for ids, pids in daemons:
        mine = [r for p in pids for r in by_pid.get(p, [])]
        mine_ids = [i for i, _ in mine]
        out["lines"] += len(ids)
        claimed += len(mine)
        lost = len(set(ids) - set(mine_ids))
        extra = len(set(mine_ids) - set(ids))
        # The same line twice, or the same transition (type, from, to, observed_at) in two rows.
        duplicated = (len(ids) - len(set(ids))) + (len(mine) - len({c for _, c in mine}))
        out["lost"] += lost
        out["extra"] += extra
        out["duplicated"] += duplicated
        out["mismatched"] += 1 if (lost or extra or duplicated) else 0
    # Rows no daemon of the fleet claims: a pid in metadata that is none of theirs.
    out["extra"] += len(rows) - claimed
    return out


def parse_event_rows(text: str) -> list[tuple[str, int, str]]:
    """psql's `id pid digest` lines."""
    out = []
    for line in text.splitlines():
        event_id, pid, content = line.split()
        out.append((event_id, int(pid), content))
    return out


def goal_figures(results: dict) -> dict:
    """The figures of harness.goals from each mode's results."""
    out = {}
    if "session" in results:
        out["fleet.session_server_percent"] = results["session"]["steady"]["server"] * 100
    outages = [r["outage"] for r in results.values() if "outage" in r]
    if outages:
        out["fleet.drain_s"] = max(float("inf") if o["all"] is None or o["never"] else o["all"] for o in outages)
        out["fleet.most_connections"] = max(o["most"] for o in outages)
    checks = [r["integrity"] for r in results.values() if "integrity" in r]
    if checks:
        out["fleet.lost_or_duplicated"] = sum(i["lost"] + i["duplicated"] for i in checks)
    # As a fleet of hosts would see it: each daemon's connections from its own start, first interval.
    splayed = [r["restart-splay"]["own_first"] for r in results.values()
               if "restart-splay" in r and r["restart-splay"]["own_first"] is not None]
    if splayed:
        out["fleet.splay_busiest_over_mean"] = max(splayed)
    return out
