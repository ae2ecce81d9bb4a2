import unittest

from harness import report


class MergeTests(unittest.TestCase):
    def test_replaces_only_between_the_markers(self):
        text = "# B\n\nbefore\n<!-- x: begin -->\nold\n<!-- x: end -->\nafter\n"
        merged = report.merge(text, "x", "new\n")
        self.assertEqual(merged, "# B\n\nbefore\n<!-- x: begin -->\nnew\n<!-- x: end -->\nafter\n")

    def test_other_markers_are_left_alone(self):
        text = "<!-- x: begin -->\na\n<!-- x: end -->\n<!-- x y: begin -->\nb\n<!-- x y: end -->\n"
        merged = report.merge(text, "x y", "c")
        self.assertIn("<!-- x: begin -->\na\n<!-- x: end -->", merged)
        self.assertIn("<!-- x y: begin -->\nc\n<!-- x y: end -->", merged)

    def test_a_missing_pair_is_added_at_the_end(self):
        self.assertEqual(report.merge("# B\n\n", "x", "r"), "# B\n\n<!-- x: begin -->\nr\n<!-- x: end -->\n")

    def test_a_begin_without_an_end_is_an_error(self):
        with self.assertRaisesRegex(ValueError, "end marker"):
            report.merge("<!-- x: begin -->\nold\n", "x", "r")


if __name__ == "__main__":
    unittest.main()
