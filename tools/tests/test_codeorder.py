import errno
import os
import subprocess
import tempfile
import unittest

from harness import codeorder

CALLGRIND = """\
version: 1
ob=(1) /tmp/work/dreamnet-healthd
fl=(1) ???
fn=(1) $s10HealthCore9ProbeLoopV4tick
0x10 3
cob=(2) /usr/lib/x86_64-linux-gnu/libc.so.6
cfn=(2) memcpy
calls=1 0x20
0x10 4
fn=(3) swift_retain'2
0x30 1
ob=(2)
fn=(2)
0x40 1
ob=(1)
fn=(4) main
0x50 1
fn=(1)
0x10 1
fn=(5) (below main)
0x60 1
fn=(6) swift_retain
0x70 1
"""


class ExecutedFunctionsTests(unittest.TestCase):
    def test_the_binarys_functions_in_first_run_order_each_once(self):
        self.assertEqual(
            codeorder.executed_functions(CALLGRIND, "dreamnet-healthd"),
            ["$s10HealthCore9ProbeLoopV4tick", "swift_retain", "main"],
        )

    def test_calls_into_other_objects_are_not_the_binarys(self):
        self.assertNotIn("memcpy", codeorder.executed_functions(CALLGRIND, "dreamnet-healthd"))
        self.assertEqual(codeorder.executed_functions(CALLGRIND, "libc.so.6"), ["memcpy"])

    def test_a_path_that_only_ends_like_the_binary_is_not_it(self):
        self.assertEqual(codeorder.executed_functions(CALLGRIND, "healthd"), [])


if __name__ == "__main__":
    unittest.main()


class UnrunnableProgramTests(unittest.TestCase):
    def test_it_is_executable_and_exec_refuses_it(self):
        with tempfile.TemporaryDirectory() as work:
            path = codeorder.unrunnable_program(work)
            self.assertTrue(os.access(path, os.X_OK))
            with self.assertRaises(OSError) as refused:
                subprocess.run([path], check=False)
            self.assertEqual(refused.exception.errno, errno.ENOEXEC)
