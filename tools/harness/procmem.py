"""A process's memory as the kernel accounts it, from /proc/PID/status."""

from __future__ import annotations

from dataclasses import dataclass

MIB = 1024 * 1024


@dataclass(frozen=True)
class Memory:
    """Resident memory in bytes: all of it, and its anonymous and file-backed parts."""

    rss: int
    anon: int
    file: int
    shmem: int

    @property
    def rss_mib(self) -> float:
        return self.rss / MIB

    @property
    def anon_mib(self) -> float:
        return self.anon / MIB

    @property
    def file_mib(self) -> float:
        return self.file / MIB


def parse_status(text: str) -> Memory:
    """Parses the `VmRSS`, `RssAnon`, `RssFile` and `RssShmem` lines (kB) of /proc/PID/status."""
    fields: dict[str, int] = {}
    for line in text.splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "RssAnon", "RssFile", "RssShmem"):
            number, _, unit = value.strip().partition(" ")
            if unit != "kB":
                raise ValueError(f"{key}: unexpected unit {unit!r}")
            fields[key] = int(number) * 1024
    missing = {"VmRSS", "RssAnon", "RssFile"} - fields.keys()
    if missing:
        raise ValueError(f"/proc status lacks {', '.join(sorted(missing))}")
    return Memory(fields["VmRSS"], fields["RssAnon"], fields["RssFile"], fields.get("RssShmem", 0))


def read(pid: int) -> Memory:
    """The memory of a running process; raises OSError once it has gone."""
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        return parse_status(status.read())


def parse_cpu_seconds(stat: str, ticks_per_second: int, children: bool = False) -> float:
    """User plus system CPU time from the text of /proc/PID/stat (fields 14 and 15, and with
    `children` the reaped children's, 16 and 17), which follow the command name in parentheses
    (a name may itself hold spaces and parentheses)."""
    fields = stat[stat.rindex(")") + 2:].split()
    used = int(fields[11]) + int(fields[12])
    if children:
        used += int(fields[13]) + int(fields[14])
    return used / ticks_per_second


def cpu_seconds(pid: int, children: bool = False) -> float:
    """The CPU time a running process has used so far (with `children`, its reaped children's too)."""
    import os

    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        return parse_cpu_seconds(stat.read(), os.sysconf("SC_CLK_TCK"), children)
