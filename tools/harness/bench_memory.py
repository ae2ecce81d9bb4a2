"""What clients that pipeline requests and never read can make the daemon hold, and whether it
gives it back: `harness.pipeflood` at the issue's two sizes, rendered for BENCHMARKS.md.

    python3 -m harness.bench_memory --daemon BIN --healthctl BIN [--rounds 15] [--write FILE]
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time

from . import pipeflood, report
from .procmem import MIB

MARKER = "scripts/bench-memory"
# Goals (issue figures): at the peak at most this much above idle, and this close to idle 10 s
# after the clients have gone.
PEAK_GOAL = 8 * MIB
SETTLED_GOAL = 2 * MIB
SIZES = ((200, 1_000), (512, 1_000))


def render(results: list[pipeflood.FloodResult], commit: str, settle: float) -> str:
    lines = [
        f"Measured {time.strftime('%Y-%m-%d', time.gmtime())} at commit {commit} by `scripts/bench-memory`, "
        f"release build, on {os.cpu_count()} cores; Linux {platform.release()}. The daemon is not-configured "
        "(no database), so only the status socket works; each client sends its requests (`GET /status`, "
        "33 bytes each) at once, reads nothing, and is closed after the hold.",
        "",
        f"| clients × requests | rounds | RssAnon idle | peak (above idle) | {settle:g} s after the last round "
        "(above idle) | peak RSS | `dreamnet-healthctl status` answered, slowest | daemon CPU per round | goals |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        met = r.peak_above_idle <= PEAK_GOAL and r.settled_above_idle <= SETTLED_GOAL and r.status_answered == r.status_asked
        lines.append(
            f"| {r.connections} × {r.requests_per_connection} | {r.rounds} | {r.idle_anon / MIB:.1f} MiB | "
            f"{r.peak_anon / MIB:.1f} MiB (+{r.peak_above_idle / MIB:.1f}) | {r.settled_anon / MIB:.1f} MiB "
            f"(+{r.settled_above_idle / MIB:.1f}) | {r.peak_rss / MIB:.1f} MiB | {r.status_answered}/{r.status_asked}, "
            f"{r.slowest_status_seconds * 1000:.0f} ms | {r.cpu_seconds / r.rounds * 1000:.0f} ms | "
            f"{'met' if met else '**not met**'} (+{PEAK_GOAL // MIB} MiB peak, +{SETTLED_GOAL // MIB} MiB after) |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bench_memory", description=__doc__.split("\n\n")[0])
    pipeflood.add_arguments(parser)
    parser.add_argument("--write", metavar="FILE", help="write the report between its markers in FILE")
    options = parser.parse_args(argv)
    results = [pipeflood.measure(options, connections, requests) for connections, requests in SIZES]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip() or "unknown"
    text = render(results, commit, options.settle)
    print(text)
    if options.write:
        report.write(options.write, MARKER, text)
        print(f"{MARKER} report written into {options.write}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
