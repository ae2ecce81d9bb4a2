import unittest

from harness import memcurve
from harness.procmem import MIB


def life(rss_mib, anon_mib=None, every=2.0):
    anon_mib = anon_mib or [4] * len(rss_mib)
    return [memcurve.Sample(i * every, int(r * MIB), int(a * MIB), int((r - a) * MIB))
            for i, (r, a) in enumerate(zip(rss_mib, anon_mib))]


class GrowthTests(unittest.TestCase):
    def test_a_steady_life_passes(self):
        verdict = memcurve.growth(life([24, 24.5, 24, 25, 24, 24.2, 24.1, 24.3, 24.4, 24]), 120)
        self.assertFalse(verdict.violates)

    def test_the_issue_s_growth_fails(self):
        # 26.3 -> 44.7 MiB over the longest life of a 1200 s soak before the bound.
        samples = life([26.3] * 30 + [35] * 30 + [44.7] * 30)
        verdict = memcurve.growth(samples, 484)
        self.assertTrue(verdict.violates)
        self.assertAlmostEqual(verdict.rss_growth / MIB, 18.4, places=1)

    def test_more_than_ten_percent_fails_and_a_small_set_has_a_floor(self):
        self.assertTrue(memcurve.growth(life([30] * 10 + [33.5] * 10 + [33.5] * 10), 100).violates)
        self.assertFalse(memcurve.growth(life([10] * 10 + [11.9] * 20), 100).violates)
        self.assertTrue(memcurve.growth(life([10] * 10 + [12.5] * 20), 100).violates)

    def test_a_short_life_is_not_judged(self):
        self.assertIsNone(memcurve.growth(life([24] * 30), 59))
        self.assertIsNone(memcurve.growth(life([24] * 8), 600))


class CurveTests(unittest.TestCase):
    def test_buckets_hold_equal_counts_and_report_medians(self):
        rows = memcurve.curve(life([20, 20, 30, 30], [2, 2, 3, 3]), buckets=2)
        self.assertEqual([row[0] for row in rows], [0.0, 4.0])
        self.assertEqual([row[1] for row in rows], [20.0, 30.0])
        self.assertEqual([row[2] for row in rows], [2.0, 3.0])
        self.assertEqual([round(row[3]) for row in rows], [18, 27])

    def test_fewer_samples_than_buckets(self):
        self.assertEqual(len(memcurve.curve(life([20, 21]), buckets=10)), 2)
        self.assertEqual(memcurve.curve([]), [])


if __name__ == "__main__":
    unittest.main()
