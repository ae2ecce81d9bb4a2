"""Runs the fleet against the cluster scripts/fleet started, prints the markdown report and writes
it to REPORT for scripts/fleet to merge into BENCHMARKS.md (with --write). scripts/fleet builds the
daemon and starts the cluster, then runs

    python3 -m harness.fleet BIN_DIR WORK PORT PG_BINDIR SIZE SECONDS MODES COMMIT REPORT
"""
from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass

from harness import goals, procmem
from harness.bench.procstat import cpu_model, loadavg, parse_schedstat, read
from harness.cluster import Cluster
from harness.fleet import figures, render
from harness.fleet.daemons import Daemon, Sampler, healthy_and_empty, log, pending, start_all, start_all_at_once, stop_all, wait_for

INTERVAL, TIMEOUT, FALL, RISE = 1.0, 1.0, 2, 2
USAGE = "python3 -m harness.fleet BIN_DIR WORK PORT PG_BINDIR SIZE SECONDS MODES COMMIT REPORT"


@dataclass(frozen=True)
class Settings:
    bin_dir: str
    work: str
    pg_port: int
    pg_bin: str
    size: int = 100
    seconds: int = 60
    modes: tuple[str, ...] = ("fresh", "session")
    commit: str = "unknown"
    report_path: str = ""

    @classmethod
    def from_argv(cls, argv: list[str]) -> "Settings":
        if len(argv) != 9:
            raise ValueError(f"usage: {USAGE}")
        bin_dir, work, port, pg_bin, size, seconds, modes, commit, report_path = argv
        unknown = set(modes.split()) - {"fresh", "session"}
        if unknown:
            raise ValueError(f"unknown connection mode: {', '.join(sorted(unknown))} (fresh, session)")
        return cls(bin_dir, work, int(port), pg_bin, int(size), int(seconds), tuple(modes.split()), commit, report_path)

    @property
    def daemon_bin(self) -> str:
        return f"{self.bin_dir}/dreamnet-healthd"

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.pg_port}/postgres"


class Fleet:
    """One run: the settings, the cluster (the outage stops and starts it), the backend sampler."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.cluster = Cluster(settings.pg_bin, settings.work, settings.pg_port)
        self.sampler = None

    def psql(self, sql: str) -> str:
        return self.cluster.psql(sql)

    def prepare_server(self) -> str:
        """The server as the fleet is measured against; its version."""
        for setting in ("max_connections = 300", "log_connections = on", "log_disconnections = on",
                        "log_line_prefix = '%m [%p] '", "log_timezone = 'UTC'",
                        # Autovacuum workers are reaped children of the postmaster: they would land in the CPU figures.
                        "autovacuum = off"):
            self.psql(f"ALTER SYSTEM SET {setting}")
        self.cluster.stop()
        self.cluster.start()
        version = self.psql("SHOW server_version")
        # The web app's table, as the fleet would find it (a hundred daemons creating it at once is not
        # what is measured here).
        self.psql("""CREATE TABLE IF NOT EXISTS system_events (
            id UUID PRIMARY KEY DEFAULT gen_random_uuid(), event_type VARCHAR(100) NOT NULL,
            source VARCHAR(100) NOT NULL, severity VARCHAR(20) DEFAULT 'info', payload JSONB NOT NULL,
            timestamp TIMESTAMP DEFAULT NOW(), metadata JSONB DEFAULT '{}')""")
        return version

    def connection_log(self) -> tuple[list[dict], list[float]]:
        with open(self.cluster.log, errors="replace") as f:
            return figures.parse_connection_log(f, set(self.cluster.client_backends()))

    def server_cpu_snapshot(self):
        """The postmaster's own and reaped children's CPU, and each live client backend's."""
        own = procmem.cpu_seconds(self.cluster.postmaster_pid(), children=True)
        live = {}
        for pid in self.cluster.client_backends():
            try:
                live[pid] = parse_schedstat(read(f"/proc/{pid}/schedstat"))
            except OSError:
                pass
        return own, live


def server_cpu_between(a, b) -> float:
    (pm0, live0), (pm1, live1) = a, b
    # A backend alive at the start and gone at the end is in cutime + cstime whole.
    return (pm1 - pm0) + sum(live1.values()) - sum(live0.values())


def load_text() -> str:
    return " ".join(loadavg())


def run_mode(run: Fleet, mode: str, has_modes: bool, has_splay: bool, idle_share: float, tables: dict) -> dict:
    s = run.settings
    size, sampler = s.size, run.sampler
    fleet = [Daemon(s.daemon_bin, s.url, f"{s.work}/pids", f"{s.work}/{mode}", i) for i in range(size)]
    args = ["--interval", "1s", "--timeout", "1s", "--fall", str(FALL), "--rise", str(RISE)]
    if has_modes:
        args += ["--probe-connection", mode] + (["--fresh-every", "30s"] if mode == "session" else [])
    if has_splay:
        args += ["--splay"]
    log(f"{mode}: starting {size} daemons")
    start_all(fleet, args)
    became = wait_for(fleet, healthy_and_empty, 120, step=0.25)
    if any(t is None for t in became):
        raise SystemExit(f"fleet: {sum(t is None for t in became)} daemons never became healthy with an empty spool")
    time.sleep(5)

    # 1. Steady.
    log(f"{mode}: steady run ({s.seconds} s), load {load_text()}")
    load0 = load_text()
    cpu0 = [d.cpu() for d in fleet]
    s0, t0 = run.server_cpu_snapshot(), time.time()
    time.sleep(s.seconds)
    s1, t1 = run.server_cpu_snapshot(), time.time()
    cpu1 = [d.cpu() for d in fleet]
    pss = sum(d.pss_mib() for d in fleet)
    load1 = load_text()
    elapsed = t1 - t0
    sessions, _ = run.connection_log()
    fleet_conns = figures.fleet_sessions(sessions)
    opened = sum(1 for c in fleet_conns if t0 <= c["received"] <= t1)
    steady = {"server": server_cpu_between(s0, s1) / elapsed, "opened": opened / elapsed, "sampled": sampler.most(t0, t1),
              "logged": figures.most_at_once(fleet_conns, t0, t1), "one": figures.most_of_one(fleet_conns, t0, t1),
              "daemons": (sum(cpu1) - sum(cpu0)) / elapsed, "pss": pss}
    result = {"steady": steady}
    tables["steady"].append(render.steady_row(mode, size, steady, idle_share, elapsed, INTERVAL, load0, load1))

    # 2. Outage and restart of the database.
    log(f"{mode}: database outage")
    t_stop = time.time()
    run.cluster.stop()
    down = wait_for(fleet, lambda st: st["state"] == "unhealthy" and pending(st) >= 1, FALL * INTERVAL + TIMEOUT + 30)
    if any(t is None for t in down):
        log(f"{mode}: {sum(t is None for t in down)} daemons were not unhealthy with a spooled event after "
            f"{FALL * INTERVAL + TIMEOUT + 30:.0f} s; starting the server anyway")
    # Past the moment the last one became unhealthy, by a margin: every daemon has tried and
    # failed to deliver, and is in its delivery backoff.
    time.sleep(2)
    held = sum(1 for d in fleet if pending(d.status() or {}) >= 1)
    outage_s = time.time() - t_stop
    log(f"{mode}: database restart after {outage_s:.1f} s down, {held} daemons holding spooled events")
    run.cluster.start()
    emptied = wait_for(fleet, healthy_and_empty, 120)
    t_done = time.time()
    sessions, ready = run.connection_log()
    t_ready = [r for r in ready if r >= t_stop][0]
    fleet_conns = figures.fleet_sessions(sessions)
    done = [t - t_ready for t in emptied if t is not None]
    never = sum(1 for t in emptied if t is None)
    last = max(emptied) if not never else t_done
    during_sampled = sampler.most(t_ready, last)
    during_logged = figures.most_at_once(fleet_conns, t_ready, last)
    during_one = figures.most_of_one(fleet_conns, t_ready, last)
    refused = sum(1 for c in fleet_conns if c["refused"] and t_ready <= c["received"] <= last)
    result["outage"] = {"all": max(done) if done else None, "never": never, "most": max(during_sampled, during_logged)}
    tables["outage"].append(render.outage_row(mode, outage_s, held, done, never, during_sampled, during_logged, during_one, refused))

    # 3. The whole fleet restarted at once, with splay and then without.
    count, interval_buckets = int(2 * INTERVAL * figures.PER_SECOND), int(INTERVAL * figures.PER_SECOND)
    for splay in ([True, False] if has_splay else [None]):
        label = {True: "splay", False: "no splay", None: "(no splay setting)"}[splay]
        log(f"{mode}: fleet restart, {label}")
        stop_all(fleet)
        time.sleep(1)
        run_args = [a for a in args if a != "--splay"] + (["--splay"] if splay else ["--no-splay"] if splay is False else [])
        r0, up_at = start_all_at_once(fleet, run_args, f"{s.work}/gate")
        time.sleep(max(0, r0 + 2 * INTERVAL + 1.5 - time.time()))
        sessions, _ = run.connection_log()
        mine = figures.fleet_sessions(sessions)
        received = sorted(c["received"] for c in mine if r0 <= c["received"] < r0 + 2 * INTERVAL)
        # As a fleet of hosts would see it: each daemon's connections timed from its own start
        # (its status socket), as if all had started at the same instant.
        own = figures.own_buckets(mine, [(d.name, r0 + u) for d, u in zip(fleet, up_at) if u is not None], count)
        restart = {"up": [u for u in up_at if u is not None], "received": len(received),
                   "buckets": figures.buckets(received, r0, count), "own": own, "interval_buckets": interval_buckets}
        restart["ratio"] = figures.busiest_over_mean(restart["buckets"])
        restart["own_first"] = figures.busiest_over_mean(own[:interval_buckets])
        result[f"restart-{label}"] = restart
        tables["restart"].append(render.restart_row(mode, label, restart))
        became = wait_for(fleet, healthy_and_empty, 60, step=0.25)
        if any(t is None for t in became):
            log(f"{mode}: {sum(t is None for t in became)} daemons not healthy with an empty spool 60 s after the restart")

    # Every event a row exactly once, per daemon: its alert-log ids against the rows carrying its pid.
    stop_all(fleet)
    rows = figures.parse_event_rows(run.psql(
        "SELECT id::text || ' ' || (metadata->>'pid') || ' ' || md5(concat_ws('|', event_type, payload->>'from', "
        "payload->>'to', payload->>'observed_at')) FROM system_events"))
    result["integrity"] = figures.integrity([(d.alert_ids(), d.pids) for d in fleet], rows)
    tables["integrity"].append(render.integrity_row(mode, size, result["integrity"]))
    run.psql("TRUNCATE system_events")
    return result


def main(argv: list[str]) -> int:
    try:
        settings = Settings.from_argv(argv)
    except ValueError as error:
        print(f"fleet: {error}", file=sys.stderr)
        return 2
    run = Fleet(settings)
    server_version = run.prepare_server()
    run.sampler = Sampler(run.cluster)
    help_text = subprocess.run([settings.daemon_bin, "--help"], capture_output=True, text=True).stdout
    has_modes, has_splay = "--probe-connection" in help_text, "--splay" in help_text
    modes = settings.modes if has_modes else ("fresh",)

    log("idle server baseline (10 s)")
    a = run.server_cpu_snapshot()
    t = time.time()
    time.sleep(10)
    b = run.server_cpu_snapshot()
    idle_share = server_cpu_between(a, b) / (time.time() - t)

    tables = {"steady": [], "outage": [], "integrity": [], "restart": []}
    results = {mode: run_mode(run, mode, has_modes, has_splay, idle_share, tables) for mode in modes}
    run.sampler.stop.set()

    verdicts = goals.evaluate(figures.goal_figures(results), goals.FLEET_PARTS)
    for line in goals.lines(verdicts, "fleet"):
        print(line, file=sys.stderr)
    head = (f"Measured {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC at commit {settings.commit} by `scripts/fleet`, on "
            f"{os.cpu_count()} cores, {cpu_model()}; PostgreSQL {server_version}, max_connections 300, "
            f"log_connections and log_disconnections on, autovacuum off. {settings.size} daemons, interval 1 s, timeout 1 s, "
            f"fall {FALL}, rise {RISE}{', `--fresh-every 30s` in session mode' if has_modes else ''}; daemons, server and "
            f"this script share the machine with other work (load averages in the first table). The idle server used "
            f"{idle_share * 100:.2f} % of one core.\n")
    text = render.report(head, settings.seconds, tables, verdicts)
    with open(settings.report_path, "w") as f:
        f.write(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
