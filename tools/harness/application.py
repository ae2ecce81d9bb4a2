"""An application using the database as one with a connection pool does: while busy it runs
`SELECT 1` every INTERVAL seconds on one kept connection (connecting again when that is lost),
then goes quiet, keeping the connection open and idle or closing it. It speaks the PostgreSQL
protocol itself (trust authentication only), with the standard library only, so that it runs as
a file of its own:

    python3 -u tools/harness/application.py HOST PORT USER DATABASE CONTROL INTERVAL

CONTROL is a file holding one line, `DEADLINE keep|close`: the wall-clock time (Unix seconds) until
which it is busy, and what it does with its connection once quiet. It is read before every
decision and replaced whole (a rename), so it is never read half written; a missing or malformed
file means quiet and keep. What it does is printed, one line per thing:

    connected <backend pid>
    sent <n>
    answered <n>
    error <SQLSTATE> <message>     an ErrorResponse, in a query, at startup or while idle
    lost <reason>                  the connection ended or could not be made
    closed                         it closed the connection on going quiet

Tests/TestSupport/QueryingApplication.swift runs it for the Swift tests, and
tools/harness/sleepbench.py for scripts/bench-sleep.
"""
from __future__ import annotations

import os
import select
import socket
import struct
import sys
import tempfile
import time

PROTOCOL_3_0 = 196608
APPLICATION_NAME = "querying-application"


# The control file.

def control_text(deadline: float, quiet: str) -> str:
    """The control file's line: busy until `deadline` (Unix seconds), then `quiet` (keep or close)."""
    if quiet not in ("keep", "close"):
        raise ValueError(f"quiet must be keep or close, not {quiet!r}")
    return f"{deadline} {quiet}\n"


def parse_control(text: str) -> tuple[float, str]:
    """The deadline and what to do when quiet; quiet and keep for anything else than one valid line."""
    try:
        deadline, quiet = text.split()
        if quiet not in ("keep", "close"):
            raise ValueError(quiet)
        return float(deadline), quiet
    except ValueError:
        return 0.0, "keep"


def read_control(path: str) -> tuple[float, str]:
    try:
        with open(path, encoding="utf-8") as control:
            return parse_control(control.read())
    except OSError:
        return 0.0, "keep"


def write_control(path: str, deadline: float, quiet: str) -> None:
    """Replaces the control file whole, so that the application never reads half of it."""
    directory = os.path.dirname(os.path.abspath(path))
    descriptor, temporary = tempfile.mkstemp(dir=directory, prefix=".control-")
    with os.fdopen(descriptor, "w", encoding="utf-8") as new:
        new.write(control_text(deadline, quiet))
    os.rename(temporary, path)


# The protocol's messages.

def startup_message(user: str, database: str) -> bytes:
    parameters = b""
    for name, value in (("user", user), ("database", database), ("application_name", APPLICATION_NAME)):
        parameters += name.encode() + b"\0" + value.encode() + b"\0"
    body = struct.pack("!I", PROTOCOL_3_0) + parameters + b"\0"
    return struct.pack("!I", len(body) + 4) + body


def query_message(sql: str) -> bytes:
    text = sql.encode() + b"\0"
    return b"Q" + struct.pack("!I", 4 + len(text)) + text


TERMINATE = b"X\0\0\0\4"


def error_fields(body: bytes) -> tuple[str, str]:
    """An ErrorResponse's SQLSTATE and message (on one line); ????? when it has no code."""
    fields = {}
    for part in body.split(b"\0"):
        if part:
            fields[chr(part[0])] = part[1:].decode("utf-8", "replace")
    return fields.get("C", "?????"), fields.get("M", "").replace("\n", " ")


def authentication_code(body: bytes) -> int:
    (code,) = struct.unpack("!I", body[:4])
    return code


def backend_pid(body: bytes) -> int:
    """The process id of a BackendKeyData message."""
    (pid,) = struct.unpack("!I", body[:4])
    return pid


# The connection.

class Lost(Exception):
    pass


def say(*words: object) -> None:
    print(" ".join(str(word) for word in words), flush=True)


def read_exactly(s: socket.socket, n: int) -> bytes:
    data = b""
    while len(data) < n:
        chunk = s.recv(n - len(data))
        if not chunk:
            raise Lost("end of connection")
        data += chunk
    return data


def message(s: socket.socket) -> tuple[bytes, bytes]:
    kind = read_exactly(s, 1)
    (length,) = struct.unpack("!I", read_exactly(s, 4))
    return kind, read_exactly(s, length - 4)


def report(body: bytes) -> None:
    say("error", *error_fields(body))


def connect(host: str, port: int, user: str, database: str) -> socket.socket:
    s = socket.create_connection((host, port), timeout=10)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.sendall(startup_message(user, database))
    backend = None
    try:
        while True:
            kind, body = message(s)
            if kind == b"R":
                code = authentication_code(body)
                if code != 0:
                    raise Lost("authentication method %d is not supported" % code)
            elif kind == b"K":
                backend = backend_pid(body)
            elif kind == b"E":
                report(body)
            elif kind == b"Z":
                say("connected", backend)
                return s
    except BaseException:
        s.close()
        raise


def query(s: socket.socket, number: int) -> None:
    s.sendall(query_message("SELECT 1"))
    say("sent", number)
    failed = False
    while True:
        kind, body = message(s)
        if kind == b"E":
            report(body)
            failed = True
        elif kind == b"Z":
            break
    if not failed:
        say("answered", number)


def run(host: str, port: int, user: str, database: str, control: str, interval: float) -> None:
    connection = None
    sent = 0
    next_query = 0.0
    while True:
        deadline, quiet = read_control(control)
        now = time.time()
        try:
            if now < deadline:
                if now >= next_query:
                    next_query = now + interval
                    if connection is None:
                        connection = connect(host, port, user, database)
                    sent += 1
                    query(connection, sent)
            elif connection is not None and quiet == "close":
                try:
                    connection.sendall(TERMINATE)
                finally:
                    connection.close()
                    connection = None
                    say("closed")
                next_query = 0.0
            if connection is None:
                time.sleep(0.05)
            elif select.select([connection], [], [], 0.05)[0]:
                # Between queries the server speaks only to end the session (or to notify).
                kind, body = message(connection)
                if kind == b"E":
                    report(body)
        except (OSError, Lost) as problem:
            say("lost", problem if str(problem) else type(problem).__name__)
            if connection is not None:
                connection.close()
                connection = None
            time.sleep(0.05)


def main(argv: list[str]) -> int:
    if len(argv) != 6:
        print("usage: application.py HOST PORT USER DATABASE CONTROL INTERVAL", file=sys.stderr)
        return 2
    host, port, user, database, control, interval = argv
    try:
        run(host, int(port), user, database, control, float(interval))
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
