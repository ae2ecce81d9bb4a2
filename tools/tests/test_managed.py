import socket
import threading
import time
import unittest

from harness import managed


class MetricTests(unittest.TestCase):
    def test_sums_every_sample_of_a_name_and_no_other(self):
        text = "\n".join([
            "# TYPE dreamnet_healthd_probe_failures_total counter",
            'dreamnet_healthd_probe_failures_total{reason="timeout"} 2',
            'dreamnet_healthd_probe_failures_total{reason="auth"} 1',
            "dreamnet_healthd_probes_total 40",
            "dreamnet_healthd_probes_total_extra 99",
        ])
        self.assertEqual(managed.metric(text, "dreamnet_healthd_probe_failures_total"), 3)
        self.assertEqual(managed.metric(text, "dreamnet_healthd_probes_total"), 40)
        self.assertEqual(managed.metric(text, "dreamnet_healthd_absent"), 0)

    def test_per_probe_is_milliseconds_and_safe_for_none(self):
        self.assertAlmostEqual(managed.per_probe(0.5, 100), 5.0)
        self.assertEqual(managed.per_probe(1.0, 0), 0.0)


class DelayRelayTests(unittest.TestCase):
    def test_each_direction_is_delayed_and_order_is_kept(self):
        server = socket.create_server(("127.0.0.1", 0))
        port = server.getsockname()[1]

        def echo():
            connection, _ = server.accept()
            while data := connection.recv(65536):
                connection.sendall(data)
            connection.close()

        threading.Thread(target=echo, daemon=True).start()
        relay = managed.DelayRelay(port, 0.05)
        try:
            client = socket.create_connection(("127.0.0.1", relay.port))
            started = time.monotonic()
            for chunk in (b"one ", b"two ", b"three"):
                client.sendall(chunk)
            received = b""
            while len(received) < len(b"one two three"):
                received += client.recv(65536)
            elapsed = time.monotonic() - started
            self.assertEqual(received, b"one two three")
            self.assertGreaterEqual(elapsed, 0.1)
            self.assertLess(elapsed, 0.5)
            client.close()
        finally:
            relay.close()
            server.close()


if __name__ == "__main__":
    unittest.main()
