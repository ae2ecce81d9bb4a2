import os, tempfile, unittest
from unittest import mock

from harness import cluster


class ServerBinTests(unittest.TestCase):
    def test_newest_version_wins_by_number(self):
        found = ["/usr/lib/postgresql/9.6/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin"]
        with mock.patch.object(cluster.glob, "glob", return_value=found), \
             mock.patch.object(cluster.os, "access", return_value=True):
            self.assertEqual(cluster.server_bin({}), "/usr/lib/postgresql/16/bin")

    def test_pg_bindir_with_initdb_wins(self):
        with tempfile.TemporaryDirectory() as directory:
            initdb = f"{directory}/initdb"
            with open(initdb, "w"):
                pass
            os.chmod(initdb, 0o755)
            self.assertEqual(cluster.server_bin({"PG_BINDIR": directory}), directory)

    def test_pg_bindir_without_initdb_is_passed_over(self):
        with tempfile.TemporaryDirectory() as directory, \
             mock.patch.object(cluster.glob, "glob", return_value=[]):
            with self.assertRaisesRegex(cluster.ClusterError, "no PostgreSQL server"):
                cluster.server_bin({"PG_BINDIR": directory})


class CommandTests(unittest.TestCase):
    def setUp(self):
        self.cluster = cluster.Cluster("/pg/bin", "/work/c", 5999)

    def test_server_listens_on_loopback_with_its_own_socket(self):
        self.assertEqual(cluster.server_options(5999, "/work/c/sock"),
                         "-p 5999 -k /work/c/sock -c listen_addresses=127.0.0.1 -c fsync=off")

    def test_pg_ctl_start_and_stop_as_a_user(self):
        with mock.patch.object(cluster, "is_root", return_value=False):
            start = self.cluster.pg_ctl_command("start", timeout=30)
            stop = self.cluster.pg_ctl_command("stop", mode="immediate")
        self.assertEqual(start[:3], ["/pg/bin/pg_ctl", "-D", "/work/c/data"])
        self.assertIn("-p 5999 -k /work/c/sock", start[start.index("-o") + 1])
        self.assertEqual(start[-1], "start")
        self.assertEqual(stop[-6:], ["-m", "immediate", "-w", "-t", "60", "stop"])

    def test_as_root_the_tools_run_as_postgres(self):
        with mock.patch.object(cluster, "is_root", return_value=True):
            self.assertEqual(self.cluster.pg_ctl_command("stop")[:4], ["runuser", "-u", "postgres", "--"])

    def test_unknown_action_is_refused(self):
        with self.assertRaises(ValueError):
            self.cluster.pg_ctl_command("reload")

    def test_psql_over_tcp_or_the_socket(self):
        self.assertIn("127.0.0.1", self.cluster.psql_command("SELECT 1"))
        self.assertIn("/work/c/sock", self.cluster.psql_command("SELECT 1", over_socket=True))

    def test_shut_down_of_a_cluster_never_started_does_nothing(self):
        with tempfile.TemporaryDirectory() as directory:
            self.assertTrue(cluster.Cluster("/nonexistent", directory, 1).shut_down())

    def test_command_line_usage(self):
        with mock.patch("sys.stderr"):
            self.assertEqual(cluster.main([]), 2)
            self.assertEqual(cluster.main(["start"]), 2)


class ClientBackendTests(unittest.TestCase):
    def test_workers_are_not_clients(self):
        for title in (b"postgres: checkpointer ", b"postgres: walwriter ", b"postgres: autovacuum launcher ",
                      b"postgres: logical replication launcher "):
            self.assertFalse(cluster.is_client_backend(title), title)

    def test_backends_and_starting_ones_are(self):
        self.assertTrue(cluster.is_client_backend(b"postgres: postgres postgres 127.0.0.1(5432) idle\0"))
        # Not yet past its start-up: the postmaster's own command line.
        self.assertTrue(cluster.is_client_backend(b"/usr/lib/postgresql/15/bin/postgres\0-D\0/tmp/data\0"))


if __name__ == "__main__":
    unittest.main()
