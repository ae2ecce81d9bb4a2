import unittest

from harness import procmem

SAMPLE = """Name:\tdreamnet-health
VmPeak:\t  400000 kB
VmRSS:\t   24576 kB
RssAnon:\t    3380 kB
RssFile:\t   21196 kB
RssShmem:\t       0 kB
Threads:\t5
"""


class ParseStatusTests(unittest.TestCase):
    def test_reads_the_resident_parts_in_bytes(self):
        memory = procmem.parse_status(SAMPLE)
        self.assertEqual(memory.rss, 24576 * 1024)
        self.assertEqual(memory.anon, 3380 * 1024)
        self.assertEqual(memory.file, 21196 * 1024)
        self.assertAlmostEqual(memory.rss_mib, 24.0)

    def test_a_kernel_thread_without_memory_lines_is_an_error(self):
        with self.assertRaisesRegex(ValueError, "RssAnon"):
            procmem.parse_status("Name:\tkthreadd\nVmRSS:\t0 kB\n")

    def test_an_unknown_unit_is_an_error(self):
        with self.assertRaisesRegex(ValueError, "unit"):
            procmem.parse_status("VmRSS:\t1 MB\nRssAnon:\t1 kB\nRssFile:\t1 kB\n")


class ParseCPUTests(unittest.TestCase):
    def test_reads_user_and_system_time_after_a_name_with_spaces(self):
        stat = "4242 (dreamnet (x) y) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 50 0 0 20 0 5 0"
        self.assertAlmostEqual(procmem.parse_cpu_seconds(stat, 100), 2.0)

    def test_adds_the_reaped_childrens_time_when_asked(self):
        stat = "4242 (postgres) S 1 4242 4242 0 -1 4194560 100 0 0 0 150 50 300 100 20 0 5 0"
        self.assertAlmostEqual(procmem.parse_cpu_seconds(stat, 100), 2.0)
        self.assertAlmostEqual(procmem.parse_cpu_seconds(stat, 100, children=True), 6.0)


if __name__ == "__main__":
    unittest.main()
