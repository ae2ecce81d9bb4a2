"""The fleet's markdown: a row per mode of each table, and the report around them."""
from __future__ import annotations

import statistics

from harness import goals


def steady_row(mode: str, size: int, steady: dict, idle_share: float, elapsed: float, interval_s: float,
               load0: str, load1: str) -> str:
    server_share, daemons = steady["server"], steady["daemons"]
    probes = size * elapsed / interval_s
    return (f"| {mode} | {size} | **{server_share * 100:.1f} %** ({(server_share - idle_share) / probes * elapsed * 1000:.2f} ms per probe) | "
            f"{steady['opened']:.1f} | {steady['sampled']} / {steady['logged']} | {steady['one']} | {daemons * 100:.1f} % "
            f"({daemons * elapsed / probes * 1000:.2f} ms per probe) | {steady['pss']:.0f} ({steady['pss'] / size:.1f} each) | {load0} → {load1} |")


def outage_row(mode: str, outage_s: float, held: int, done: list[float], never: int, sampled: int, logged: int,
               one: int, refused: int) -> str:
    if not done:
        return f"| {mode} | {outage_s:.1f} | {held} | never | | {never} | | | |"
    return (f"| {mode} | {outage_s:.1f} | {held} | **{max(done):.2f}** | {statistics.median(done):.2f} | {never} | "
            f"{sampled} / {logged} | {one} | {refused} |")


def integrity_row(mode: str, size: int, i: dict) -> str:
    return (f"| {mode} | {i['lines']} | {i['rows']} | **{i['lost']}** | **{i['duplicated']}** | {i['extra']} | "
            f"{i['mismatched']} of {size} |")


def restart_row(mode: str, label: str, r: dict) -> str:
    """`r`: up (seconds to each status socket), received, buckets, own (per 100 ms of each daemon's time)."""
    up, counts, own, interval = r["up"], r["buckets"], r["own"], r["interval_buckets"]
    mean = sum(counts) / len(counts)
    ratio = f"{max(counts) / mean:.1f}" if mean else "no connection yet"
    first = counts[:interval]
    first_ratio = f"{max(first) / (sum(first) / len(first)):.1f}" if sum(first) else "no connection yet"
    own_first = own[:interval]
    own_ratio = f"{max(own_first) / (sum(own_first) / len(own_first)):.1f}" if sum(own_first) else "none"
    own_ratio2 = f"{max(own) / (sum(own) / len(own)):.1f}" if sum(own) else "none"
    return (f"| {mode} | {label} | {statistics.median(up) * 1000:.0f} / {max(up) * 1000:.0f} | {r['received']} | {max(counts)} | {mean:.1f} | **{ratio}** | "
            f"{first_ratio} | {' '.join(str(b) for b in counts)} | **{own_ratio2}** / **{own_ratio}** | {' '.join(str(b) for b in own)} |")


def report(head: str, seconds: int, tables: dict, verdicts: list[goals.Verdict]) -> str:
    """`tables`: the rows of steady, outage, integrity and restart."""
    out = [head]
    if verdicts:
        out.append(goals.table(verdicts))
    out.append(f"#### Steady, {seconds} s ({goals.heading_clause('fleet-steady')})\n")
    out.append("| mode | daemons | server CPU, share of one core | connections opened per second | most client backends at once (sampled / from the log) | most of one daemon's at once | daemons' CPU, share of one core | daemons' PSS, MiB | load average before → after |\n|---|---|---|---|---|---|---|---|---|")
    out += tables["steady"]
    out.append("\nServer CPU: the postmaster's own and its reaped children's (`/proc/PID/stat` fields 14–17) plus the "
               "live backends' (`/proc/PID/schedstat`) over the run; per probe after the idle server's share is taken off. "
               "Connections opened: `connection received` lines of the fleet in the server's log.\n")
    out.append(f"#### Database outage, then restart ({goals.heading_clause('fleet-outage')})\n")
    out.append("| mode | server down, s | daemons holding spooled events | all healthy with an empty spool, s after `ready to accept connections` | median daemon, s | never | most fleet connections meanwhile (sampled / from the log) | most of one daemon's at once | refused |\n|---|---|---|---|---|---|---|---|---|")
    out += tables["outage"]
    out.append("\n| mode | alert-log lines | system_events rows | lost | duplicated | rows without an alert line | daemons not matching |\n|---|---|---|---|---|---|---|")
    out += tables["integrity"]
    out.append("\nPer daemon over the whole run of the mode (first start, outage, restarts): the ids of its alert-log lines "
               "against the ids of the rows whose `metadata.pid` is one of its processes'.\n")
    out.append(f"#### The whole fleet restarted at once ({goals.heading_clause('fleet-restart')})\n")
    out.append("| mode | first probe | status socket up after the gate opened, median / last, ms | connections in the next 2 s | busiest 100 ms | mean | busiest / mean | busiest / mean, first interval only | per 100 ms | timed from each daemon's own start: busiest / mean, two intervals / first interval | per 100 ms of each daemon's own time |\n|---|---|---|---|---|---|---|---|---|---|---|")
    out += tables["restart"]
    out.append("\nAll daemons are spawned behind one gate (a FIFO each waits on before it execs the daemon) and let go "
               "at the same moment; buckets count the fleet's `connection received` lines from that moment. A hundred "
               "processes starting at once on two cores are themselves spread over the time in the third column, which a "
               "fleet of hosts would not be: the last two columns time each daemon's connections from its own start (its "
               "status socket appearing), as hosts started at the same instant would send them (each daemon names its "
               "connections, `application_name=dreamnet-healthd-NNN`, so the log tells them apart). In session mode a daemon connects "
               "once and then keeps its session, so the second interval is empty by design: the first interval's ratio "
               "is the one that says whether they arrive together.")
    return "\n".join(out) + "\n"
