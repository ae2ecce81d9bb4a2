"""The goals scripts/bench, scripts/fleet and scripts/bench-sleep measure, in one place: what
BENCHMARKS.md says each one is (its "## Goals" table and the "(goal: …)" of each report heading),
which figure of a run it is about and the bound that figure has to keep. The parts record their
figures by name into a dict; `evaluate` turns that dict into a verdict per goal, and the report
headings take their "(goal: …)" from here.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Union

Number = Union[int, float]


@dataclass(frozen=True)
class Goal:
    """`figure` (a name the part records) compared with `threshold` by `comparison`: one of
    "<=", "<", ">=", "==", "within" (a (low, high) figure inside a (low, high) threshold), or ""
    for a goal that is measured and reported but has no bound to check."""

    id: str
    part: str
    text: str
    figure: str
    comparison: str
    threshold: object
    unit: str = ""


GOALS: tuple[Goal, ...] = (
    # scripts/bench
    Goal("deadline.window", "deadline", "every probe ends within 1.000–1.020 s",
         "deadline.probe_range_ms", "within", (1000.0, 1020.0), "ms"),
    Goal("steady.floor", "steady", "a fresh-connection probe ≤ 1.5 × libpq's floor",
         "steady.fresh_over_floor", "<=", 1.5, "×"),
    Goal("steady.status", "steady", "`dreamnet-healthctl status` ≤ 0.5 × `pg_isready`",
         "steady.status_over_isready", "<=", 0.5, "×"),
    Goal("steady.probe", "steady", "`dreamnet-healthctl probe` ≤ `pg_isready` + 2 ms",
         "steady.probe_over_isready_ms", "<=", 2.0, "ms"),
    Goal("steady.pss", "steady", "PSS ≤ the exporter's",
         "steady.pss_over_exporter", "<=", 1.0, "×"),
    Goal("steady.anon", "steady", "anonymous ≤ 5 MiB",
         "steady.anon_mib", "<=", 5.0, "MiB"),
    Goal("load.throughput", "load", "≥ 0.5 × nginx's throughput",
         "load.min_ratio", ">=", 0.5, "×"),
    Goal("load.p99", "load", "p99 ≤ 2 ms at 64 clients",
         "load.p99_64_ms", "<=", 2.0, "ms"),
    Goal("load.cadence", "load", "probe cadence unchanged",
         "load.probes_per_second", "", None, "/s"),
    Goal("detection.bound", "detection", "≤ fall × interval + timeout + 50 ms",
         "detection.max_over_bound", "<=", 1.0, "× the bound"),
    Goal("replay.rate", "replay", "≥ 5 000 events/s",
         "replay.events_per_s", ">=", 5000.0, "events/s"),
    Goal("startup.ready", "startup", "≤ 100 ms plus the first probe",
         "startup.median_ms", "<=", 100.0, "ms"),
    Goal("cost.session", "cost", "kept session ≤ 1/10 of a fresh connection",
         "cost.session_over_fresh", "<=", 0.1, "×"),
    Goal("cost.own", "cost", "the daemon's own CPU per routine probe ≤ 0.2 ms in session mode",
         "cost.session_own_ms", "<=", 0.2, "ms"),
    # scripts/fleet
    Goal("fleet.server", "fleet-steady", "session mode ≤ 5 % of one core on the server",
         "fleet.session_server_percent", "<=", 5.0, "%"),
    Goal("fleet.drain", "fleet-outage", "all spools empty within 10 s of the server accepting connections",
         "fleet.drain_s", "<=", 10.0, "s"),
    Goal("fleet.integrity", "fleet-outage", "0 lost, 0 duplicated",
         "fleet.lost_or_duplicated", "==", 0, "events"),
    Goal("fleet.connections", "fleet-outage", "≤ 100 fleet connections at any moment",
         "fleet.most_connections", "<=", 100, "connections"),
    Goal("fleet.splay", "fleet-restart", "busiest 100 ms bucket ≤ 2 × the mean",
         "fleet.splay_busiest_over_mean", "<=", 2.0, "×"),
    # scripts/bench-sleep
    Goal("sleep.asleep", "sleep-off", "asleep ≥ 95 % of the quiet time",
         "sleep_off.asleep_percent", ">=", 95.0, "%"),
    Goal("sleep.following", "sleep-off",
         "suspended ≤ one interval later than the application's last query + suspend_after",
         "sleep_off.most_past_timer_over_interval", "<=", 1.0, "× the interval"),
    Goal("sleep.off.unhealthy", "sleep-off", "0 `unhealthy` transitions across every suspension and wake",
         "sleep_off.unhealthy", "==", 0, "transitions"),
    Goal("sleep.caused", "sleep-5m",
         "awake time the daemon causes ≤ one interval per stretch of use + (cold start + suspend_after + 5 s) per wake",
         "sleep_5m.caused_over_bound", "<=", 1.0, "× the bound"),
    Goal("sleep.5m.unhealthy", "sleep-5m", "0 `unhealthy` transitions across every suspension and wake",
         "sleep_5m.unhealthy", "==", 0, "transitions"),
    Goal("sleep.failed_wake", "sleep-failure", "a failed wake `unhealthy` within wake_timeout + timeout",
         "sleep_failure.wake_over_bound", "<=", 1.0, "× the bound"),
    Goal("sleep.outage", "sleep-failure", "the server killed during use `unhealthy` within the detection bound",
         "sleep_failure.kill_over_bound", "<=", 1.0, "× the bound"),
)

BENCH_PARTS = ("deadline", "steady", "load", "detection", "replay", "startup", "cost")
FLEET_PARTS = ("fleet-steady", "fleet-outage", "fleet-restart")
SLEEP_PARTS = ("sleep-off", "sleep-5m", "sleep-failure")


def of_part(part: str) -> list[Goal]:
    return [g for g in GOALS if g.part == part]


def heading_clause(part: str) -> str:
    """What a report heading says of its part's goals: `goal: A` or `goals: A; B`."""
    texts = [g.text for g in of_part(part)]
    if not texts:
        raise KeyError(f"no goals for part {part}")
    return ("goal: " if len(texts) == 1 else "goals: ") + "; ".join(texts)


def check(goal: Goal, value: object) -> bool | None:
    """Whether `value` keeps the goal's bound; None when the goal has none to check."""
    if not goal.comparison:
        return None
    if goal.comparison == "within":
        (low, high), (lo, hi) = goal.threshold, value
        return low <= lo and hi <= high
    if isinstance(value, float) and math.isnan(value):
        return False
    if goal.comparison == "<=":
        return value <= goal.threshold
    if goal.comparison == "<":
        return value < goal.threshold
    if goal.comparison == ">=":
        return value >= goal.threshold
    if goal.comparison == "==":
        return value == goal.threshold
    raise ValueError(f"{goal.id}: unknown comparison {goal.comparison!r}")


@dataclass(frozen=True)
class Verdict:
    goal: Goal
    value: object  # None: the run recorded no figure for it
    met: bool | None

    @property
    def status(self) -> str:
        if self.value is None:
            return "no figure"
        if self.met is None:
            return "measured"
        return "met" if self.met else "NOT met"


def evaluate(figures: dict, parts: tuple[str, ...] | list[str] | set[str], goals: tuple[Goal, ...] = GOALS) -> list[Verdict]:
    """A verdict for every goal of the parts that ran, in the order of `goals`."""
    verdicts = []
    for goal in goals:
        if goal.part not in parts:
            continue
        value = figures.get(goal.figure)
        verdicts.append(Verdict(goal, value, None if value is None else check(goal, value)))
    return verdicts


def format_value(value: object, unit: str = "") -> str:
    if value is None:
        return "—"
    if isinstance(value, tuple):
        return "–".join(f"{v:.1f}" for v in value) + (f" {unit}" if unit else "")
    if isinstance(value, float):
        if math.isinf(value) or math.isnan(value):
            text = "never" if math.isinf(value) else "n/a"
        else:
            text = f"{value:,.3f}".rstrip("0").rstrip(".") if abs(value) < 100 else f"{value:,.0f}"
    else:
        text = f"{value:,}"
    return f"{text} {unit}".rstrip() if unit and text not in ("never", "n/a") else text


def bound(goal: Goal) -> str:
    if not goal.comparison:
        return "reported"
    if goal.comparison == "within":
        return f"within {format_value(goal.threshold, goal.unit)}"
    return f"{goal.comparison.replace('<=', '≤').replace('>=', '≥')} {format_value(goal.threshold, goal.unit)}"


def table(verdicts: list[Verdict]) -> str:
    """The markdown table a report opens with."""
    rows = [f"| {v.goal.part.removeprefix('fleet-')} | {v.goal.text} | `{v.goal.figure}` {bound(v.goal)} | "
            f"{format_value(v.value, v.goal.unit)} | {'**NOT met**' if v.met is False else v.status} |" for v in verdicts]
    return ("Goals checked in this run (`tools/harness/goals.py`):\n\n"
            "| part | goal | figure and bound | this run | |\n|---|---|---|---|---|\n" + "\n".join(rows) + "\n")


def lines(verdicts: list[Verdict], prefix: str) -> list[str]:
    """One line per verdict, for standard error."""
    return [f"{prefix}: goal {v.goal.id} ({v.goal.text}): {v.status}"
            + ("" if v.value is None else f", {format_value(v.value, v.goal.unit)} against {bound(v.goal)}")
            for v in verdicts]
