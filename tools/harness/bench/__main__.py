"""Runs the bench's parts and prints the markdown report; writes WORK/report-main.md when every part
between the `scripts/bench` markers ran, WORK/report-cost.md when the cost part did, for
scripts/bench to merge into BENCHMARKS.md. scripts/bench builds the binaries, starts the cluster and
the libpq floor, then runs

    python3 -m harness.bench BIN_DIR WORK PORT PG_BINDIR STEADY_S LOAD_S COMMIT ONLY COST_S COST_INTERVAL
"""
from __future__ import annotations

import sys
import time

from harness import goals
from harness.bench import cost, deadline, detection, load, replay, startup, steady
from harness.bench.common import MAIN_PARTS, Bench, Settings, log
from harness.bench.render import header, render

RUNNERS = {"deadline": deadline.run, "steady": steady.run, "load": load.run, "detection": detection.run,
           "replay": replay.run, "startup": startup.run, "cost": cost.run}


def main(argv: list[str]) -> int:
    try:
        settings = Settings.from_argv(argv)
    except ValueError as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    bench = Bench(settings)
    head = header(time.strftime("%Y-%m-%d", time.gmtime()), settings.commit, bench.machine())
    sections = {part: RUNNERS[part](bench) for part in settings.parts}
    main_parts = [p for p in settings.parts if p in MAIN_PARTS]
    main_verdicts = goals.evaluate(bench.figures, main_parts)
    cost_verdicts = goals.evaluate(bench.figures, ["cost"] if settings.want("cost") else [])
    for line in goals.lines(main_verdicts + cost_verdicts, "bench"):
        log(line.removeprefix("bench: "))
    main_sections = [sections[p] for p in main_parts]
    cost_sections = [sections["cost"]] if "cost" in sections else []
    print(render(head, main_sections + cost_sections, main_verdicts + cost_verdicts))
    # What goes into BENCHMARKS.md: a pair of markers only when every part between them ran.
    if all(settings.want(p) for p in MAIN_PARTS):
        with open(f"{settings.work}/report-main.md", "w") as f:
            f.write(render(head, main_sections, main_verdicts))
    if cost_sections:
        with open(f"{settings.work}/report-cost.md", "w") as f:
            f.write(render(head, cost_sections, cost_verdicts))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
