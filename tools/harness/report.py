"""Reports written into BENCHMARKS.md between a marker pair of their own; the text around the
markers (the analysis) is kept.

    python3 -m harness.report FILE MARKER REPORT    # REPORT: a file, or - for standard input
"""

from __future__ import annotations

import sys


def merge(text: str, marker: str, report: str) -> str:
    """`text` with the part between `<!-- MARKER: begin -->` and `<!-- MARKER: end -->` replaced
    by `report`; a pair missing from the text is added at its end."""
    begin, end = f"<!-- {marker}: begin -->", f"<!-- {marker}: end -->"
    if begin not in text:
        text = text.rstrip("\n") + f"\n\n{begin}\n{end}\n"
    head, rest = text.split(begin, 1)
    if end not in rest:
        raise ValueError(f"{marker}: begin marker without an end marker")
    tail = rest.split(end, 1)[1]
    return f"{head}{begin}\n{report.strip()}\n{end}{tail}"


def write(path: str, marker: str, report: str) -> None:
    try:
        with open(path, encoding="utf-8") as existing:
            text = existing.read()
    except FileNotFoundError:
        text = "# Benchmarks\n"
    with open(path, "w", encoding="utf-8") as updated:
        updated.write(merge(text, marker, report))


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[-1].strip(), file=sys.stderr)
        return 2
    path, marker, source = argv
    report = sys.stdin.read() if source == "-" else open(source, encoding="utf-8").read()
    write(path, marker, report)
    print(f"{marker} report written into {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
