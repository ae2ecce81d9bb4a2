import math
import os
import re
import unittest

from harness import goals
from harness.bench import deadline, detection, replay, startup, steady, load, cost

BENCHMARKS = os.path.join(os.path.dirname(__file__), "..", "..", "BENCHMARKS.md")


def benchmarks_text():
    with open(BENCHMARKS, encoding="utf-8") as f:
        return f.read()


class DocumentTests(unittest.TestCase):
    def setUp(self):
        text = benchmarks_text()
        goals_table = text.split("## Goals", 1)[1].split("\n<!--", 1)[0]
        headings = "\n".join(re.findall(r"^#{3,4} .*$", text, re.M))
        self.goals_table, self.headings = goals_table, headings

    def test_every_goal_is_in_the_goals_table_or_a_heading(self):
        for goal in goals.GOALS:
            self.assertTrue(goal.text in self.goals_table or goal.text in self.headings,
                            f"{goal.id}: {goal.text!r} is in neither BENCHMARKS.md's goals table nor its headings")

    def test_the_fleets_heading_clauses_are_the_documents(self):
        for part in goals.FLEET_PARTS:
            self.assertIn(f"({goals.heading_clause(part)})\n", self.headings + "\n", part)

    def test_the_sleep_benchs_heading_clauses_are_the_documents(self):
        for part in goals.SLEEP_PARTS:
            self.assertIn(f"({goals.heading_clause(part)})\n", self.headings + "\n", part)

    def test_the_headings_the_parts_write_are_the_documents(self):
        for title in (deadline.title(), steady.title(60), load.title(5), detection.title(), replay.title(),
                      startup.title(), cost.title()):
            self.assertIn(f"### {title}\n", self.headings + "\n")


class ShapeTests(unittest.TestCase):
    def test_ids_and_figures_are_unique_and_parts_known(self):
        self.assertEqual(len({g.id for g in goals.GOALS}), len(goals.GOALS))
        self.assertEqual(len({g.figure for g in goals.GOALS}), len(goals.GOALS))
        for g in goals.GOALS:
            self.assertIn(g.part, goals.BENCH_PARTS + goals.FLEET_PARTS + goals.SLEEP_PARTS, g.id)
            self.assertIn(g.comparison, ("<=", "<", ">=", "==", "within", ""), g.id)

    def test_heading_clause_says_goal_or_goals(self):
        self.assertEqual(goals.heading_clause("replay"), "goal: ≥ 5 000 events/s")
        self.assertEqual(goals.heading_clause("cost"), "goals: kept session ≤ 1/10 of a fresh connection; "
                         "the daemon's own CPU per routine probe ≤ 0.2 ms in session mode")
        with self.assertRaises(KeyError):
            goals.heading_clause("nothing")


class EvaluateTests(unittest.TestCase):
    def by_id(self, verdicts):
        return {v.goal.id: v for v in verdicts}

    def test_met_and_not_met(self):
        v = self.by_id(goals.evaluate({"replay.events_per_s": 11911.0, "startup.median_ms": 140.0}, ["replay", "startup"]))
        self.assertIs(v["replay.rate"].met, True)
        self.assertEqual(v["replay.rate"].status, "met")
        self.assertIs(v["startup.ready"].met, False)
        self.assertEqual(v["startup.ready"].status, "NOT met")

    def test_bounds_are_inclusive_where_the_goal_says_so(self):
        v = self.by_id(goals.evaluate({"replay.events_per_s": 5000.0, "steady.status_over_isready": 0.5,
                                       "fleet.splay_busiest_over_mean": 2.0}, goals.BENCH_PARTS + goals.FLEET_PARTS))
        self.assertTrue(v["replay.rate"].met)
        self.assertTrue(v["steady.status"].met)
        self.assertTrue(v["fleet.splay"].met)

    def test_a_missing_figure_is_no_verdict_not_a_pass(self):
        v = self.by_id(goals.evaluate({}, ["replay"]))
        self.assertIsNone(v["replay.rate"].met)
        self.assertEqual(v["replay.rate"].status, "no figure")

    def test_only_the_parts_that_ran(self):
        ids = [v.goal.id for v in goals.evaluate({"replay.events_per_s": 1.0}, ["cost"])]
        self.assertEqual(ids, ["cost.session", "cost.own"])

    def test_a_range_within_the_window(self):
        g = next(g for g in goals.GOALS if g.id == "deadline.window")
        self.assertTrue(goals.check(g, (1000.4, 1003.8)))
        self.assertFalse(goals.check(g, (1000.4, 1058.3)))
        self.assertFalse(goals.check(g, (999.0, 1001.0)))

    def test_never_and_nan_fail(self):
        v = self.by_id(goals.evaluate({"fleet.drain_s": math.inf, "cost.session_over_fresh": math.nan}, goals.BENCH_PARTS + goals.FLEET_PARTS))
        self.assertFalse(v["fleet.drain"].met)
        self.assertFalse(v["cost.session"].met)

    def test_a_goal_without_a_bound_is_measured(self):
        v = self.by_id(goals.evaluate({"load.probes_per_second": 0.98}, ["load"]))
        self.assertIsNone(v["load.cadence"].met)
        self.assertEqual(v["load.cadence"].status, "measured")

    def test_table_and_lines(self):
        verdicts = goals.evaluate({"replay.events_per_s": 4000.0}, ["replay", "startup"])
        table = goals.table(verdicts)
        self.assertIn("| replay | ≥ 5 000 events/s | `replay.events_per_s` ≥ 5,000 events/s | 4,000 events/s | **NOT met** |", table)
        self.assertIn("| startup | ≤ 100 ms plus the first probe | `startup.median_ms` ≤ 100 ms | — | no figure |", table)
        self.assertEqual(goals.lines(verdicts, "bench")[0],
                         "bench: goal replay.rate (≥ 5 000 events/s): NOT met, 4,000 events/s against ≥ 5,000 events/s")

    def test_format_value(self):
        self.assertEqual(goals.format_value(1.66, "×"), "1.66 ×")
        self.assertEqual(goals.format_value(0.2, "ms"), "0.2 ms")
        self.assertEqual(goals.format_value(11911.3, "events/s"), "11,911 events/s")
        self.assertEqual(goals.format_value((1000.4, 1003.8), "ms"), "1000.4–1003.8 ms")
        self.assertEqual(goals.format_value(math.inf, "s"), "never")
        self.assertEqual(goals.format_value(3, "events"), "3 events")


if __name__ == "__main__":
    unittest.main()
