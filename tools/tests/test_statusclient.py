import unittest

from harness.statusclient import parse_reply


class ParseReplyTests(unittest.TestCase):
    def test_status_and_body_up_to_the_content_length(self):
        reply = b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}trailing"
        self.assertEqual(parse_reply(reply), (200, b"{}"))

    def test_a_body_without_content_length_runs_to_the_close(self):
        self.assertEqual(parse_reply(b"HTTP/1.1 503 Service Unavailable\r\n\r\n{\"ok\":false}"), (503, b"{\"ok\":false}"))

    def test_a_reply_cut_short_is_an_error(self):
        with self.assertRaisesRegex(ValueError, "incomplete reply"):
            parse_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n")
        with self.assertRaisesRegex(ValueError, "short body"):
            parse_reply(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n{}")

    def test_what_is_not_http_is_an_error(self):
        with self.assertRaisesRegex(ValueError, "reply"):
            parse_reply(b"SSH-2.0-OpenSSH\r\n\r\n")
        with self.assertRaisesRegex(ValueError, "reply"):
            parse_reply(b"\r\n\r\n")


if __name__ == "__main__":
    unittest.main()
