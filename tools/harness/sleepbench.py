"""scripts/bench-sleep's driver: the daemon with `scale_to_zero` against the tests' stand-in for a
database that sleeps when unused (Tests/dreamnet-standin), on the release build.

Two runs at once, each with a stand-in, a daemon and an application of its own (the daemon
follows only the connections to its own stand-in's port, so the runs do not see each other):
the stand-in suspends after 60 s without a client byte and wakes in 3 s more than its server's
start; the application (tools/harness/application.py, one kept connection) queries every second
while busy, for the first 2 minutes of 15 and for 1 minute at minute 9; the daemon probes at
2 s, `suspend_after 60s`, `wake_timeout 10s`, with `wake_every off` in one run and `5m` in the
other. Then, with a stand-in and daemon of their own and the same settings, the failures: a wake
the stand-in refuses and one it never answers (each asked for with SIGUSR2 to the daemon), and
the postmaster killed with SIGKILL while the application is busy; each timed to `unhealthy` on
/status.

The figures come from the stand-in's report (when it was up, its suspensions and wakes), the
application's lines (timestamped as they are read) and the daemon's /events. The quiet time is
the run less each stretch of use from its start to its last query + suspend_after (the stand-in's
own timer keeps the database awake that long whoever probes); the awake time the daemon caused is
the time the stand-in was up within the quiet time.

`--scale F` shrinks the timeline (the run, the stretches, suspend_after, wake_every) for a short
check: 0.2 is a 3-minute run with suspend_after 12 s and wake_every 1 m, the smallest the daemon
takes. The interval, the application's pace, the cold start and wake_timeout stay as they are:
they are about the machine and the protocol, not the length of the run.

    python3 -m harness.sleepbench --daemon BIN --standin BIN [--scale 1] [--write BENCHMARKS.md]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass

from harness import application, cluster, goals, report
from harness.daemon import Daemon

MARKER = "scripts/bench-sleep"

# The timeline at scale 1, in seconds from the start of a run.
RUN_S = 15 * 60
STRETCHES_S = ((0, 120), (540, 600))
SUSPEND_AFTER_S = 60
WAKE_EVERY_S = 5 * 60
# The daemon takes no wake_every below 1 minute.
MIN_SCALE = 60 / WAKE_EVERY_S

# Not scaled.
INTERVAL_S = 2.0
QUERY_EVERY_S = 1.0
COLD_START_S = 3.0
WAKE_TIMEOUT_S = 10.0
# What a wake may keep the database up beyond its cold start and suspend_after: the wake's
# login and probe, and the suspension itself (ending the sessions, stopping the server).
WAKE_SLACK_S = 5.0

APPLICATION = os.path.join(os.path.dirname(os.path.abspath(__file__)), "application.py")

Interval = tuple[float, float]


def log(message: str) -> None:
    # One write per line: the two runs log from threads of their own.
    sys.stderr.write(f"sleepbench: {message}\n")
    sys.stderr.flush()


@dataclass(frozen=True)
class Timeline:
    """The run at `scale`, in seconds from its start."""

    scale: float = 1.0

    @property
    def run_s(self) -> float:
        return RUN_S * self.scale

    @property
    def stretches(self) -> list[Interval]:
        return [(start * self.scale, end * self.scale) for start, end in STRETCHES_S]

    @property
    def suspend_after_s(self) -> float:
        return SUSPEND_AFTER_S * self.scale

    @property
    def wake_every_s(self) -> float:
        return WAKE_EVERY_S * self.scale


def duration(seconds: float) -> str:
    """A duration as the daemon and the stand-in read it: `60s`, `1m`, `12s`, `600ms`."""
    ms = round(seconds * 1000)
    if ms % 60_000 == 0:
        return f"{ms // 60_000}m"
    if ms % 1000 == 0:
        return f"{ms // 1000}s"
    return f"{ms}ms"


# Interval arithmetic, on (start, end) pairs of seconds.

def union(intervals) -> list[Interval]:
    """The intervals merged, sorted, empty ones left out."""
    merged: list[Interval] = []
    for low, high in sorted((low, high) for low, high in intervals if high > low):
        if merged and low <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], high))
        else:
            merged.append((low, high))
    return merged


def total(intervals) -> float:
    return sum(high - low for low, high in union(intervals))


def intersection(a, b) -> list[Interval]:
    return union((max(low, low2), min(high, high2)) for low, high in union(a) for low2, high2 in union(b))


def difference(whole: Interval, holes) -> list[Interval]:
    """`whole` less every hole."""
    left: list[Interval] = []
    start, end = whole
    for low, high in union(holes):
        low, high = max(low, whole[0]), min(high, end)
        if high <= low:
            continue
        if low > start:
            left.append((start, low))
        start = max(start, high)
    if start < end:
        left.append((start, end))
    return left


# The run's figures.

def up_intervals(standin: dict) -> list[Interval]:
    """When the stand-in's server was up; one still up ends at the report."""
    return [(up["from"], up["to"] if up["to"] is not None else standin["reported_at"]) for up in standin["up"]]


def last_query(lines: list[tuple[float, str]], start: float, end: float) -> float | None:
    """When the application sent its last query within `start`...`end`."""
    sent = [at for at, line in lines if line.startswith("sent ") and start <= at <= end]
    return max(sent) if sent else None


def unhealthy_transitions(events: list[dict]) -> int:
    return sum(1 for event in events if event.get("to") == "unhealthy")


def phase_seconds(samples: list[tuple[float, str]], end: float) -> dict[str, float]:
    """How long /status showed each sleep phase, from the samples (time, phase) taken in order;
    each phase lasts until the next sample, the last one until `end`."""
    seconds: dict[str, float] = {}
    for (at, phase), following in zip(samples, samples[1:] + [(end, "")]):
        seconds[phase] = seconds.get(phase, 0.0) + max(0.0, following[0] - at)
    return seconds


def analyse(standin: dict, lines: list[tuple[float, str]], window: Interval, stretches: list[Interval],
            suspend_after: float, interval: float, cold_start: float) -> dict:
    """One run's figures. `window`: the run, in Unix seconds; `stretches`: when the application
    was busy, in the same; times in the result are seconds from the run's start."""
    start, end = window
    # A line is read a moment after it is printed.
    last = [last_query(lines, low, high + 1.0) for low, high in stretches]
    use = [(low, (query if query is not None else high) + suspend_after) for (low, high), query in zip(stretches, last)]
    up = intersection(up_intervals(standin), [window])
    quiet = difference(window, use)
    caused = intersection(up, quiet)
    quiet_s, caused_s = total(quiet), total(caused)

    past = []
    for query in last:
        after = [at for at in standin["suspensions"] if query is not None and at >= query]
        past.append(min(after) - (query + suspend_after) if after else math.inf)

    wakes = []
    for wake in standin["wakes"]:
        if not start <= wake["began"] <= end:
            continue
        # The application's own wake: its connection at the start of a stretch.
        by_application = any(low - interval <= wake["began"] <= (query if query is not None else high)
                             for (low, high), query in zip(stretches, last))
        wakes.append({"at_s": wake["began"] - start, "took_s": wake["ready"] - wake["began"],
                      "by": "application" if by_application else "daemon"})
    daemon_wakes = sum(1 for wake in wakes if wake["by"] == "daemon")
    bound = interval * len(stretches) + (cold_start + suspend_after + WAKE_SLACK_S) * daemon_wakes
    return {
        "run_s": end - start,
        "quiet_s": quiet_s,
        "asleep_s": quiet_s - caused_s,
        "asleep_percent": (quiet_s - caused_s) / quiet_s * 100 if quiet_s else math.nan,
        "up_s": total(up),
        "caused_s": caused_s,
        "caused": [(low - start, high - start) for low, high in caused],
        "caused_bound_s": bound,
        "caused_over_bound": caused_s / bound,
        "last_query_s": [None if query is None else query - start for query in last],
        "past_timer_s": past,
        "most_past_timer_over_interval": max(past) / interval if past else math.nan,
        "suspensions_s": [at - start for at in standin["suspensions"] if start <= at <= end],
        "wakes": wakes,
        "daemon_wakes": daemon_wakes,
    }


def detection_bound(status: dict) -> float:
    """DaemonConfiguration.detectionBound from the settings /status shows, in seconds: a fault
    just after a probe started, then `fall` probes of up to connect_timeout + timeout each."""
    longest = (status["connect_timeout_ms"] + status["timeout_ms"]) / 1000
    return max(status["interval_ms"] / 1000, longest) * status["fall"] + longest


def figures(off: dict, every: dict, failure: dict) -> dict:
    """The figures goals.py names, from the two runs and the failure part."""
    return {
        "sleep_off.asleep_percent": off["asleep_percent"],
        "sleep_off.most_past_timer_over_interval": off["most_past_timer_over_interval"],
        "sleep_off.unhealthy": off["unhealthy"],
        "sleep_5m.caused_over_bound": every["caused_over_bound"],
        "sleep_5m.unhealthy": every["unhealthy"],
        "sleep_failure.wake_over_bound": max(failure["refused_s"], failure["held_s"]) / failure["wake_bound_s"],
        "sleep_failure.kill_over_bound": failure["killed_s"] / failure["detection_bound_s"],
    }


# The report.

def seconds_text(value: float | None) -> str:
    if value is None:
        return "—"
    if math.isinf(value):
        return "never"
    return f"{value:.1f}"


def minutes_text(seconds: float) -> str:
    return f"{seconds / 60:g} min" if seconds % 60 == 0 and seconds else f"{seconds:g} s"


def span_text(low: float, high: float) -> str:
    if low % 60 == 0 and high % 60 == 0:
        return f"{low / 60:g}–{high / 60:g} min"
    return f"{low:g}–{high:g} s"


def run_table(run: dict, interval: float) -> str:
    wakes = ", ".join(f"{w['at_s']:.0f} s ({w['by']}, ready in {w['took_s']:.1f} s)" for w in run["wakes"]) or "none"
    stretches = "; ".join(f"last query at {seconds_text(query)} s, suspended {seconds_text(past)} s past it + suspend_after"
                          for query, past in zip(run["last_query_s"], run["past_timer_s"]))
    caused = ", ".join(f"{low:.1f}–{high:.1f} s" for low, high in run["caused"]) or "none"
    phases = ", ".join(f"{phase} {seconds:.0f} s" for phase, seconds in sorted(run["phases"].items())) or "—"
    rows = [
        ("quiet time (the run less each stretch from its start to its last query + suspend_after)", f"{run['quiet_s']:.1f} s"),
        ("asleep within it", f"**{run['asleep_s']:.1f} s, {run['asleep_percent']:.2f} %**"),
        ("awake time the daemon caused (up within the quiet time)", f"**{run['caused_s']:.1f} s**: {caused}"),
        ("its bound: one interval per stretch + (cold start + suspend_after + 5 s) per wake of the daemon's",
         f"{run['caused_bound_s']:.1f} s ({run['caused_over_bound']:.2f} × it)"),
        ("server up in all", f"{run['up_s']:.1f} s of {run['run_s']:.0f} s"),
        ("each stretch", stretches),
        ("suspensions", ", ".join(f"{at:.1f} s" for at in run["suspensions_s"]) or "none"),
        ("wakes (began, by whom, ready after)", wakes),
        ("the daemon's `unhealthy` transitions", f"**{run['unhealthy']}** of {run['transitions']} transitions"),
        ("`/status` sleep phase, sampled each second", phases),
        ("application: queries sent / answered, errors, connections lost",
         f"{run['application']['sent']} / {run['application']['answered']}, {run['application']['errors']}, {run['application']['lost']}"),
    ]
    return "| figure | this run |\n|---|---|\n" + "\n".join(f"| {name} | {value} |" for name, value in rows) + "\n"


def failure_table(failure: dict) -> str:
    rows = [
        ("a wake the stand-in refuses (XX000), asked for with SIGUSR2: to `unhealthy`",
         f"**{failure['refused_s']:.2f} s** (bound wake_timeout + timeout, {failure['wake_bound_s']:.0f} s)"),
        ("a wake the stand-in never answers, asked for the same way: to `unhealthy`",
         f"**{failure['held_s']:.2f} s** (the same bound)"),
        ("the postmaster killed (SIGKILL) while the application is busy: to `unhealthy`",
         f"**{failure['killed_s']:.2f} s** (detection bound {failure['detection_bound_s']:.0f} s)"),
        ("the last probe's reason at each", ", ".join(failure["reasons"])),
        ("after each failed wake, the stand-in waking again: probes asked for (SIGUSR2, each after 30 s still "
         "`unhealthy`) before `healthy`", ", ".join(f"{mode} {count}" for mode, count in failure["nudges"].items())),
    ]
    return "| what | figure |\n|---|---|\n" + "\n".join(f"| {name} | {value} |" for name, value in rows) + "\n"


def render(head: str, timeline: Timeline, off: dict, every: dict, failure: dict, verdicts: list[goals.Verdict]) -> str:
    run = minutes_text(timeline.run_s)
    return "\n".join([
        head,
        goals.table(verdicts),
        f"#### `wake_every off`, {run} ({goals.heading_clause('sleep-off')})\n",
        run_table(off, INTERVAL_S),
        f"#### `wake_every {duration(timeline.wake_every_s)}`, {run} ({goals.heading_clause('sleep-5m')})\n",
        run_table(every, INTERVAL_S),
        f"#### A failed wake, and the server killed during use ({goals.heading_clause('sleep-failure')})\n",
        failure_table(failure),
    ])


def header(timeline: Timeline, date: str, commit: str, server: str) -> str:
    stretches = " and ".join(span_text(low, high) for low, high in timeline.stretches)
    scale = "" if timeline.scale == 1 else f" at scale {timeline.scale:g} (a short check, not the figures of record)"
    return (f"Measured {date} at commit {commit} by `scripts/bench-sleep`{scale}, on {os.cpu_count()} cores; {server}. "
            f"Both runs at once, {minutes_text(timeline.run_s)} each, the application busy {stretches} "
            f"(`SELECT 1` every {QUERY_EVERY_S:g} s on one kept connection); the stand-in suspends after "
            f"{timeline.suspend_after_s:g} s without a client byte, cold start {COLD_START_S:g} s; the daemon at interval "
            f"{INTERVAL_S:g} s, `suspend_after {duration(timeline.suspend_after_s)}`, `wake_timeout {duration(WAKE_TIMEOUT_S)}`, "
            "the defaults otherwise. Times are seconds from the start of the run.\n")


# The processes.

class StandIn:
    """dreamnet-standin in `directory`: its ready line, its signals, its report."""

    def __init__(self, binary: str, directory: str, suspend_after: float, cold_start: float):
        os.makedirs(directory, exist_ok=True)
        self.report_path = os.path.join(directory, "standin.json")
        with open(os.path.join(directory, "standin.log"), "ab") as stderr:
            self.process = subprocess.Popen(
                [binary, "--suspend-after", duration(suspend_after), "--cold-start", duration(cold_start),
                 "--report", self.report_path],
                stdout=subprocess.PIPE, stderr=stderr, env={**os.environ, "PG_BINDIR": cluster.server_bin()})
        ready, _, _ = select.select([self.process.stdout], [], [], 120)
        line = self.process.stdout.readline() if ready else b""
        if not line:
            self.process.kill()
            raise RuntimeError(f"the stand-in did not start; see {directory}/standin.log")
        self.ready = json.loads(line)
        self.port = self.ready["port"]

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def postmaster(self) -> int | None:
        """The running postmaster's pid (it changes with every wake)."""
        try:
            with open(os.path.join(self.ready["data"], "postmaster.pid")) as pid_file:
                return int(pid_file.readline())
        except (OSError, ValueError):
            return None

    def signal(self, number: int) -> None:
        self.process.send_signal(number)

    def stop(self) -> dict:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=90)
        with open(self.report_path, encoding="utf-8") as document:
            return json.load(document)


class Application:
    """tools/harness/application.py against `port`, its lines timestamped as they are read."""

    def __init__(self, directory: str, port: int, busy_until: float):
        os.makedirs(directory, exist_ok=True)
        self.control = os.path.join(directory, "control")
        application.write_control(self.control, busy_until, "keep")
        self.process = subprocess.Popen(
            [sys.executable, "-u", APPLICATION, "127.0.0.1", str(port), "postgres", "postgres", self.control, str(QUERY_EVERY_S)],
            stdout=subprocess.PIPE, text=True)
        self.lines: list[tuple[float, str]] = []
        self.lock = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.process.stdout:
            with self.lock:
                self.lines.append((time.time(), line.rstrip("\n")))

    def busy_until(self, deadline: float) -> None:
        application.write_control(self.control, deadline, "keep")

    def seen(self) -> list[tuple[float, str]]:
        with self.lock:
            return list(self.lines)

    def wait_for(self, word: str, after: float, timeout: float) -> bool:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if any(at >= after and line.split(" ", 1)[0] == word for at, line in self.seen()):
                return True
            time.sleep(0.05)
        return False

    def counts(self) -> dict:
        words = [line.split(" ", 1)[0] for _, line in self.seen()]
        return {"sent": words.count("sent"), "answered": words.count("answered"), "errors": words.count("error"),
                "lost": words.count("lost")}

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=10)


def status(daemon: Daemon) -> dict:
    return json.loads(daemon.get("/status")[1])


def wait_status(daemon: Daemon, condition, timeout: float, poll: float = 0.02) -> dict | None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            current = status(daemon)
        except (OSError, ValueError):
            current = None
        if current is not None and condition(current):
            return current
        time.sleep(poll)
    return None


def events(daemon: Daemon) -> list[dict]:
    return json.loads(daemon.get("/events?limit=1000")[1])["events"]


def start_daemon(binary: str, directory: str, standin: StandIn, suspend_after: float, wake_every: float | None) -> Daemon:
    return Daemon(binary, directory, [
        "--scale-to-zero", "--suspend-after", duration(suspend_after),
        "--wake-every", "off" if wake_every is None else duration(wake_every),
        "--wake-timeout", duration(WAKE_TIMEOUT_S), "--interval", duration(INTERVAL_S), "--no-splay",
    ], env={"DATABASE_URL": standin.url})


def one_run(args: argparse.Namespace, timeline: Timeline, name: str, wake_every: float | None, work: str) -> dict:
    """A run of the timeline: the stand-in, the application, the daemon; the run's figures."""
    directory = os.path.join(work, name)
    standin = StandIn(args.standin, f"{directory}/standin", timeline.suspend_after_s, COLD_START_S)
    daemon = application_ = None
    phases: list[tuple[float, str]] = []
    try:
        start = time.time()
        stretches = [(start + low, start + high) for low, high in timeline.stretches]
        application_ = Application(f"{directory}/application", standin.port, stretches[0][1])
        if not application_.wait_for("answered", start, 30):
            raise RuntimeError(f"{name}: the application's first query was not answered")
        daemon = start_daemon(args.daemon, f"{directory}/daemon", standin, timeline.suspend_after_s, wake_every)
        log(f"{name}: stand-in on port {standin.port}, daemon {daemon.pid}")
        pending = stretches[1:]
        end = start + timeline.run_s
        while time.time() < end:
            if pending and time.time() >= pending[0][0]:
                application_.busy_until(pending[0][1])
                log(f"{name}: the application is busy again")
                pending.pop(0)
            try:
                phase = (status(daemon).get("sleep") or {}).get("phase", "none")
            except (OSError, ValueError):
                phase = "no answer"
            if not phases or phases[-1][1] != phase:
                log(f"{name}: {time.time() - start:.0f} s: {phase}")
            phases.append((time.time(), phase))
            time.sleep(min(1.0, max(0.0, end - time.time())))
        shown = events(daemon)
    finally:
        if daemon:
            daemon.stop()
        if application_:
            application_.stop()
        standin_report = standin.stop()
    run = analyse(standin_report, application_.seen(), (start, end), stretches, timeline.suspend_after_s, INTERVAL_S,
                  COLD_START_S)
    run["unhealthy"] = unhealthy_transitions(shown)
    run["transitions"] = len(shown)
    run["phases"] = phase_seconds(phases, end)
    run["application"] = application_.counts()
    with open(os.path.join(directory, "figures.json"), "w") as kept:
        json.dump({"standin": standin_report, "run": run, "events": shown, "lines": application_.seen()}, kept)
    return run


def time_to_unhealthy(daemon: Daemon, since: float, timeout: float = 60) -> tuple[float, str]:
    unhealthy = wait_status(daemon, lambda s: s["state"] == "unhealthy", timeout)
    if unhealthy is None:
        return math.inf, "none"
    return time.monotonic() - since, (unhealthy.get("last_probe") or {}).get("reason", "?")


def recover(daemon: Daemon, mode: str, tries: int = 3) -> int:
    """Waits for `healthy` once wakes succeed again; each time the daemon has not got there in
    30 s it is asked for a probe (SIGUSR2). How many it was asked for."""
    for asked in range(tries + 1):
        if wait_status(daemon, lambda s: s["state"] == "healthy", 30, poll=0.2) is not None:
            return asked
        if asked < tries:
            log(f"failure part: still unhealthy 30 s after the {mode} wake's stand-in recovered "
                f"(sleep phase {(status(daemon).get('sleep') or {}).get('phase')}): a probe asked for")
            daemon.process.send_signal(signal.SIGUSR2)
    raise RuntimeError(f"failure part: not healthy again after the {mode} wake")


def asleep(current: dict) -> bool:
    return (current.get("sleep") or {}).get("phase") == "asleep" and current["state"] == "healthy"


def failure_part(args: argparse.Namespace, timeline: Timeline, work: str) -> dict:
    """A refused wake, a wake never answered, and the postmaster killed during use, with the
    runs' suspend_after: a 57P01 near the idle mark is a sleep to the daemon, and with a
    suspend_after of a few intervals the kill's would be too."""
    directory = os.path.join(work, "failure")
    standin = StandIn(args.standin, f"{directory}/standin", timeline.suspend_after_s, COLD_START_S)
    daemon = application_ = None
    try:
        application_ = Application(f"{directory}/application", standin.port, time.time() + 3)
        if not application_.wait_for("answered", 0, 30):
            raise RuntimeError("failure part: the application's first query was not answered")
        daemon = start_daemon(args.daemon, f"{directory}/daemon", standin, timeline.suspend_after_s, None)
        found, nudges = {}, {}
        for mode, control in (("refused", signal.SIGUSR1), ("held", signal.SIGUSR2)):
            if wait_status(daemon, asleep, timeline.suspend_after_s + 60, poll=0.2) is None:
                raise RuntimeError(f"failure part: not asleep and healthy before the {mode} wake")
            standin.signal(control)
            time.sleep(0.5)  # the stand-in acts on its signals on a queue of its own
            log(f"failure part: a {mode} wake")
            asked = time.monotonic()
            daemon.process.send_signal(signal.SIGUSR2)
            found[mode] = time_to_unhealthy(daemon, asked)
            standin.signal(signal.SIGHUP)
            nudges[mode] = recover(daemon, mode)

        log("failure part: the postmaster killed while the application is busy")
        application_.busy_until(time.time() + 120)
        busy = time.time()
        following = wait_status(daemon, lambda s: (s.get("sleep") or {}).get("phase") == "following" and s["state"] == "healthy"
                                and (s.get("last_probe") or {}).get("ok"), 60, poll=0.2)
        if following is None or not application_.wait_for("answered", busy + 5, 60):
            raise RuntimeError("failure part: the daemon did not follow the application")
        bound = detection_bound(following)
        postmaster = standin.postmaster()
        if postmaster is None:
            raise RuntimeError("failure part: no postmaster to kill")
        killed = time.monotonic()
        os.kill(postmaster, signal.SIGKILL)
        found["killed"] = time_to_unhealthy(daemon, killed)
        shown = events(daemon)
    finally:
        if daemon:
            daemon.stop()
        if application_:
            application_.stop()
        standin.stop()
    timeout_s = following["timeout_ms"] / 1000
    return {
        "refused_s": found["refused"][0], "held_s": found["held"][0], "killed_s": found["killed"][0],
        "reasons": [f"{what} {found[what][1]}" for what in ("refused", "held", "killed")],
        "wake_bound_s": WAKE_TIMEOUT_S + timeout_s, "detection_bound_s": bound,
        "unhealthy": unhealthy_transitions(shown), "nudges": nudges,
    }


def commit() -> str:
    try:
        return subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True,
                              cwd=os.path.dirname(APPLICATION)).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def server_version() -> str:
    out = subprocess.run([f"{cluster.server_bin()}/postgres", "--version"], capture_output=True, text=True).stdout.strip()
    return out.replace("postgres (PostgreSQL) ", "PostgreSQL ") or "PostgreSQL"


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--daemon", required=True, help="the release dreamnet-healthd")
    parser.add_argument("--standin", required=True, help="the release dreamnet-standin")
    parser.add_argument("--scale", type=float, default=1.0, help=f"the timeline's scale, {MIN_SCALE:g} to 1 (1: 15 minutes)")
    parser.add_argument("--write", help="BENCHMARKS.md: the report goes between its markers")
    args = parser.parse_args(argv)
    if not MIN_SCALE <= args.scale <= 1:
        parser.error(f"--scale must be within {MIN_SCALE:g}–1 (wake_every is 1 minute at {MIN_SCALE:g}, the daemon's least)")
    timeline = Timeline(args.scale)
    work = tempfile.mkdtemp(prefix="dreamnet-sleep-", dir="/tmp")
    os.chmod(work, 0o755)
    log(f"two runs of {minutes_text(timeline.run_s)} at once, then the failures; work in {work}")
    runs: dict[str, dict] = {}
    errors: list[BaseException] = []

    def run(name: str, wake_every: float | None) -> None:
        try:
            runs[name] = one_run(args, timeline, name, wake_every, work)
        except BaseException as error:  # reported by the main thread
            errors.append(error)

    threads = [threading.Thread(target=run, args=("off", None)),
               threading.Thread(target=run, args=("every", timeline.wake_every_s))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    failure = failure_part(args, timeline, work)
    verdicts = goals.evaluate(figures(runs["off"], runs["every"], failure), goals.SLEEP_PARTS)
    for line in goals.lines(verdicts, "sleepbench"):
        sys.stderr.write(line + "\n")
    text = render(header(timeline, time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), commit(), server_version()),
                  timeline, runs["off"], runs["every"], failure, verdicts)
    print(text)
    if args.write:
        report.write(args.write, MARKER, text)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
