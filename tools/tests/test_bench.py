import threading
import unittest

from harness.bench import common, cost, deadline, detection, load, procstat, render, replay, startup, steady

STATUS = """Name:\tdreamnet-healthd
VmHWM:\t   24780 kB
VmRSS:\t   24576 kB
RssAnon:\t    3380 kB
RssFile:\t   21196 kB
"""
SMAPS = """55d0c0000000-7ffd00000000 ---p 00000000 00:00 0                          [rollup]
Rss:               24576 kB
Pss:               19763 kB
Pss_Anon:           3380 kB
"""


class ProcStatTests(unittest.TestCase):
    def test_memory_in_mib_from_status_and_smaps_rollup(self):
        m = procstat.parse_memory(STATUS, SMAPS)
        self.assertEqual(m, {"VmHWM": 24780 / 1024, "VmRSS": 24.0, "RssAnon": 3380 / 1024, "RssFile": 21196 / 1024,
                             "Pss": 19763 / 1024})

    def test_schedstat_is_nanoseconds(self):
        self.assertAlmostEqual(procstat.parse_schedstat("1234567890 5000 12\n"), 1.23456789)

    def test_loadavg_and_cpu_model(self):
        self.assertEqual(procstat.parse_loadavg("2.83 3.11 4.84 3/412 9876\n"), ["2.83", "3.11", "4.84"])
        cpuinfo = "processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC\nflags\t\t: fpu\n\nprocessor\t: 1\nmodel name\t: AMD EPYC\n"
        self.assertEqual(procstat.parse_cpu_model(cpuinfo), "AMD EPYC")

    def test_own_cpu_delta_falls_back_to_ticks_when_a_thread_came_or_went(self):
        a = procstat.ProcessCpu((10, 11), 1.000, 1.00)
        same = procstat.ProcessCpu((10, 11), 1.250, 1.30)
        other = procstat.ProcessCpu((10, 12), 1.250, 1.30)
        self.assertAlmostEqual(procstat.own_cpu_delta(a, same), 0.25)
        self.assertAlmostEqual(procstat.own_cpu_delta(a, other), 0.30)
        self.assertEqual(procstat.accounting(a, same), "schedstat")
        self.assertEqual(procstat.accounting(a, other), "ticks")


class CommonTests(unittest.TestCase):
    ARGV = ["/b", "/w", "5433", "/pg", "60", "5", "abc123", "replay,startup", "30", "200ms"]

    def test_settings_from_argv(self):
        s = common.Settings.from_argv(self.ARGV)
        self.assertEqual((s.pg_port, s.steady_seconds, s.cost_seconds), (5433, 60, 30))
        self.assertEqual(s.parts, ["replay", "startup"])
        self.assertFalse(s.want("cost"))
        self.assertEqual(s.url, "postgresql://postgres@127.0.0.1:5433/postgres")
        self.assertEqual(s.daemon_bin, "/b/dreamnet-healthd")
        self.assertAlmostEqual(s.cost_interval_s, 0.2)
        self.assertEqual(common.Settings.from_argv(self.ARGV[:7] + ["all"] + self.ARGV[8:]).parts, list(common.PARTS))

    def test_settings_refuse_unknown_parts_and_wrong_counts(self):
        with self.assertRaisesRegex(ValueError, "unknown part: nope"):
            common.Settings.from_argv(self.ARGV[:7] + ["replay,nope"] + self.ARGV[8:])
        with self.assertRaisesRegex(ValueError, "usage"):
            common.Settings.from_argv(self.ARGV[:5])

    def test_parse_interval(self):
        self.assertAlmostEqual(common.parse_interval("200ms"), 0.2)
        self.assertAlmostEqual(common.parse_interval("1s"), 1.0)
        self.assertAlmostEqual(common.parse_interval("2"), 2.0)

    def test_stats_is_min_median_max(self):
        self.assertEqual(common.stats([3, 1, 2, 10]), (1, 2.5, 10))

    def test_per_call(self):
        self.assertAlmostEqual(common.per_call_ms({"cpu": 0.6, "calls": 60}), 10.0)
        self.assertEqual(common.per_call_ms(common.new_tally()), 0.0)

    def test_paced_counts_its_calls_and_stops(self):
        counter, stop = [0], threading.Event()
        run = common.paced(lambda: None if counter[0] < 3 else stop.set(), 0.001, counter)
        run(stop)
        self.assertEqual(counter[0], 4)


class DeadlineTests(unittest.TestCase):
    def test_row_counts_the_probes_in_the_window(self):
        row = deadline.deadline_row("`pg_isready -t 1`", "SIGSTOPped postmaster", [1001.0, 1019.9, 1020.5, 2012.1])
        self.assertEqual(row, "| SIGSTOPped postmaster | `pg_isready -t 1` | 4 | 1001.0 | 1020.2 | 2012.1 | 2/4 in 1.000–1.020 s  |")

    def test_row_of_runs_killed_at_ten_seconds(self):
        self.assertEqual(deadline.deadline_row("psql", "hung query", [None, None, None]),
                         "| hung query | psql | 3 | | | | never ended by itself: killed at 10 s  |")
        row = deadline.deadline_row("psql", "hung query", [1001.0, None], "(note)")
        self.assertTrue(row.endswith("| 1/2 in 1.000–1.020 s; 1 never ended (killed at 10 s) (note) |"), row)

    def test_probe_range_covers_the_daemon_and_the_clis_own_clock(self):
        results = [{"ctl": ([1001.1, 1001.6], [1016.1, 1026.8]), "daemon": [1000.5]},
                   {"ctl": ([1003.1], [1058.3]), "daemon": [1001.2]}]
        self.assertEqual(deadline.probe_range(results), (1000.5, 1003.1))
        self.assertEqual(deadline.probe_range([{"ctl": ([None], []), "daemon": [1000.0]}]), (1000.0, 10000.0))

    def test_a_fault_has_six_rows(self):
        results = {"ctl": ([1001.0], [1015.0]), "daemon": [1001.0], "pg_isready": [13.3], "psql": [None], "check_pgsql": [13.1]}
        rows = deadline.suite_rows("hung query", results, hung=True)
        self.assertEqual(len(rows), 6)
        self.assertIn("(connects only: a hung query looks healthy to it)", rows[3])
        self.assertNotIn("connects only", rows[4])


class DetectionTests(unittest.TestCase):
    def test_bound(self):
        self.assertEqual(detection.detection_bound(1000, 1000, 2), 3050)
        self.assertEqual(detection.detection_bound(1000, 1000, 2, "session", new_connections_only=False), 3050)
        self.assertEqual(detection.detection_bound(1000, 1000, 2, "session", new_connections_only=True), 8050)

    def test_row_says_met_or_missed(self):
        self.assertEqual(detection.detection_row("postmaster SIGSTOPped", "fresh", [2235.2, 2511.0, 2787.4], 3050),
                         "| postmaster SIGSTOPped | fresh | 3 | 2235 | 2511 | 2787 | 3050 | met |")
        self.assertTrue(detection.detection_row("x", "fresh", [3051.0], 3050).endswith("| MISSED |"))


class LoadTests(unittest.TestCase):
    WRK = """Running 5s test @ http://127.0.0.1:8080/health
  2 threads and 64 connections
  Latency Distribution
     50%  640.00us
     75%    1.20ms
     90%    2.50ms
     99%    4.17ms
  414630 requests in 5.00s, 100.00MB read
Requests/sec:  82926.00
Transfer/sec:     20.00MB
"""

    def test_parse_wrk_in_milliseconds(self):
        self.assertEqual(load.parse_wrk(self.WRK), {"rps": 82926.0, "p50_ms": 0.64, "p99_ms": 4.17})
        self.assertEqual(load.parse_wrk(self.WRK.replace("4.17ms", "1.5s"))["p99_ms"], 1500.0)

    def test_row_and_figures(self):
        ours, theirs = {"rps": 52714.0, "p50_ms": 1.02, "p99_ms": 4.96}, {"rps": 82926.0, "p50_ms": 0.64, "p99_ms": 4.17}
        self.assertEqual(load.load_row("TCP", 64, ours, theirs, 6, 0, 5.04, 104.2, 105.9),
                         "| TCP | 64 | 52,714 | 82,926 | **0.64** | 1.020 / 4.960 | 0.640 / 4.170 | 6 in 5.0 s, 0 failed | 104 / 106 |")
        runs = [{"connections": 1, "ours": {"rps": 16.0, "p99_ms": 0.1}, "theirs": {"rps": 14.0}, "probes": 6, "elapsed": 6.0},
                {"connections": 64, "ours": {"rps": 5.0, "p99_ms": 2.4}, "theirs": {"rps": 10.0}, "probes": 4, "elapsed": 8.0}]
        self.assertEqual(load.figures(runs), {"load.min_ratio": 0.5, "load.probes_per_second": 0.5, "load.p99_64_ms": 2.4})


class ReplayAndStartupTests(unittest.TestCase):
    def test_replay_section(self):
        title, body = replay.section(10_001, 10_001, 0.84)
        self.assertEqual(title, "5. Spool replay (goal: ≥ 5 000 events/s)")
        self.assertTrue(body.endswith("| 10,001 | 10,001 | 0.84 | **11,906** |"), body)

    def test_startup_takes_the_probe_off_the_restarts(self):
        runs = [(33.8, 4.5, "first start ever"), (28.0, 4.0, "restart"), (30.0, 5.0, "restart"), (26.0, 4.4, "restart")]
        s = startup.summary(runs)
        self.assertEqual(s["restarts"], 3)
        self.assertEqual(s["without_probe"][1], 24.0)
        _, body = startup.section(runs)
        self.assertIn("| restart (state kept) | 3 | 28.0 | 4.4 | 21.6 / 24.0 / 25.0 |", body)
        self.assertIn("| first start ever (spool created, first event stored) | 1 | 33.8 | 4.5 | 29.3 |", body)


def window(server, cgroup=None, live=0.0, sessions=60, elapsed=30.0, kept_rate=0.0):
    return {"server": server, "cgroup": cgroup, "live": live, "sessions": sessions, "elapsed": elapsed, "kept_rate": kept_rate}


class CostTests(unittest.TestCase):
    def test_per_probe_takes_off_the_idle_server(self):
        self.assertAlmostEqual(cost.per_probe(1.0, 0.01, 30.0, 140), (1.0 - 0.3) / 140 * 1000)
        self.assertEqual(cost.per_probe(0.1, 0.01, 30.0, 10), 0.0)

    def test_window_figures_take_off_what_live_backends_had_before(self):
        w = cost.window_figures(10.0, 10.5, {1: 0.2, 2: None}, {1: 0.3, 3: 0.1}, 4, 30.0, None, {})
        self.assertAlmostEqual(w["server"], 0.5 + 0.4 - 0.2)
        self.assertAlmostEqual(w["live"], 0.4 - 0.2)

    def test_kept_rate_counts_only_the_long_lived(self):
        spans = {1: [0.0, 1.0, 10.0, 1.02], 2: [0.0, 0.0, 2.0, 0.5]}
        self.assertAlmostEqual(cost.kept_rate(spans), 0.002)

    def test_one_in(self):
        self.assertEqual(cost.one_in(1 / 28), "1/28")
        self.assertEqual(cost.one_in(0), "too little to measure in this window")

    def test_rows_and_figures(self):
        results = {"fresh": {**cost.tool_result(window(1.5), 150, 0.0, None), "own_ms": 0.7, "connection": "fresh"},
                   "session": {**cost.tool_result(window(0.05, kept_rate=0.0005), 150, 0.0, None), "own_ms": 0.15, "connection": "session"}}
        self.assertEqual(cost.cost_row("fresh", results["fresh"], 10.0, "0.700"), "| fresh | 150 | 60 | **10.00** |  | 0.000 | 1.00 | 0.700 |")
        figures = cost.figures(results)
        self.assertAlmostEqual(figures["cost.session_over_fresh"], 0.05 / 1.5)
        self.assertEqual(figures["cost.session_own_ms"], 0.15)
        self.assertEqual(cost.figures({"fresh": results["fresh"]}), {})


def steady_result(**changes):
    memory = {"VmRSS": 23.8, "VmHWM": 23.8, "RssAnon": 3.3, "Pss": 19.3}
    windows = {"fresh": {"probes": 60, "cpu_ms": 43.5, "accounting": "cgroup", "memory": memory,
                         "floor": {"probes": 60, "failures": 0, "cpu_ms": 26.22}, "connection": "fresh"}}
    tally = lambda calls, cpu: {**common.new_tally(), "calls": calls, "cpu": cpu, "maxrss": 26112}
    fields = dict(seconds=60, modes=["fresh"], windows=windows, isready=tally(180, 1.32), ctl_status=tally(60, 0.72),
                  ctl_probe=tally(60, 0.70), scrapes=60, exporter_cpu_s=0.3,
                  exporter_memory={"VmRSS": 16.6, "VmHWM": 16.6, "RssAnon": 6.8, "Pss": 15.8},
                  back_to_back={"probes": 2000, "cpu_ms": 700.0}, sizes={"`dreamnet-healthd`": (20.4, 51.0), "`pg_isready`": (0.1, None)})
    fields.update(changes)
    return steady.SteadyResult(**fields)


class SteadyTests(unittest.TestCase):
    def test_figures(self):
        f = steady.figures(steady_result())
        self.assertAlmostEqual(f["steady.fresh_over_floor"], (43.5 / 60) / (26.22 / 60))
        self.assertAlmostEqual(f["steady.status_over_isready"], 12.0 / (1.32 / 180 * 1000))
        self.assertAlmostEqual(f["steady.probe_over_isready_ms"], 0.70 / 60 * 1000 - 1.32 / 180 * 1000)
        self.assertAlmostEqual(f["steady.pss_over_exporter"], 19.3 / 15.8)
        self.assertEqual(f["steady.anon_mib"], 3.3)

    def test_rows_and_verdicts(self):
        r = steady_result()
        rows = steady.rows(r)
        self.assertEqual(rows[1], "| dreamnet-healthd, a fresh connection per probe | 60 | **0.725** | **1.66** | 23.8 / 23.8 | 3.3 | 19.3 |")
        self.assertIn("| `dreamnet-healthctl status` (a process each time) | 60 | **12.000** | | 25.5 (peak) | | |", rows)
        verdicts = steady.verdicts(r)
        self.assertEqual(verdicts[0], "CPU per fresh-connection probe: 1.66 × the floor beside it (goal ≤ 1.5: NOT met).")
        self.assertIn("anonymous 3.3 MiB (goal ≤ 5: met)", verdicts[-1])
        self.assertIn("`dreamnet-healthctl status`: 12.00 ms per call against 7.33 for the `pg_isready` binary (goal ≤ 0.5 ×: NOT met)", verdicts[1])
        self.assertIn("PSS 19.3 MiB against the exporter's 15.8 (goal ≤: NOT met)", verdicts[-1])

    def test_what_the_calls_cost_before_their_work(self):
        tally = lambda calls, cpu: {**common.new_tally(), "calls": calls, "cpu": cpu, "maxrss": 10240}
        starts = {"isready_version": tally(60, 0.30), "ctl_version": tally(60, 0.24), "ctl_hop": tally(60, 0.18),
                  "probe_program": tally(60, 0.54)}
        r = steady_result(starts=starts)
        self.assertIn("| `dreamnet-healthctl --version`: the CLI's binary and its argument parser, nothing asked | 60 | 4.000 | | 10.0 (peak) | | |",
                      steady.rows(r))
        verdicts = " ".join(steady.verdicts(r))
        self.assertIn("`pg_isready --version` 5.00 ms, `dreamnet-healthctl --version` 4.00 ms (0.55 × `pg_isready`), "
                      "so `status` does its request and its answer in 8.00 ms.", verdicts)
        self.assertIn("the hop to its program (3.00 ms, `/bin/true` included) and the program (9.00 ms alone, +1.67 ms against `pg_isready`)",
                      verdicts)
        # A run without them (an older binary) says nothing of them.
        self.assertNotIn("--version", " ".join(steady.rows(steady_result())) + " ".join(steady.verdicts(steady_result())))

    def test_sizes_table(self):
        self.assertEqual(steady.sizes_table({"`dreamnet-healthd`": (20.4, 51.0), "`pg_isready`": (0.1, None)}),
                         "| binary | as the package installs it | as built |\n|---|---|---|\n"
                         "| `dreamnet-healthd` | 20.4 | 51.0 |\n| `pg_isready` | 0.10 | |")

    def test_section_title_carries_the_goals(self):
        title, body = steady.section(steady_result())
        self.assertIn("(goals: a fresh-connection probe ≤ 1.5 × libpq's floor;", title)
        self.assertIn("The floor without pauses (2 000 probes back to back, as a loop in a benchmark would run it): 0.350 ms", body)


class RenderTests(unittest.TestCase):
    def test_report_has_the_header_the_goals_and_the_sections(self):
        from harness import goals
        head = render.header("2026-12-02", "98451fe", "2 cores, AMD EPYC")
        verdicts = goals.evaluate({"replay.events_per_s": 11911.0}, ["replay"])
        text = render.render(head, [("5. Spool replay", "| table |")], verdicts)
        self.assertTrue(text.startswith("Measured 2026-12-02 at commit 98451fe by `scripts/bench`, on 2 cores, AMD EPYC. "))
        self.assertIn("\nGoals checked in this run", text)
        self.assertIn("| 11,911 events/s | met |", text)
        self.assertTrue(text.endswith("### 5. Spool replay\n\n| table |\n\n"))
        self.assertNotIn("Goals checked", render.render(head, [("x", "y")]))


if __name__ == "__main__":
    unittest.main()
