import os
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import unittest

from harness import application

SCRIPT = os.path.join(os.path.dirname(__file__), "..", "harness", "application.py")


class ControlTests(unittest.TestCase):
    def test_the_line_reads_back(self):
        self.assertEqual(application.parse_control(application.control_text(1733338800.25, "close")), (1733338800.25, "close"))
        self.assertEqual(application.parse_control("1733338800 keep\n"), (1733338800.0, "keep"))

    def test_anything_else_is_quiet_and_keep(self):
        for text in ("", "\n", "soon keep", "1733338800", "1733338800 keep extra", "1733338800 drop"):
            self.assertEqual(application.parse_control(text), (0.0, "keep"), repr(text))

    def test_only_keep_or_close_is_written(self):
        with self.assertRaises(ValueError):
            application.control_text(1.0, "drop")

    def test_a_missing_file_is_quiet_and_keep_and_a_written_one_is_read(self):
        with tempfile.TemporaryDirectory() as directory:
            path = os.path.join(directory, "control")
            self.assertEqual(application.read_control(path), (0.0, "keep"))
            application.write_control(path, 12.5, "close")
            self.assertEqual(application.read_control(path), (12.5, "close"))
            self.assertEqual(os.listdir(directory), ["control"])


class MessageTests(unittest.TestCase):
    def test_startup_message_is_protocol_3_with_its_parameters(self):
        packet = application.startup_message("postgres", "db")
        (length, version) = struct.unpack("!II", packet[:8])
        self.assertEqual(length, len(packet))
        self.assertEqual(version, 196608)
        self.assertEqual(packet[8:], b"user\0postgres\0database\0db\0application_name\0querying-application\0\0")

    def test_query_message(self):
        self.assertEqual(application.query_message("SELECT 1"), b"Q\0\0\0\x0dSELECT 1\0")

    def test_error_fields_take_the_code_and_the_message_on_one_line(self):
        body = b"SFATAL\0VFATAL\0C57P01\0Mterminating connection\ndue to administrator command\0Fpostgres.c\0\0"
        self.assertEqual(application.error_fields(body), ("57P01", "terminating connection due to administrator command"))
        self.assertEqual(application.error_fields(b"Mno code\0\0"), ("?????", "no code"))

    def test_authentication_code_and_backend_pid(self):
        self.assertEqual(application.authentication_code(struct.pack("!I", 10) + b"SCRAM-SHA-256\0\0"), 10)
        self.assertEqual(application.backend_pid(struct.pack("!II", 4242, 99)), 4242)


def server_message(kind: bytes, body: bytes) -> bytes:
    return kind + struct.pack("!I", len(body) + 4) + body


class ScriptTests(unittest.TestCase):
    """The file run as the tests and the bench run it, against a server that answers each query."""

    def test_it_connects_queries_while_busy_and_closes_when_quiet(self):
        server = socket.create_server(("127.0.0.1", 0))
        self.addCleanup(server.close)
        seen = []

        def serve():
            connection, _ = server.accept()
            with connection:
                length = struct.unpack("!I", connection.recv(4))[0]
                connection.recv(length - 4)
                connection.sendall(server_message(b"R", struct.pack("!I", 0)) + server_message(b"K", struct.pack("!II", 77, 1))
                                   + server_message(b"Z", b"I"))
                while data := connection.recv(65536):
                    seen.append(data[:1])
                    if data[:1] == b"Q":
                        connection.sendall(server_message(b"T", b"\0\0") + server_message(b"Z", b"I"))

        threading.Thread(target=serve, daemon=True).start()
        with tempfile.TemporaryDirectory() as directory:
            control = os.path.join(directory, "control")
            application.write_control(control, time.time() + 0.5, "close")
            process = subprocess.Popen([sys.executable, "-u", SCRIPT, "127.0.0.1", str(server.getsockname()[1]), "postgres",
                                        "postgres", control, "0.2"], stdout=subprocess.PIPE, text=True)
            lines = []
            with process:
                try:
                    while not lines or lines[-1] != "closed":
                        line = process.stdout.readline()
                        self.assertTrue(line, f"the application ended: {lines}")
                        lines.append(line.strip())
                finally:
                    process.kill()
        self.assertEqual(lines[0], "connected 77")
        self.assertIn("sent 1", lines)
        self.assertIn("answered 1", lines)
        sent = [line for line in lines if line.startswith("sent ")]
        self.assertTrue(2 <= len(sent) <= 4, lines)
        self.assertEqual(len(sent), len([line for line in lines if line.startswith("answered ")]))


if __name__ == "__main__":
    unittest.main()
