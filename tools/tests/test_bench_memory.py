import unittest

from harness import bench_memory, pipeflood
from harness.procmem import MIB


def result(peak_above, settled_above, answered=15):
    idle = int(3.2 * MIB)
    return pipeflood.FloodResult(
        connections=512, requests_per_connection=1000, rounds=15, idle_anon=idle,
        peak_anon=idle + int(peak_above * MIB), settled_anon=idle + int(settled_above * MIB),
        peak_rss=30 * MIB, status_answered=answered, status_asked=15, slowest_status_seconds=0.013,
        cpu_seconds=6.0,
    )


class RenderTests(unittest.TestCase):
    def test_a_run_within_both_goals_is_met(self):
        row = bench_memory.render([result(5.8, 0.6)], "abc1234", 10).splitlines()[-1]
        self.assertIn("| 512 × 1000 | 15 | 3.2 MiB | 9.0 MiB (+5.8) | 3.8 MiB (+0.6) |", row)
        self.assertIn("15/15, 13 ms | 400 ms | met", row)

    def test_each_goal_can_fail_the_row(self):
        for peak, settled, answered in ((8.5, 0.5, 15), (5.0, 2.5, 15), (5.0, 0.5, 14)):
            row = bench_memory.render([result(peak, settled, answered)], "abc1234", 10).splitlines()[-1]
            self.assertIn("**not met**", row)


if __name__ == "__main__":
    unittest.main()
