"""The bench's markdown: a header saying when, where and at which commit, the goals checked in the
run, then a `### title` and body per part."""
from __future__ import annotations

from harness import goals


def header(date: str, commit: str, machine: str) -> str:
    return (f"Measured {date} at commit {commit} by `scripts/bench`, on {machine}. "
            "The machine is shared and noisy: ratios against the alternatives, measured in the same run, are the headline; "
            "absolute figures are for this machine.\n")


def render(head: str, sections: list[tuple[str, str]], verdicts: list[goals.Verdict] | None = None) -> str:
    """The report: the header, the goals table (when there are verdicts), the sections."""
    checked = f"\n{goals.table(verdicts)}" if verdicts else ""
    return head + checked + "\n" + "".join(f"### {title}\n\n{body}\n\n" for title, body in sections)
