import math
import unittest

from harness import goals, sleepbench
from harness.sleepbench import difference, intersection, total, union


class IntervalTests(unittest.TestCase):
    def test_union_merges_overlapping_and_touching_and_drops_empty(self):
        self.assertEqual(union([(5, 7), (0, 2), (1, 3), (3, 4), (8, 8)]), [(0, 4), (5, 7)])
        self.assertEqual(union([]), [])

    def test_total_counts_overlaps_once(self):
        self.assertEqual(total([(0, 2), (1, 3), (10, 11)]), 4)

    def test_intersection(self):
        self.assertEqual(intersection([(0, 10), (20, 30)], [(5, 25)]), [(5, 10), (20, 25)])
        self.assertEqual(intersection([(0, 1)], [(2, 3)]), [])

    def test_difference(self):
        self.assertEqual(difference((0, 100), [(10, 20), (15, 30), (90, 120)]), [(0, 10), (30, 90)])
        self.assertEqual(difference((0, 100), [(-5, 0), (100, 110)]), [(0, 100)])
        self.assertEqual(difference((0, 100), [(-5, 200)]), [])


class TimelineTests(unittest.TestCase):
    def test_the_issues_timeline_and_a_shorter_one(self):
        full = sleepbench.Timeline()
        self.assertEqual((full.run_s, full.stretches, full.suspend_after_s, full.wake_every_s),
                         (900, [(0, 120), (540, 600)], 60, 300))
        short = sleepbench.Timeline(0.2)
        self.assertEqual((short.run_s, short.stretches, short.suspend_after_s, short.wake_every_s),
                         (180, [(0, 24), (108, 120)], 12, 60))

    def test_the_smallest_scale_is_the_daemons_least_wake_every(self):
        self.assertEqual(sleepbench.Timeline(sleepbench.MIN_SCALE).wake_every_s, 60)

    def test_durations_as_the_daemon_reads_them(self):
        self.assertEqual([sleepbench.duration(s) for s in (60, 300, 12, 2, 0.6, 10.5)],
                         ["1m", "5m", "12s", "2s", "600ms", "10500ms"])


def application_lines(start, stretches, every=1.0):
    """A `sent` line a second through each stretch (relative seconds), as read at `start` + t."""
    lines = [(start - 1, "connected 42")]
    number = 0
    for low, high in stretches:
        at = low
        while at < high:
            number += 1
            lines.append((start + at, f"sent {number}"))
            lines.append((start + at + 0.002, f"answered {number}"))
            at += every
    return lines


class AnalyseTests(unittest.TestCase):
    """A 900 s run at t0 = 1000: busy 0–120 and 540–600 (last queries at 119 and 599)."""

    t0 = 1000.0
    stretches = [(t0, t0 + 120), (t0 + 540, t0 + 600)]

    def analyse(self, standin):
        lines = application_lines(self.t0, [(0, 120), (540, 600)])
        return sleepbench.analyse(standin, lines, (self.t0, self.t0 + 900), self.stretches, 60, 2.0, 3.0)

    def test_a_stand_in_that_slept_through_the_quiet_time(self):
        t0 = self.t0
        standin = {
            "reported_at": t0 + 905,
            # Up since before the run; suspended 1 s after each last query + 60 s, woken by the application.
            "suspensions": [t0 + 180, t0 + 660],
            "wakes": [{"began": t0 + 540.05, "ready": t0 + 543.6}],
            "up": [{"from": t0 - 5, "to": t0 + 180.5}, {"from": t0 + 540.05, "to": t0 + 660.5}],
        }
        run = self.analyse(standin)
        # The quiet time: 900 less 0–179 and 540–659.
        self.assertAlmostEqual(run["quiet_s"], 900 - 179 - 119)
        self.assertAlmostEqual(run["caused_s"], 1.5 + 1.5)
        self.assertAlmostEqual(run["asleep_s"], run["quiet_s"] - 3)
        self.assertAlmostEqual(run["asleep_percent"], (602 - 3) / 602 * 100)
        self.assertEqual([round(p, 3) for p in run["past_timer_s"]], [1.0, 1.0])
        self.assertAlmostEqual(run["most_past_timer_over_interval"], 0.5)
        self.assertEqual(run["last_query_s"], [119, 599])
        self.assertEqual([w["by"] for w in run["wakes"]], ["application"])
        self.assertEqual(run["daemon_wakes"], 0)
        self.assertAlmostEqual(run["caused_bound_s"], 4.0)
        self.assertAlmostEqual(run["caused_over_bound"], 0.75)
        self.assertAlmostEqual(run["up_s"], 180.5 + 120.45)
        self.assertEqual(run["suspensions_s"], [180, 660])

    def test_a_daemons_wake_counts_against_the_quiet_time_and_widens_the_bound(self):
        t0 = self.t0
        standin = {
            "reported_at": t0 + 905,
            "suspensions": [t0 + 180, t0 + 484, t0 + 660],
            "wakes": [{"began": t0 + 420, "ready": t0 + 423.5}, {"began": t0 + 540.05, "ready": t0 + 543.6}],
            # The daemon's wake at 420 is up to 484.5; one more at 890, still up at the report.
            "up": [{"from": t0, "to": t0 + 180.5}, {"from": t0 + 420, "to": t0 + 484.5},
                   {"from": t0 + 540.05, "to": t0 + 660.5}, {"from": t0 + 890, "to": None}],
        }
        standin["wakes"].append({"began": t0 + 890, "ready": t0 + 893.5})
        run = self.analyse(standin)
        self.assertEqual(run["daemon_wakes"], 2)
        self.assertEqual([w["by"] for w in run["wakes"]], ["daemon", "application", "daemon"])
        # 1.5 after each stretch, 64.5 for the wake, and the last 10 s, cut at the end of the run.
        self.assertAlmostEqual(run["caused_s"], 1.5 + 64.5 + 1.5 + 10)
        self.assertAlmostEqual(run["caused_bound_s"], 2 * 2 + 2 * (3 + 60 + 5))
        self.assertEqual(run["caused"][1], (420, 484.5))
        # The suspension after the first stretch's last query is the first one after it.
        self.assertAlmostEqual(run["past_timer_s"][0], 1.0)

    def test_no_suspension_after_a_stretch_is_never(self):
        t0 = self.t0
        standin = {"reported_at": t0 + 905, "suspensions": [t0 + 180], "wakes": [],
                   "up": [{"from": t0, "to": t0 + 180.5}, {"from": t0 + 540, "to": None}]}
        run = self.analyse(standin)
        self.assertTrue(math.isinf(run["past_timer_s"][1]))
        self.assertTrue(math.isinf(run["most_past_timer_over_interval"]))

    def test_a_stretch_without_a_query_ends_at_its_end(self):
        t0 = self.t0
        standin = {"reported_at": t0 + 905, "suspensions": [], "wakes": [], "up": [{"from": t0, "to": None}]}
        run = sleepbench.analyse(standin, application_lines(t0, [(0, 120)]), (t0, t0 + 900), self.stretches, 60, 2.0, 3.0)
        self.assertEqual(run["last_query_s"], [119, None])
        self.assertAlmostEqual(run["quiet_s"], 900 - 179 - 120)


class SmallFiguresTests(unittest.TestCase):
    def test_last_query_is_the_last_sent_line_within_the_window(self):
        lines = [(1.0, "connected 7"), (2.0, "sent 1"), (2.1, "answered 1"), (3.0, "sent 2"), (9.0, "sent 3")]
        self.assertEqual(sleepbench.last_query(lines, 0, 5), 3.0)
        self.assertIsNone(sleepbench.last_query(lines, 4, 8))

    def test_unhealthy_transitions(self):
        self.assertEqual(sleepbench.unhealthy_transitions([{"from": "starting", "to": "healthy"},
                                                           {"from": "healthy", "to": "unhealthy"}]), 1)

    def test_phase_seconds_last_until_the_next_sample(self):
        samples = [(0.0, "following"), (1.0, "following"), (2.0, "resting"), (5.0, "asleep")]
        self.assertEqual(sleepbench.phase_seconds(samples, 10.0), {"following": 2.0, "resting": 3.0, "asleep": 5.0})
        self.assertEqual(sleepbench.phase_seconds([], 10.0), {})

    def test_detection_bound_is_the_daemons(self):
        # DaemonConfiguration.detectionBound: max(interval, connect + timeout) × fall + connect + timeout.
        self.assertAlmostEqual(sleepbench.detection_bound({"interval_ms": 2000, "timeout_ms": 1000,
                                                           "connect_timeout_ms": 3000, "fall": 2}), 12.0)
        self.assertAlmostEqual(sleepbench.detection_bound({"interval_ms": 5000, "timeout_ms": 1000,
                                                           "connect_timeout_ms": 1000, "fall": 3}), 17.0)


def a_run(**changes):
    run = {"run_s": 900, "quiet_s": 602.0, "asleep_s": 599.0, "asleep_percent": 99.5, "up_s": 300.0, "caused_s": 3.0,
           "caused": [(179.0, 180.5), (659.0, 660.5)], "caused_bound_s": 4.0, "caused_over_bound": 0.75,
           "last_query_s": [119.0, 599.0], "past_timer_s": [1.0, 1.0], "most_past_timer_over_interval": 0.5,
           "suspensions_s": [180.0, 660.0], "wakes": [{"at_s": 540.0, "took_s": 3.6, "by": "application"}],
           "daemon_wakes": 0, "unhealthy": 0, "transitions": 1, "phases": {"following": 180.0, "asleep": 720.0},
           "application": {"sent": 180, "answered": 180, "errors": 2, "lost": 2}}
    run.update(changes)
    return run


FAILURE = {"refused_s": 0.05, "held_s": 10.1, "killed_s": 4.2, "reasons": ["refused sqlstate", "held timeout", "killed refused"],
           "wake_bound_s": 11.0, "detection_bound_s": 12.0, "unhealthy": 3, "nudges": {"refused": 1, "held": 0}}


class GoalTests(unittest.TestCase):
    def test_figures_name_every_sleep_goal(self):
        named = sleepbench.figures(a_run(), a_run(caused_over_bound=0.9), FAILURE)
        for goal in goals.GOALS:
            if goal.part in goals.SLEEP_PARTS:
                self.assertIn(goal.figure, named, goal.id)

    def test_verdicts(self):
        named = sleepbench.figures(a_run(asleep_percent=94.0), a_run(caused_over_bound=0.9, unhealthy=1), FAILURE)
        verdicts = {v.goal.id: v.met for v in goals.evaluate(named, goals.SLEEP_PARTS)}
        self.assertEqual(verdicts, {"sleep.asleep": False, "sleep.following": True, "sleep.off.unhealthy": True,
                                    "sleep.caused": True, "sleep.5m.unhealthy": False, "sleep.failed_wake": True,
                                    "sleep.outage": True})
        self.assertAlmostEqual(named["sleep_failure.wake_over_bound"], 10.1 / 11)
        self.assertAlmostEqual(named["sleep_failure.kill_over_bound"], 4.2 / 12)


class RenderTests(unittest.TestCase):
    def test_the_report_has_the_goal_table_and_a_heading_per_part(self):
        timeline = sleepbench.Timeline()
        verdicts = goals.evaluate(sleepbench.figures(a_run(), a_run(), FAILURE), goals.SLEEP_PARTS)
        text = sleepbench.render(sleepbench.header(timeline, "2026-12-05 10:00 UTC", "abc1234", "PostgreSQL 15.18"),
                                 timeline, a_run(), a_run(), FAILURE, verdicts)
        self.assertIn("Measured 2026-12-05 10:00 UTC at commit abc1234 by `scripts/bench-sleep`, on ", text)
        self.assertIn("| sleep-off | asleep ≥ 95 % of the quiet time | `sleep_off.asleep_percent` ≥ 95 % | 99.5 % | met |", text)
        for part in goals.SLEEP_PARTS:
            self.assertIn(f"({goals.heading_clause(part)})\n", text)
        self.assertIn("#### `wake_every off`, 15 min (", text)
        self.assertIn("#### `wake_every 5m`, 15 min (", text)
        self.assertIn("| asleep within it | **599.0 s, 99.50 %** |", text)
        self.assertIn("last query at 119.0 s, suspended 1.0 s past it + suspend_after", text)
        self.assertIn("540 s (application, ready in 3.6 s)", text)
        self.assertIn("**10.10 s** (the same bound)", text)
        self.assertIn("before `healthy` | refused 1, held 0 |", text)

    def test_a_short_check_says_so(self):
        head = sleepbench.header(sleepbench.Timeline(0.2), "2026-12-05 10:00 UTC", "abc1234", "PostgreSQL 15.18")
        self.assertIn("at scale 0.2 (a short check, not the figures of record)", head)
        self.assertIn("3 min each, the application busy 0–24 s and 108–120 s", head)
        full = sleepbench.header(sleepbench.Timeline(), "2026-12-05 10:00 UTC", "abc1234", "PostgreSQL 15.18")
        self.assertIn("15 min each, the application busy 0–2 min and 9–10 min", full)


if __name__ == "__main__":
    unittest.main()
