"""Part 2, the cost of a healthy probe at 1 Hz, one window per connection mode: the daemon beside
libpq's floor (scripts/lib/libpq-floor.c at the same cadence), `pg_isready`, `dreamnet-healthctl
status` and `probe` (a process each time) and prometheus-postgres-exporter scraped once a second:
CPU per probe or call, RSS, anonymous and PSS; and the binaries' sizes as the package installs them."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
import time
import urllib.request
from dataclasses import dataclass, field

from harness import goals
from harness.bench import procstat
from harness.bench.common import EXPORTER, Bench, log, mib, new_tally, paced, paced_process, per_call_ms, run_threads
from harness.cluster import free_port


@dataclass
class SteadyResult:
    """What the part measured, for the section and the goals."""

    seconds: int
    modes: list[str]
    # Per mode: probes, cpu_ms, accounting, memory (MiB), floor ({probes, failures, cpu_ms}), connection.
    windows: dict
    isready: dict
    ctl_status: dict
    ctl_probe: dict
    scrapes: int
    exporter_cpu_s: float
    exporter_memory: dict
    back_to_back: dict
    sizes: dict  # binary: (as installed MB, as built MB or None)
    path_isready: str | None = None
    isready_on_path: dict = field(default_factory=new_tally)
    # What the CLI's calls cost before their work, in the CLI's window: STARTS' names → tallies.
    starts: dict = field(default_factory=dict)


# Processes that do no work, or only part of it, beside the CLI's calls: where the floor of each
# call is. Name (a key of SteadyResult.starts) and what it is; `run` starts them.
STARTS = (
    ("isready_version", "`pg_isready --version`: libpq's chain of libraries loaded, nothing done"),
    ("ctl_version", "`dreamnet-healthctl --version`: the CLI's binary and its argument parser, nothing asked"),
    ("ctl_hop", "`dreamnet-healthctl probe` running `/bin/true` for its probe program: the hop to it"),
    ("probe_program", "`dreamnet-probe` alone, the probe of `dreamnet-healthctl probe` without the hop"),
)


def floor_ms(window: dict) -> float:
    return window["floor"]["cpu_ms"] / max(window["floor"]["probes"], 1)


def own_ms(window: dict) -> float:
    return window["cpu_ms"] / max(window["probes"], 1)


def met(ok: bool) -> str:
    return "met" if ok else "NOT met"


def figures(r: SteadyResult) -> dict:
    """The figures the part's goals are about."""
    out = {}
    fresh = r.windows.get("fresh")
    if fresh and fresh["floor"]["probes"] > 0 and floor_ms(fresh) > 0:
        out["steady.fresh_over_floor"] = own_ms(fresh) / floor_ms(fresh)
    isready = per_call_ms(r.isready)
    if r.isready["calls"] and isready > 0 and r.ctl_status["calls"]:
        out["steady.status_over_isready"] = per_call_ms(r.ctl_status) / isready
    if r.isready["calls"] and isready > 0 and r.ctl_probe["calls"]:
        out["steady.probe_over_isready_ms"] = per_call_ms(r.ctl_probe) - isready
    memories = [w["memory"] for w in r.windows.values()]
    if memories and r.exporter_memory.get("Pss"):
        out["steady.pss_over_exporter"] = max(m["Pss"] for m in memories) / r.exporter_memory["Pss"]
    if memories:
        out["steady.anon_mib"] = max(m["RssAnon"] for m in memories)
    return out


def rows(r: SteadyResult) -> list[str]:
    out = []
    for mode in r.modes:
        w = r.windows[mode]
        floor, own, m = floor_ms(w), own_ms(w), w["memory"]
        label = "a fresh connection per probe" if mode == "fresh" else "kept session, a fresh connection every 30 s"
        out.append(f"| libpq's floor: C loop of `PQconnectdb` + `SELECT 1` + `PQfinish` at 1 Hz (beside the {mode} daemon) | "
                   f"{w['floor']['probes']} | {floor:.3f} | 1.00 | | | |")
        out.append(f"| dreamnet-healthd, {label} | {w['probes']} | **{own:.3f}** | **{own / floor:.2f}** | "
                   f"{m['VmRSS']:.1f} / {m['VmHWM']:.1f} | {m['RssAnon']:.1f} | {m['Pss']:.1f} |")
    isready, on_path, e_mem = r.isready, r.isready_on_path, r.exporter_memory
    out += [
        f"| `pg_isready` (a process each time) | {isready['calls']} | {per_call_ms(isready):.3f} | | {isready['maxrss'] / 1024:.1f} (peak) | | |",
        *([f"| `pg_isready` as found on the `PATH` ({r.path_isready}: Debian's pg_wrapper, then the binary above) | {on_path['calls']} | {per_call_ms(on_path):.3f} | | {on_path['maxrss'] / 1024:.1f} (peak) | | |"]
          if r.path_isready else []),
        f"| `dreamnet-healthctl status` (a process each time) | {r.ctl_status['calls']} | **{per_call_ms(r.ctl_status):.3f}** | | {r.ctl_status['maxrss'] / 1024:.1f} (peak) | | |",
        f"| `dreamnet-healthctl probe` (a process each time, a fresh connection) | {r.ctl_probe['calls']} | **{per_call_ms(r.ctl_probe):.3f}** | | {r.ctl_probe['maxrss'] / 1024:.1f} (peak) | | |",
        *[f"| {text} | {r.starts[name]['calls']} | {per_call_ms(r.starts[name]):.3f} | | {r.starts[name]['maxrss'] / 1024:.1f} (peak) | | |"
          for name, text in STARTS if r.starts.get(name, {}).get("calls")],
        f"| prometheus-postgres-exporter, one `/metrics` scrape | {r.scrapes} | {r.exporter_cpu_s / max(r.scrapes, 1) * 1000:.3f} | | {e_mem['VmRSS']:.1f} / {e_mem['VmHWM']:.1f} | {e_mem['RssAnon']:.1f} | {e_mem['Pss']:.1f} |",
    ]
    return out


def verdicts(r: SteadyResult) -> list[str]:
    out = []
    fresh = r.windows["fresh"]
    isready_ms = per_call_ms(r.isready)
    out.append(f"CPU per fresh-connection probe: {own_ms(fresh) / floor_ms(fresh):.2f} × the floor beside it "
               f"(goal ≤ 1.5: {met(own_ms(fresh) <= 1.5 * floor_ms(fresh))}).")
    goals = (("status", r.ctl_status, "≤ 0.5 ×", lambda ms: ms <= 0.5 * isready_ms),
             ("probe", r.ctl_probe, "≤ + 2 ms", lambda ms: ms <= isready_ms + 2))
    for name, tally, goal, holds in goals:
        out.append(f"`dreamnet-healthctl {name}`: {per_call_ms(tally):.2f} ms per call against {isready_ms:.2f} for the `pg_isready` binary "
                   f"(goal {goal}: {met(holds(per_call_ms(tally)))})"
                   + (f" and {per_call_ms(r.isready_on_path):.2f} for `pg_isready` as found on the `PATH` "
                      f"({'less' if per_call_ms(tally) < per_call_ms(r.isready_on_path) else 'not less'})" if r.path_isready else "") + ".")
    starts = {name: per_call_ms(t) for name, t in r.starts.items() if t["calls"]}
    if {"isready_version", "ctl_version"} <= starts.keys():
        out.append(f"Before any work: `pg_isready --version` {starts['isready_version']:.2f} ms, `dreamnet-healthctl --version` "
                   f"{starts['ctl_version']:.2f} ms ({starts['ctl_version'] / isready_ms:.2f} × `pg_isready`), so `status` does "
                   f"its request and its answer in {per_call_ms(r.ctl_status) - starts['ctl_version']:.2f} ms.")
    if {"ctl_hop", "probe_program"} <= starts.keys():
        out.append(f"`probe` is the hop to its program ({starts['ctl_hop']:.2f} ms, `/bin/true` included) and the program "
                   f"({starts['probe_program']:.2f} ms alone, {starts['probe_program'] - isready_ms:+.2f} ms against `pg_isready`).")
    e_mem = r.exporter_memory
    for mode in r.modes:
        m = r.windows[mode]["memory"]
        out.append(f"Memory, {mode} mode: PSS {m['Pss']:.1f} MiB against the exporter's {e_mem['Pss']:.1f} "
                   f"(goal ≤: {met(m['Pss'] <= e_mem['Pss'])}), anonymous {m['RssAnon']:.1f} MiB "
                   f"(goal ≤ 5: {met(m['RssAnon'] <= 5)}), RSS {m['VmRSS']:.1f} against {e_mem['VmRSS']:.1f}.")
    return out


def sizes_table(sizes: dict) -> str:
    lines = []
    for name, (installed, built) in sizes.items():
        digits = 2 if installed < 1 else 1
        built_cell = " |" if built is None else f" {built:.1f} |"
        lines.append(f"| {name} | {installed:.{digits}f} |{built_cell}")
    return "| binary | as the package installs it | as built |\n|---|---|---|\n" + "\n".join(lines)


def title(seconds: int) -> str:
    return f"2. Cost of a healthy probe at 1 Hz, {seconds} s per connection mode ({goals.heading_clause('steady')})"


def section(r: SteadyResult) -> tuple[str, str]:
    failed = {name: t["failed"] for name, t in (("pg_isready", r.isready), ("healthctl status", r.ctl_status),
                                               ("healthctl probe", r.ctl_probe), *r.starts.items()) if t["failed"]}
    notes = [
        " ".join(verdicts(r)),
        f"The floor without pauses (2 000 probes back to back, as a loop in a benchmark would run it): "
        f"{r.back_to_back['cpu_ms'] / r.back_to_back['probes']:.3f} ms per probe. A process that sleeps between probes pays "
        "for waking up and for caches gone cold, so the comparison that says what the daemon adds is the floor at the "
        "daemon's own cadence, beside it.",
        "CPU: the daemon's from a cpuacct cgroup of its own over the window (ns, every thread counted, alive or gone)"
        + "".join(f"; {mode} mode: " + {"schedstat": "the sum of its threads' `/proc/PID/task/TID/schedstat` (no cgroup here)",
                                        "ticks": "`/proc/PID/stat` ticks (no cgroup here, and a thread came or went)"}[w["accounting"]]
                  for mode, w in r.windows.items() if w["accounting"] != "cgroup")
        + "; the floor's from its own `getrusage` around its probes; each process's (`pg_isready`, the CLI) from `wait4`, "
        "start-up and exit included (the CLI in a window of its own after the daemon's, `status` asking the "
        "session-mode daemon, with `pg_isready` beside it in every window); the exporter's from `/proc/PID/stat` "
        "over the session window. All at 1 Hz, against the same server; each mode's window has its own daemon and "
        "its own floor. "
        "Memory: `/proc/PID/status` and `smaps_rollup` at the end of each window."
        + (f" Failed calls: {failed}." if failed else ""),
    ]
    return (title(r.seconds),
            "| what | probes or calls | CPU per probe or call, ms | against the floor beside it | RSS now / peak, MiB | of it anonymous, MiB | PSS, MiB |\n"
            "|---|---|---|---|---|---|---|\n" + "\n".join(rows(r)) + "\n\n" + "\n\n".join(notes)
            + "\n\nThe binaries, MB:\n\n" + sizes_table(r.sizes))


def run(bench: Bench) -> tuple[str, str]:
    s = bench.settings
    seconds, pg_bin, port, work = s.steady_seconds, s.pg_bin, s.pg_port, s.work
    log(f"2/7 cost per probe at 1 Hz: each connection mode for {seconds} s, beside libpq's floor, "
        "pg_isready, the CLI and the exporter")
    has_modes = bench.supports("--probe-connection")
    modes = ["fresh", "session"] if has_modes else ["fresh"]
    # The floor connects with the options the daemon sends (its gssencmode=disable spares libpq a
    # Kerberos credential-cache lookup per connection), over the same transport, sslmode libpq's
    # default for both.
    floor_conninfo = (f"host=127.0.0.1 port={port} user=postgres dbname=postgres gssencmode=disable "
                      "application_name=bench-floor options='-c statement_timeout=1000 -c lock_timeout=1000'")
    exporter_port = free_port()
    exporter_proc = subprocess.Popen([EXPORTER, f"--web.listen-address=127.0.0.1:{exporter_port}", "--log.level=warn"],
                                     env={**os.environ, "DATA_SOURCE_NAME": f"postgresql://postgres@127.0.0.1:{port}/postgres?sslmode=disable"},
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bench.remember_pid(exporter_proc.pid)
    time.sleep(2)
    scrapes = [0]

    def scrape():
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{exporter_port}/metrics", timeout=5).read()
            scrapes[0] += 1
        except OSError:
            pass
    scrape_loop = paced(scrape, 1, offset=0.8)
    isready_cmd = [f"{pg_bin}/pg_isready", "-h", "127.0.0.1", "-p", str(port), "-t", "1"]
    isready, ctl_status, ctl_probe, isready_on_path = new_tally(), new_tally(), new_tally(), new_tally()
    starts: dict = {}
    # What a cron job or a Nagios check runs as `pg_isready`: on Debian, /usr/bin/pg_isready is
    # pg_wrapper (Perl), which picks a cluster's version and then runs the binary measured above.
    path_isready = shutil.which("pg_isready")
    if path_isready and os.path.realpath(path_isready) == os.path.realpath(f"{pg_bin}/pg_isready"):
        path_isready = None
    exporter_cpu = {}
    windows = {}
    for mode in modes:
        extra = ["--probe-connection", mode] if has_modes else []
        if mode == "session":
            extra += ["--fresh-every", "30s"]
        daemon = bench.daemon(f"steady-{mode}", ["--database-url", s.url, "--interval", "1s", *extra])
        daemon.wait_state("healthy")
        daemon.wait_delivered()
        time.sleep(2)  # past its first probes and its first event's delivery
        floor = {}

        def floor_run(stop, floor=floor):
            if stop.wait(0.2):
                return
            out = subprocess.run([f"{work}/libpq-floor", floor_conninfo, "1000", str(seconds)],
                                 capture_output=True, text=True)
            floor.update(json.loads(out.stdout) if out.stdout else {"probes": 0, "failures": -1, "cpu_ms": 0})
        loops = [floor_run, paced_process(isready_cmd, isready, 0.4)]
        if mode == modes[-1]:
            loops.append(scrape_loop)
        cgroup = bench.cgroup(f"-daemon-{mode}", daemon.pid)
        probes0, own0 = daemon.metric("dreamnet_healthd_probes_total"), procstat.process_cpu(daemon.pid)
        cg0 = cgroup.usage() if cgroup else None
        exporter_cpu["before"] = procstat.cpu_seconds(exporter_proc.pid)
        run_threads(loops, seconds)
        exporter_cpu["after"] = procstat.cpu_seconds(exporter_proc.pid)
        own1, probes1 = procstat.process_cpu(daemon.pid), daemon.metric("dreamnet_healthd_probes_total")
        cg1 = cgroup.usage() if cgroup else None
        if cgroup:
            cgroup.close()
        windows[mode] = {"probes": probes1 - probes0,
                         "cpu_ms": (cg1 - cg0 if cgroup else procstat.own_cpu_delta(own0, own1)) * 1000,
                         "accounting": "cgroup" if cgroup else procstat.accounting(own0, own1),
                         "memory": procstat.memory(daemon.pid), "floor": floor,
                         "connection": daemon.connection()}
        if mode == modes[-1]:
            # The CLI in a window of its own, so that the requests of `status` are not counted
            # in the daemon's CPU above; `pg_isready` beside it again.
            stop = threading.Event()
            loops = [paced_process([f"{pg_bin}/pg_isready", "-h", "127.0.0.1", "-p", str(port), "-t", "1"], isready, 0.2),
                     paced_process([s.ctl_bin, "status", "--socket", daemon.sock], ctl_status, 0.5),
                     paced_process([s.ctl_bin, "probe", "--database-url", s.url], ctl_probe, 0.8)]
            if path_isready:
                loops.append(paced_process([path_isready, "-h", "127.0.0.1", "-p", str(port), "-t", "1"], isready_on_path, 0.35))
            starts = {name: new_tally() for name, _ in STARTS}
            loops += [paced_process([f"{pg_bin}/pg_isready", "--version"], starts["isready_version"], 0.05),
                      paced_process([s.ctl_bin, "--version"], starts["ctl_version"], 0.6),
                      paced_process([s.ctl_bin, "probe"], starts["ctl_hop"], 0.65, env={"DREAMNET_PROBE": "/bin/true"}),
                      paced_process([s.probe_bin, "probe", "--database-url", s.url], starts["probe_program"], 0.9)]
            run_threads(loops, seconds, stop)
        daemon.stop()
    e_mem = procstat.memory(exporter_proc.pid)
    exporter_proc.terminate()
    exporter_proc.wait(10)
    # The yardstick the goal was first stated against: the same loop with no pause between probes.
    back_to_back = json.loads(subprocess.run([f"{work}/libpq-floor", floor_conninfo, "0", "2000"],
                                             capture_output=True, text=True).stdout)
    sizes = {"`dreamnet-healthd`": (mib(f"{work}/installed/dreamnet-healthd"), mib(s.daemon_bin)),
             "`dreamnet-healthctl`": (mib(f"{work}/installed/dreamnet-healthctl"), mib(s.ctl_bin)),
             "`dreamnet-probe`": (mib(f"{work}/installed/dreamnet-probe"), mib(s.probe_bin)),
             "prometheus-postgres-exporter (Debian's, for comparison)": (mib(EXPORTER), None),
             "`pg_isready` (Debian's, for comparison)": (mib(f"{pg_bin}/pg_isready"), None)}
    result = SteadyResult(seconds, modes, windows, isready, ctl_status, ctl_probe, scrapes[0],
                          exporter_cpu["after"] - exporter_cpu["before"], e_mem, back_to_back, sizes,
                          path_isready, isready_on_path, starts)
    bench.figures.update(figures(result))
    return section(result)
