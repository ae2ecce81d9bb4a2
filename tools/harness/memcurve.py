"""Whether a process's memory kept growing over its life: the soak's rule 5, and the curve it
prints. Pure: samples in, figures out."""

from __future__ import annotations

import statistics
from dataclasses import dataclass

from .procmem import MIB

# Rule 5: the median resident set of a life's last third may exceed its first third's by at most
# this fraction, or by at most the floor (a life whose set is small and steady is not failed
# for a page or two).
GROWTH_FRACTION = 0.10
GROWTH_FLOOR = 2 * MIB
# The shortest life, and the fewest samples, worth judging.
MINIMUM_SECONDS = 60
MINIMUM_SAMPLES = 9


@dataclass(frozen=True)
class Sample:
    seconds: float  # since the life began
    rss: int
    anon: int
    file: int


@dataclass(frozen=True)
class Growth:
    first_rss: float
    last_rss: float
    first_anon: float
    last_anon: float

    @property
    def rss_growth(self) -> float:
        return self.last_rss - self.first_rss

    @property
    def anon_growth(self) -> float:
        return self.last_anon - self.first_anon

    @property
    def violates(self) -> bool:
        return self.rss_growth > max(GROWTH_FRACTION * self.first_rss, GROWTH_FLOOR)

    def describe(self) -> str:
        return (f"median RSS of the first third {self.first_rss / MIB:.1f} MiB, of the last third "
                f"{self.last_rss / MIB:.1f} MiB ({self.rss_growth / MIB:+.1f} MiB, "
                f"{self.rss_growth / self.first_rss * 100:+.0f} %); RssAnon {self.first_anon / MIB:.1f} -> "
                f"{self.last_anon / MIB:.1f} MiB (allowed: +{GROWTH_FRACTION * 100:.0f} % or "
                f"+{GROWTH_FLOOR / MIB:.0f} MiB of RSS, whichever is more)")


def growth(samples: list[Sample], seconds: float) -> Growth | None:
    """The first and last thirds' medians, or None for a life too short to judge."""
    if seconds < MINIMUM_SECONDS or len(samples) < MINIMUM_SAMPLES:
        return None
    third = len(samples) // 3
    first, last = samples[:third], samples[-third:]
    return Growth(
        first_rss=statistics.median(s.rss for s in first), last_rss=statistics.median(s.rss for s in last),
        first_anon=statistics.median(s.anon for s in first), last_anon=statistics.median(s.anon for s in last),
    )


def curve(samples: list[Sample], buckets: int = 10) -> list[tuple[float, float, float, float]]:
    """The life cut into `buckets` stretches of equal sample count: for each, when it began and
    the median RSS, RssAnon and RssFile, in MiB."""
    if not samples:
        return []
    buckets = min(buckets, len(samples))
    rows = []
    for index in range(buckets):
        part = samples[index * len(samples) // buckets:(index + 1) * len(samples) // buckets]
        rows.append((part[0].seconds, statistics.median(s.rss for s in part) / MIB,
                     statistics.median(s.anon for s in part) / MIB, statistics.median(s.file for s in part) / MIB))
    return rows


def format_curve(samples: list[Sample], buckets: int = 10) -> list[str]:
    return [f"{start:6.0f} s  RSS {rss:6.1f}  anon {anon:5.1f}  file {file:5.1f} MiB"
            for start, rss, anon, file in curve(samples, buckets)]
