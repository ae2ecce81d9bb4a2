"""What the bench reads from /proc and from a cpuacct cgroup: CPU (ticks and ns), memory, the
machine. The parsing takes the files' text, so that it can be tried on samples."""
from __future__ import annotations

import os
from dataclasses import dataclass

from harness import procmem


def read(path: str) -> str:
    with open(path) as f:
        return f.read()


def cpu_seconds(pid: int) -> float:
    """A process's user and system CPU from /proc/PID/stat, in seconds (10 ms ticks)."""
    return procmem.cpu_seconds(pid)


def postmaster_cpu(pid: int) -> float:
    """The postmaster's own CPU and that of its children it has reaped, in seconds."""
    return procmem.cpu_seconds(pid, children=True)


MEMORY_FIELDS = ("VmRSS", "VmHWM", "RssAnon", "RssFile")


def parse_memory(status: str, smaps_rollup: str) -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon and RssFile of /proc/PID/status and Pss of smaps_rollup, in MiB."""
    out = {}
    for line in status.splitlines():
        key, _, value = line.partition(":")
        if key in MEMORY_FIELDS:
            out[key] = int(value.split()[0]) / 1024
    for line in smaps_rollup.splitlines():
        key, _, value = line.partition(":")
        if key == "Pss":
            out[key] = int(value.split()[0]) / 1024
    return out


def memory(pid: int) -> dict[str, float]:
    return parse_memory(read(f"/proc/{pid}/status"), read(f"/proc/{pid}/smaps_rollup"))


def parse_schedstat(text: str) -> float:
    """The time on CPU in /proc/…/schedstat (its first field, ns), in seconds."""
    return int(text.split()[0]) / 1e9


@dataclass(frozen=True)
class ProcessCpu:
    """A whole process's CPU at one moment: its threads, the sum of their schedstat (ns) and
    /proc/PID/stat (10 ms ticks, threads that ended included)."""

    tids: tuple[int, ...]
    precise: float
    ticks: float


def process_cpu(pid: int) -> ProcessCpu:
    tids = tuple(sorted(int(t) for t in os.listdir(f"/proc/{pid}/task")))
    precise = 0.0
    for tid in tids:
        try:
            precise += parse_schedstat(read(f"/proc/{pid}/task/{tid}/schedstat"))
        except OSError:
            pass
    return ProcessCpu(tids, precise, cpu_seconds(pid))


def own_cpu_delta(a: ProcessCpu, b: ProcessCpu) -> float:
    """CPU used between two readings: the threads' schedstat when the same threads were there at
    both ends, else the ticks (a thread that ended took its schedstat with it)."""
    return b.precise - a.precise if a.tids == b.tids else b.ticks - a.ticks


def accounting(a: ProcessCpu, b: ProcessCpu) -> str:
    return "schedstat" if a.tids == b.tids else "ticks"


def backend_cpu(pid: int) -> float | None:
    """A live backend's CPU in seconds: schedstat (ns) when there, else /proc/PID/stat; None once gone."""
    try:
        return parse_schedstat(read(f"/proc/{pid}/schedstat"))
    except (FileNotFoundError, ProcessLookupError):
        return None
    except (OSError, ValueError, IndexError):
        try:
            return cpu_seconds(pid)
        except OSError:
            return None


def parse_loadavg(text: str) -> list[str]:
    """The 1, 5 and 15 minute load averages of /proc/loadavg, as written there."""
    return text.split()[:3]


def loadavg() -> list[str]:
    return parse_loadavg(read("/proc/loadavg"))


def parse_cpu_model(cpuinfo: str) -> str:
    """The first `model name` of /proc/cpuinfo."""
    return cpuinfo.split("model name")[1].split(":")[1].splitlines()[0].strip()


def cpu_model() -> str:
    return parse_cpu_model(read("/proc/cpuinfo"))


class CpuCgroup:
    """A cpuacct cgroup (v1) of its own for one process: every thread and child it makes
    afterwards is in it too, and cpuacct.usage counts their CPU in ns, alive or gone, where
    /proc/PID/stat has 10 ms ticks. Raises OSError where there is no writable cpuacct hierarchy."""

    root = "/sys/fs/cgroup/cpuacct"

    def __init__(self, name: str, pid: int):
        self.path = f"{self.root}/{name}"
        os.mkdir(self.path)
        with open(f"{self.path}/cgroup.procs", "w") as f:
            f.write(str(pid))

    def usage(self) -> float:
        return int(read(f"{self.path}/cpuacct.usage")) / 1e9

    def close(self) -> None:
        for pid in read(f"{self.path}/cgroup.procs").split():
            try:
                with open(f"{self.root}/cgroup.procs", "w") as f:
                    f.write(pid)
            except OSError:
                pass
        try:
            os.rmdir(self.path)
        except OSError:
            pass


def cpu_cgroup(name: str, pid: int) -> CpuCgroup | None:
    """The cgroup, or None where there is no writable cpuacct hierarchy."""
    try:
        return CpuCgroup(name, pid)
    except OSError:
        return None
