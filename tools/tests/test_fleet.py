import datetime
import unittest

from harness import goals
from harness.fleet import figures, render
from harness.fleet.__main__ import Settings, server_cpu_between

LOG = """2026-12-01 23:50:00.100 UTC [100] LOG:  database system is ready to accept connections
2026-12-01 23:50:01.000 UTC [201] LOG:  connection received: host=127.0.0.1 port=40000
2026-12-01 23:50:01.005 UTC [201] LOG:  connection authorized: user=postgres database=postgres application_name=dreamnet-healthd-001
2026-12-01 23:50:01.020 UTC [201] LOG:  disconnection: session time: 0:00:00.020 user=postgres database=postgres host=127.0.0.1 port=40000
2026-12-01 23:50:01.010 UTC [202] LOG:  connection received: host=127.0.0.1 port=40001
2026-12-01 23:50:01.012 UTC [202] LOG:  connection authorized: user=postgres database=postgres application_name=psql
2026-12-01 23:50:01.500 UTC [203] LOG:  connection received: host=127.0.0.1 port=40002
2026-12-01 23:50:01.501 UTC [203] FATAL:  the database system is starting up
2026-12-01 23:50:02.000 UTC [204] LOG:  connection received: host=127.0.0.1 port=40003
not a log line
2026-12-01 23:50:03.000 UTC [205] LOG:  connection received: host=127.0.0.1 port=40004
2026-12-01 23:50:03.001 UTC [205] LOG:  connection authorized: user=postgres database=postgres application_name=dreamnet-healthd-002
"""


def at(text):
    return datetime.datetime.strptime(text, "%H:%M:%S.%f").replace(2026, 12, 1, tzinfo=datetime.timezone.utc).timestamp()


class ConnectionLogTests(unittest.TestCase):
    def setUp(self):
        # 202 and 205 are still connected; 204 never sent its start-up packet and is gone.
        self.sessions, self.ready = figures.parse_connection_log(LOG.splitlines(), alive={202, 205})

    def test_sessions_their_names_and_ends(self):
        self.assertEqual(self.ready, [at("23:50:00.100")])
        self.assertEqual(len(self.sessions), 5)
        first, psql, refused, silent, open_ = self.sessions
        self.assertEqual((first["app"], first["end"]), ("dreamnet-healthd-001", at("23:50:01.020")))
        self.assertEqual(psql["app"], "psql")
        self.assertIsNone(psql["end"])  # no end in the log, and not known to be gone
        self.assertTrue(refused["refused"])
        self.assertEqual(silent["end"], at("23:50:02.000"))  # its last line
        self.assertIsNone(open_["end"])

    def test_the_fleet_is_named_or_nameless(self):
        self.assertEqual([s["app"] for s in figures.fleet_sessions(self.sessions)],
                         ["dreamnet-healthd-001", None, None, "dreamnet-healthd-002"])

    def test_most_at_once(self):
        sessions = [{"received": 0.0, "end": 2.0, "app": "a"}, {"received": 1.0, "end": 3.0, "app": "b"},
                    {"received": 2.0, "end": None, "app": "a"}, {"received": 5.0, "end": 6.0, "app": "a"}]
        self.assertEqual(figures.most_at_once(sessions, 0.0, 4.0), 2)
        self.assertEqual(figures.most_at_once(sessions, 5.0, 7.0), 2)  # the one without an end is still open
        self.assertEqual(figures.most_at_once(sessions, 3.5, 4.0), 1)
        self.assertEqual(figures.most_of_one(sessions, 0.0, 7.0), 2)
        self.assertEqual(figures.most_of_one(sessions, 0.0, 1.5), 1)


class BucketTests(unittest.TestCase):
    def test_buckets_of_100_ms_the_last_one_taking_the_rest(self):
        self.assertEqual(figures.buckets([10.0, 10.05, 10.3, 10.99, 12.5], 10.0, 10), [2, 0, 0, 1, 0, 0, 0, 0, 0, 2])

    def test_own_buckets_time_each_daemon_from_its_start(self):
        sessions = [{"app": "d1", "received": 5.02}, {"app": "d2", "received": 6.15}, {"app": "d1", "received": 4.97},
                    {"app": "d1", "received": 4.9}, {"app": "d3", "received": 5.0}, {"app": "d2", "received": 9.0}]
        self.assertEqual(figures.own_buckets(sessions, [("d1", 5.0), ("d2", 6.0)], 4), [2, 1, 0, 0])

    def test_busiest_over_mean(self):
        self.assertAlmostEqual(figures.busiest_over_mean([99, 0, 0, 0, 0, 0, 0, 0, 0, 1]), 9.9)
        self.assertAlmostEqual(figures.busiest_over_mean([1, 1, 1, 1]), 1.0)
        self.assertIsNone(figures.busiest_over_mean([0, 0]))
        self.assertEqual(figures.ratio_text(None, "none"), "none")

    def test_restart_row(self):
        r = {"up": [0.9, 1.0, 2.0], "received": 6, "buckets": [0, 3, 1, 2], "own": [3, 3, 0, 0], "interval_buckets": 2}
        self.assertEqual(render.restart_row("fresh", "splay", r),
                         "| fresh | splay | 1000 / 2000 | 6 | 3 | 1.5 | **2.0** | 2.0 | 0 3 1 2 | **2.0** / **1.0** | 3 3 0 0 |")
        empty = dict(r, buckets=[0, 0, 0, 0], own=[0, 0, 0, 0])
        self.assertIn("| **no connection yet** | no connection yet |", render.restart_row("session", "no splay", empty))
        self.assertIn("| **none** / **none** |", render.restart_row("session", "no splay", empty))


class IntegrityTests(unittest.TestCase):
    def test_lost_duplicated_and_extra(self):
        rows = figures.parse_event_rows("a 10 x1\nb 10 x2\nc 11 x3\nd 20 x4\ne 99 x5\n")
        self.assertEqual(rows[0], ("a", 10, "x1"))
        daemons = [(["a", "b", "c"], [10, 11]),   # all there
                   (["d", "f"], [20]),            # f lost
                   (["g", "g"], [30])]            # g lost, its line twice
        i = figures.integrity(daemons, rows)
        self.assertEqual(i, {"lines": 7, "rows": 5, "lost": 2, "duplicated": 1, "extra": 1, "mismatched": 2})

    def test_the_same_transition_in_two_rows_is_a_duplicate(self):
        i = figures.integrity([(["a", "b"], [1])], [("a", 1, "same"), ("b", 1, "same")])
        self.assertEqual((i["lost"], i["duplicated"], i["mismatched"]), (0, 1, 1))


class FleetFigureTests(unittest.TestCase):
    def results(self):
        restart = {"own_first": 1.4}
        return {"fresh": {"steady": {"server": 0.671}, "outage": {"all": 2.14, "never": 0, "most": 14},
                          "integrity": {"lost": 0, "duplicated": 0}, "restart-splay": restart, "restart-no splay": {"own_first": 8.1}},
                "session": {"steady": {"server": 0.047}, "outage": {"all": 2.02, "never": 0, "most": 100},
                            "integrity": {"lost": 0, "duplicated": 1}, "restart-splay": {"own_first": 1.3}}}

    def test_goal_figures(self):
        f = figures.goal_figures(self.results())
        self.assertAlmostEqual(f["fleet.session_server_percent"], 4.7)
        self.assertEqual((f["fleet.drain_s"], f["fleet.most_connections"], f["fleet.lost_or_duplicated"]), (2.14, 100, 1))
        self.assertEqual(f["fleet.splay_busiest_over_mean"], 1.4)  # without splay is not what the goal is about
        v = {x.goal.id: x.status for x in goals.evaluate(f, goals.FLEET_PARTS)}
        self.assertEqual(v, {"fleet.server": "met", "fleet.drain": "met", "fleet.integrity": "NOT met",
                             "fleet.connections": "met", "fleet.splay": "met"})

    def test_a_daemon_that_never_emptied_its_spool_fails_the_drain(self):
        r = self.results()
        r["fresh"]["outage"] = {"all": 3.0, "never": 1, "most": 10}
        self.assertEqual(figures.goal_figures(r)["fleet.drain_s"], float("inf"))

    def test_fresh_only_has_no_session_figure(self):
        r = self.results()
        del r["session"]
        self.assertNotIn("fleet.session_server_percent", figures.goal_figures(r))

    def test_steady_and_outage_rows(self):
        steady = {"server": 0.671, "opened": 100.0, "sampled": 8, "logged": 6, "one": 1, "daemons": 0.069, "pss": 376.0}
        self.assertEqual(render.steady_row("fresh", 100, steady, 0.0, 60.0, 1.0, "2.83 3.11 4.84", "2.83 3.02 4.70"),
                         "| fresh | 100 | **67.1 %** (6.71 ms per probe) | 100.0 | 8 / 6 | 1 | 6.9 % (0.69 ms per probe) | "
                         "376 (3.8 each) | 2.83 3.11 4.84 → 2.83 3.02 4.70 |")
        self.assertEqual(render.outage_row("fresh", 4.2, 100, [1.0, 1.68, 2.14], 0, 14, 11, 2, 0),
                         "| fresh | 4.2 | 100 | **2.14** | 1.68 | 0 | 14 / 11 | 2 | 0 |")
        self.assertEqual(render.outage_row("fresh", 4.2, 100, [], 100, 0, 0, 0, 0), "| fresh | 4.2 | 100 | never | | 100 | | | |")

    def test_report_headings_carry_the_goals(self):
        text = render.report("Measured.\n", 60, {"steady": [], "outage": [], "integrity": [], "restart": []}, [])
        self.assertIn("#### Steady, 60 s (goal: session mode ≤ 5 % of one core on the server)\n", text)
        self.assertIn("#### The whole fleet restarted at once (goal: busiest 100 ms bucket ≤ 2 × the mean)\n", text)
        self.assertNotIn("Goals checked", text)

    def test_server_cpu_between(self):
        self.assertAlmostEqual(server_cpu_between((1.0, {1: 0.5, 2: 0.1}), (1.4, {1: 0.7})), 0.4 + 0.7 - 0.6)

    def test_settings(self):
        s = Settings.from_argv(["/b", "/w", "5433", "/pg", "5", "10", "fresh session", "abc", "/w/report.md"])
        self.assertEqual((s.size, s.seconds, s.modes), (5, 10, ("fresh", "session")))
        with self.assertRaisesRegex(ValueError, "unknown connection mode"):
            Settings.from_argv(["/b", "/w", "5433", "/pg", "5", "10", "fresh pooled", "abc", "/w/r"])


if __name__ == "__main__":
    unittest.main()
