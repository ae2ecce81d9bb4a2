"""The release build's code order: the functions the daemon runs, first, in the order it first
runs them, so that the code it touches is packed together instead of spread over the binary.

Why: the kernel maps a file's code in 64 KiB fault-around blocks, so a function touched here and
there keeps its neighbourhood resident. Start-up, probing and the status routes touch about
1.6 MB of the binary's 14 MB of code; spread out, they keep about 10 MiB of it resident.
`RELEASE_BUILD_FLAGS` (scripts/lib/common.sh) compiles every module with function sections and
hands lld `packaging/code-order.txt` as its `--symbol-ordering-file`. Names that are no longer
in the binary are skipped, so a stale file costs memory, never correctness; regenerate it with
`scripts/code-order` after large changes.

This runs the symbol-table copy of a release daemon under valgrind's callgrind against a
throwaway cluster: start-up, probes at 1 Hz, every status route, a reload; then it takes the
functions of the daemon's own binary from callgrind's output. With `--control`, the CLI's
`status`, `events` and `probe`'s hop to its program too, and with `--probe`, that program's
probe, whose functions follow the daemon's: lld orders each binary by the names it has, so one
file serves all three.

    python3 -m harness.codeorder --daemon BIN [--control BIN] [--probe BIN] --pg-bin DIR --out packaging/code-order.txt
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

from harness import statusclient
from harness.cluster import Cluster

# callgrind's `ob=`/`fn=` lines (and the `cob=`/`cfn=` of calls), with name compression: the
# name follows the number the first time only.
_NAMED = re.compile(r"^(c?)(ob|fn)=\((\d+)\)(?: (.*))?$")
# Names valgrind gives a function's recursion levels and duplicates: `name'2`.
_SUFFIX = re.compile(r"'\d+$")
ROUTES = ("/status", "/health", "/metrics", "/events", "/status?pretty")


def executed_functions(callgrind: str, binary: str) -> list[str]:
    """The functions of the object whose path ends in `binary` that ran, in the order callgrind
    first lists them (cost lines, not calls), each once, without valgrind's suffixes."""
    objects: dict[str, str] = {}
    functions: dict[str, str] = {}
    current: str | None = None
    seen: set[str] = set()
    order: list[str] = []
    for line in callgrind.splitlines():
        match = _NAMED.match(line)
        if not match:
            continue
        called, kind, number, name = match.groups()
        table = objects if kind == "ob" else functions
        if name is not None:
            table[number] = name
        if called:
            continue
        if kind == "ob":
            current = objects.get(number)
            continue
        function = _SUFFIX.sub("", functions.get(number, ""))
        if current and current.endswith("/" + binary) and function and not function.startswith("(") and function not in seen:
            seen.add(function)
            order.append(function)
    return order


def workload(socket_path: str, seconds: float, reload_pid: int) -> None:
    """What the daemon does in a day, compressed: every route, a reload, probes meanwhile."""
    deadline = time.monotonic() + seconds
    reloaded = False
    while time.monotonic() < deadline:
        for route in ROUTES:
            try:
                statusclient.get(socket_path, route, 60)
            except OSError:
                pass
        if not reloaded and time.monotonic() > deadline - seconds / 2:
            os.kill(reload_pid, signal.SIGHUP)
            reloaded = True
        time.sleep(2)


def symbols_copy(binary: str, work: str) -> str:
    """The symbol table without the debug information, which valgrind's reader refuses."""
    copy = f"{work}/{os.path.basename(binary)}"
    subprocess.run(["objcopy", "--strip-debug", binary, copy], check=True)
    return copy


def profile_commands(binary: str, commands: list[list[str]], work: str, environment: dict[str, str] | None = None) -> str:
    """callgrind's output of `binary` running each of `commands`, one after the other."""
    copy = symbols_copy(binary, work)
    outputs = []
    for index, command in enumerate(commands):
        output = f"{work}/callgrind-{os.path.basename(binary)}-{index}.out"
        subprocess.run(["valgrind", "--tool=callgrind", "--demangle=no", f"--callgrind-out-file={output}", copy, *command],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=300, env=environment)
        with open(output, encoding="utf-8", errors="replace") as f:
            outputs.append(f.read())
    return "\n".join(outputs)


def unrunnable_program(work: str) -> str:
    """An empty executable file: `execv` refuses it (ENOEXEC), so the CLI's `probe` runs its
    whole hop and then exits by itself, and callgrind writes its profile. (A program the hop
    could run would replace the CLI's process first, profile unwritten.)"""
    path = f"{work}/unrunnable-probe-program"
    with open(path, "w"):
        pass
    os.chmod(path, 0o755)
    return path


def control_commands(socket_path: str) -> list[list[str]]:
    """The CLI's commands that ask the daemon, and `probe`'s hop to its program."""
    return [["--socket", socket_path, "status"], ["--socket", socket_path, "events"],
            ["--socket", socket_path, "status", "--json"], ["probe", "--timeout", "1s"]]


def profile(daemon: str, pg_bin: str, seconds: float, work: str, control: str | None = None,
            probe: str | None = None) -> tuple[str, str, str]:
    """callgrind's output of the daemon under the workload, of the CLI's commands meanwhile
    (empty without `control`) and of the probe program probing the same database (empty
    without `probe`)."""
    cluster = Cluster.create(pg_bin, f"{work}/cluster")
    try:
        copy = symbols_copy(daemon, work)
        output = f"{work}/callgrind.out"
        socket_path = f"{work}/status.sock"
        url = f"postgresql://postgres@127.0.0.1:{cluster.port}/postgres"
        environment = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NOTIFY_SOCKET")}
        environment["GNUTLS_NO_IMPLICIT_INIT"] = "1"
        with open(f"{work}/daemon.log", "wb") as log:
            process = subprocess.Popen(
                ["valgrind", "--tool=callgrind", "--demangle=no", f"--callgrind-out-file={output}", copy,
                 "--database-url", url,
                 "--interval", "1s", "--socket", socket_path, "--state-dir", f"{work}/state",
                 "--alert-log", f"{work}/alerts.log", "--log-level", "warning"],
                env=environment, stdout=log, stderr=log,
            )
        try:
            started = time.monotonic() + 120
            while not os.path.exists(socket_path):
                if process.poll() is not None or time.monotonic() > started:
                    raise RuntimeError(f"the daemon did not start under valgrind; see {work}/daemon.log")
                time.sleep(0.5)
            workload(socket_path, seconds, process.pid)
            control_output = (profile_commands(control, control_commands(socket_path), work,
                                               {**environment, "DREAMNET_PROBE": unrunnable_program(work)})
                              if control else "")
            probe_output = (profile_commands(probe, [["probe", "--database-url", url], ["probe", "--database-url", url, "--json"]],
                                             work, environment) if probe else "")
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=120)
        with open(output, encoding="utf-8", errors="replace") as f:
            return f.read(), control_output, probe_output
    finally:
        cluster.shut_down()


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="harness.codeorder", description=__doc__.split("\n\n")[0])
    parser.add_argument("--daemon", required=True, help="the release build's dreamnet-healthd (unstripped)")
    parser.add_argument("--control", help="the release build's dreamnet-healthctl (unstripped)")
    parser.add_argument("--probe", help="the release build's dreamnet-probe (unstripped)")
    parser.add_argument("--pg-bin", required=True)
    parser.add_argument("--seconds", type=float, default=40)
    parser.add_argument("--out", required=True)
    arguments = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="dreamnet-codeorder-", dir="/tmp")
    # The cluster's user (postgres, when run as root) must be able to enter it.
    os.chmod(work, 0o755)
    try:
        runs = profile(arguments.daemon, arguments.pg_bin, arguments.seconds, work, arguments.control, arguments.probe)
        names = []
        known = set()
        for run, binary in zip(runs, ("dreamnet-healthd", "dreamnet-healthctl", "dreamnet-probe")):
            names += [name for name in executed_functions(run, binary) if name not in known]
            known = set(names)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if len(names) < 1000:
        print(f"codeorder: only {len(names)} functions ran: the profile failed", file=sys.stderr)
        return 1
    with open(arguments.out, "w") as f:
        f.write("\n".join(names) + "\n")
    print(f"codeorder: {len(names)} functions written to {arguments.out}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
