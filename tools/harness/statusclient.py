"""One request to the daemon's status socket, as every driver makes it: HTTP/1.1 over the Unix
socket, a connection of its own, read to the close."""
from __future__ import annotations

import socket


def parse_reply(reply: bytes) -> tuple[int, bytes]:
    """The status code and the body of one reply read to the close; ValueError when it is not
    an HTTP reply or was cut short (no end of headers, fewer bytes than its Content-Length)."""
    head, separator, body = reply.partition(b"\r\n\r\n")
    if not separator:
        raise ValueError("incomplete reply")
    lines = head.split(b"\r\n")
    status_line = lines[0].split(b" ", 2)
    if len(status_line) < 2 or not status_line[0].startswith(b"HTTP/") or not status_line[1].isdigit():
        raise ValueError(f"reply {lines[0]!r}")
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
            if len(body) < length:
                raise ValueError("short body")
            body = body[:length]
    return int(status_line[1]), body


def get(socket_path: str, path: str, timeout: float = 10) -> tuple[int, bytes]:
    """GET `path` on the status socket at `socket_path`: the status code and the body. Raises
    OSError when the socket does not answer, ValueError when the reply is cut short."""
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(timeout)
        client.connect(socket_path)
        client.sendall(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
        reply = b""
        while chunk := client.recv(65536):
            reply += chunk
    return parse_reply(reply)
