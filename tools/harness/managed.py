"""The daemon against the databases people run: TLS `verify-full` with SCRAM and channel binding,
a database far away (a relay that delays each direction), and Debian's PgBouncer in transaction
pooling in front. Measures, on the release build:

1. cost over TLS + SCRAM at 1 Hz: the daemon's own CPU per probe in each connection mode, libpq's
   floor on the same URL, `pg_isready` and `psql`, and the server's CPU per probe for each;
2. distance: the defaults at 150 ms of round trip, both modes, for `--seconds`: false
   transitions, failed probes, the round trip and a new connection's time as measured;
3. PgBouncer at the defaults for `--seconds` (first verdict, false transitions, how the server
   timeouts went), then a lock that blocks every new server session for `--seconds`: the most
   client connections the daemon held at PgBouncer and server backends behind it.

    python3 -m harness.managed --daemon BIN --floor BIN --pg-bin DIR [--seconds 60] [--write BENCHMARKS.md]
"""

from __future__ import annotations

import argparse
import json
import os
import selectors
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time

from harness import cluster as cluster_tools, procmem, report
from harness.cluster import as_owner, free_port
from harness.daemon import Daemon

MARKER = "bench-managed"


def log(message: str) -> None:
    print(f"managed: {message}", file=sys.stderr, flush=True)


def threads_cpu(pid: int) -> float:
    """The sum of a process's threads' schedstat, in seconds (ns precision)."""
    total = 0
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as schedstat:
                total += int(schedstat.read().split()[0])
        except OSError:
            pass
    return total / 1e9


def metric(text: str, name: str) -> float:
    """The sum of a metric's samples in a Prometheus exposition."""
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and (line[len(name)] in " {"):
            total += float(line.rsplit(" ", 1)[1])
    return total


def per_probe(cpu_seconds: float, probes: int) -> float:
    """Milliseconds of CPU per probe; 0 when there were none."""
    return cpu_seconds / probes * 1000 if probes else 0.0


class Certificates:
    """A CA of its own and a server certificate for 127.0.0.1 and localhost."""

    def __init__(self, directory: str):
        self.directory = directory
        os.makedirs(directory, exist_ok=True)
        key = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
        with open(f"{directory}/server.ext", "w") as ext:
            ext.write("subjectAltName = IP:127.0.0.1,DNS:localhost\nextendedKeyUsage = serverAuth\n")
        run = lambda args: subprocess.run(["openssl", *args], cwd=directory, check=True, capture_output=True)
        run(["req", "-x509", *key, "-keyout", "ca.key", "-out", "ca.crt", "-days", "2", "-subj", "/CN=bench authority",
             "-addext", "basicConstraints=critical,CA:TRUE", "-addext", "keyUsage=critical,keyCertSign,cRLSign"])
        run(["req", *key, "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=localhost"])
        run(["x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial", "-days", "2",
             "-extfile", "server.ext", "-out", "server.crt"])
        self.authority = f"{directory}/ca.crt"


class Cluster(cluster_tools.Cluster):
    """A throwaway cluster serving TLS, SCRAM for every TCP connection, trust on its socket."""

    password = "bench-scram-password"

    def __init__(self, pg_bin: str, directory: str, certificates: Certificates):
        super().__init__(pg_bin, directory)
        self.initdb()
        for name in ("server.crt", "server.key"):
            self.install_file(f"{certificates.directory}/{name}", name)
        self.configure({"ssl": "on", "ssl_cert_file": "'server.crt'", "ssl_key_file": "'server.key'", "autovacuum": "off"})
        with open(f"{self.data}/pg_hba.conf", "w") as hba:
            hba.write("local all all trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
        self.start()
        self.psql(f"ALTER ROLE postgres PASSWORD '{self.password}'")
        self.authority = certificates.authority

    def url(self, port: int | None = None, channel_binding: bool = True, sslmode: str = "verify-full") -> str:
        query = f"sslmode={sslmode}&sslrootcert={self.authority}" + ("&channel_binding=require" if channel_binding else "")
        return f"postgresql://postgres:{self.password}@127.0.0.1:{port or self.port}/postgres?{query}"

    def psql(self, sql: str, **options) -> str:
        """Over the Unix socket, where the superuser has trust (TCP asks for SCRAM)."""
        return super().psql(sql, over_socket=True, **options)

    def postmaster(self) -> int:
        return self.postmaster_pid()

    def account(self) -> None:
        """Puts the postmaster in a cpuacct cgroup of its own, where there is one to write: every
        backend forked from then on is counted there, alive or gone, in ns; the background
        processes forked before are not."""
        path = f"/sys/fs/cgroup/cpuacct/{os.path.basename(self.directory.rstrip('/'))}-{self.port}"
        try:
            os.mkdir(path)
            with open(f"{path}/cgroup.procs", "w") as procs:
                procs.write(str(self.postmaster()))
            self.cgroup = path
        except OSError:
            self.cgroup = None

    cgroup: str | None = None

    def server_cpu(self) -> float:
        """The postmaster's CPU and its backends', in seconds: from its cgroup (ns), else the
        postmaster's own and its reaped children's (10 ms ticks)."""
        if self.cgroup:
            with open(f"{self.cgroup}/cpuacct.usage") as usage:
                return int(usage.read()) / 1e9
        return procmem.cpu_seconds(self.postmaster(), children=True)

    def accounting(self) -> str:
        return ("a cpuacct cgroup holding the postmaster and every backend it forked (ns)" if self.cgroup
                else "the postmaster's own and its reaped backends' from `/proc/PID/stat` (10 ms ticks)")

    def tcp_backends(self) -> int:
        """Backends with a TCP client now (they are in `ps` before pg_stat_activity shows them)."""
        count = 0
        for pid in self.children():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                    count += b"127.0.0.1(" in cmdline.read()
            except OSError:
                continue
        return count

    def stop(self, mode: str = "immediate", timeout: int = 60) -> None:
        self.try_pg_ctl("stop", mode=mode, timeout=timeout)
        if self.cgroup:
            try:
                with open(f"{self.cgroup}/cgroup.procs") as procs:
                    for pid in procs.read().split():
                        with open("/sys/fs/cgroup/cpuacct/cgroup.procs", "w") as root:
                            root.write(pid)
                os.rmdir(self.cgroup)
            except OSError:
                pass


class DelayRelay:
    """A TCP relay on 127.0.0.1 that holds every chunk for `delay` seconds in each direction, in
    order: a database 2 × delay of round trip away."""

    def __init__(self, upstream_port: int, delay: float):
        self.delay, self.upstream = delay, upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.closed:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            for s in (client, server):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._forward, args=(client, server), daemon=True).start()
            threading.Thread(target=self._forward, args=(server, client), daemon=True).start()

    def _forward(self, source: socket.socket, destination: socket.socket) -> None:
        held: list[tuple[float, bytes]] = []
        selector = selectors.DefaultSelector()
        selector.register(source, selectors.EVENT_READ)
        open_ = True
        try:
            while open_ or held:
                now = time.monotonic()
                while held and held[0][0] <= now:
                    destination.sendall(held.pop(0)[1])
                timeout = max(0.0, held[0][0] - time.monotonic()) if held else None
                if not open_:
                    time.sleep(timeout or 0)
                    continue
                if selector.select(timeout):
                    data = source.recv(65536)
                    if not data:
                        open_ = False
                    else:
                        held.append((time.monotonic() + self.delay, data))
            destination.shutdown(socket.SHUT_WR)
        except OSError:
            for s in (source, destination):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass

    def close(self) -> None:
        self.closed = True
        self.listener.close()


class PgBouncer:
    """Debian's PgBouncer in transaction pooling in front of `cluster`, TLS to its clients."""

    def __init__(self, cluster: Cluster, directory: str, certificates: Certificates):
        os.makedirs(directory)
        self.port, self.directory = free_port(), directory
        with open(f"{directory}/userlist.txt", "w") as users:
            users.write(f'"postgres" "{cluster.password}"\n')
        with open(f"{directory}/pgbouncer.ini", "w") as ini:
            ini.write("\n".join([
                "[databases]", f"postgres = host=127.0.0.1 port={cluster.port} dbname=postgres", "[pgbouncer]",
                "listen_addr = 127.0.0.1", f"listen_port = {self.port}", "unix_socket_dir =",
                "auth_type = scram-sha-256", f"auth_file = {directory}/userlist.txt", "admin_users = postgres",
                "pool_mode = transaction", f"pidfile = {directory}/pgbouncer.pid", f"logfile = {directory}/pgbouncer.log",
                "default_pool_size = 5", "client_tls_sslmode = allow",
                f"client_tls_cert_file = {certificates.directory}/server.crt",
                f"client_tls_key_file = {certificates.directory}/server.key", "",
            ]))
        if os.geteuid() == 0:
            for path in (directory, f"{directory}/userlist.txt", f"{directory}/pgbouncer.ini",
                         f"{certificates.directory}/server.key", f"{certificates.directory}/server.crt"):
                shutil.chown(path, "postgres")
            os.chmod(certificates.directory, 0o755)
        self.cluster = cluster
        self.process = subprocess.Popen(as_owner(["/usr/sbin/pgbouncer", f"{directory}/pgbouncer.ini"]),
                                        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                self.admin("SHOW VERSION")
                return
            except subprocess.CalledProcessError:
                time.sleep(0.1)
        raise RuntimeError("PgBouncer did not start")

    def admin(self, command: str) -> str:
        env = {**os.environ, "PGPASSWORD": self.cluster.password, "PGSSLMODE": "disable"}
        return subprocess.run([f"{self.cluster.pg_bin}/psql", "-X", "-A", "-t", "-h", "127.0.0.1", "-p", str(self.port),
                               "-U", "postgres", "-d", "pgbouncer", "-c", command],
                              env=env, capture_output=True, text=True, check=True).stdout

    def clients(self) -> int:
        """Client connections to the `postgres` database (the console's own is to `pgbouncer`)."""
        return sum(1 for line in self.admin("SHOW CLIENTS").splitlines() if line.split("|")[2:3] == ["postgres"])

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(10)


def status(daemon: Daemon) -> dict:
    return json.loads(daemon.get("/status")[1])


def wait_verdict(daemon: Daemon, timeout: float = 20) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        current = status(daemon)
        if current["state"] != "starting":
            return current
        time.sleep(0.02)
    raise RuntimeError("no verdict")


def process_cost(command: list[str], calls: int, cluster: Cluster) -> dict:
    """Runs `command` once a second `calls` times, alone: its own CPU (wait4, start-up included)
    and the server's, per call."""
    own, failed = 0.0, 0
    server0 = cluster.server_cpu()
    for _ in range(calls):
        started = time.monotonic()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        _, code, usage = os.wait4(process.pid, 0)
        own += usage.ru_utime + usage.ru_stime
        failed += os.waitstatus_to_exitcode(code) != 0
        time.sleep(max(0.0, 1 - (time.monotonic() - started)))
    return {"calls": calls, "failed": failed, "own_ms": per_probe(own, calls),
            "server_ms": per_probe(cluster.server_cpu() - server0, calls)}


def daemon_cost(args: argparse.Namespace, cluster: Cluster, work: str, mode: str) -> dict:
    daemon = Daemon(args.daemon, f"{work}/cost-{mode}", ["--database-url", cluster.url(), "--interval", "1s", "--no-splay",
                                                          "--probe-connection", mode])
    try:
        wait_verdict(daemon)
        time.sleep(3)  # past the first probes and the first event's delivery
        probes0 = metric(daemon.get("/metrics")[1].decode(), "dreamnet_healthd_probes_total")
        own0, server0 = threads_cpu(daemon.pid), cluster.server_cpu()
        time.sleep(args.seconds)
        probes = int(metric(daemon.get("/metrics")[1].decode(), "dreamnet_healthd_probes_total") - probes0)
        own, server = threads_cpu(daemon.pid) - own0, cluster.server_cpu() - server0
        return {"probes": probes, "own_ms": per_probe(own, probes), "server_ms": per_probe(server, probes),
                "failures": metric(daemon.get("/metrics")[1].decode(), "dreamnet_healthd_probe_failures_total")}
    finally:
        daemon.stop()


def floor_cost(args: argparse.Namespace, cluster: Cluster) -> dict:
    server0 = cluster.server_cpu()
    # With what the daemon adds to a connection: no GSSAPI negotiation, the server timeouts.
    conninfo = cluster.url() + "&gssencmode=disable&options=-c%20statement_timeout%3D1000%20-c%20lock_timeout%3D1000"
    out = subprocess.run([args.floor, conninfo, "1000", str(args.seconds)], capture_output=True, text=True, check=True)
    floor = json.loads(out.stdout)
    return {"probes": floor["probes"], "own_ms": floor["cpu_ms"] / max(floor["probes"], 1),
            "server_ms": per_probe(cluster.server_cpu() - server0, floor["probes"]), "failures": floor["failures"]}


def idle_server_ms(cluster: Cluster, seconds: float = 5) -> float:
    """The idle server's own CPU per second, taken off each window's figure by the reader."""
    before = cluster.server_cpu()
    time.sleep(seconds)
    return (cluster.server_cpu() - before) / seconds * 1000


def cost_section(args: argparse.Namespace, cluster: Cluster, work: str) -> str:
    log(f"1/3 cost over TLS verify-full + SCRAM + channel binding, {args.seconds} s per tool")
    rows = {
        "libpq's floor (C loop: connect + `SELECT 1` + finish, 1 Hz)": floor_cost(args, cluster),
        "dreamnet-healthd, a fresh connection per probe": daemon_cost(args, cluster, work, "fresh"),
        "dreamnet-healthd, kept session (a fresh connection every 30 s)": daemon_cost(args, cluster, work, "session"),
        "`pg_isready` (the binary, a process each time)": process_cost(
            [f"{args.pg_bin}/pg_isready", "-d", cluster.url(), "-t", "1"], args.seconds, cluster),
        "`psql -c 'SELECT 1'` (the binary, a process each time)": process_cost(
            [f"{args.pg_bin}/psql", "-X", "-q", "-d", cluster.url(), "-c", "SELECT 1"], args.seconds, cluster),
    }
    idle = idle_server_ms(cluster)
    floor = rows["libpq's floor (C loop: connect + `SELECT 1` + finish, 1 Hz)"]["own_ms"]
    fresh = rows["dreamnet-healthd, a fresh connection per probe"]["own_ms"]
    lines = ["| what | probes or calls | own CPU per probe, ms | against the floor | server CPU per probe, ms |",
             "|---|---|---|---|---|"]
    for name, row in rows.items():
        count = row.get("probes", row.get("calls"))
        lines.append(f"| {name} | {count} | {row['own_ms']:.3f} | {row['own_ms'] / floor:.2f} | {row['server_ms']:.3f} |")
    verdict = "met" if fresh <= 1.5 * floor else "NOT met"
    return (f"### Over TLS `verify-full` + SCRAM + channel binding, {args.seconds} s per tool, each alone at 1 Hz\n\n"
            + "\n".join(lines) + "\n\n"
            f"Daemon CPU per fresh TLS + SCRAM probe: {fresh / floor:.2f} × libpq's floor on the same URL in the same run "
            f"(goal ≤ 1.5: {verdict}). The server's CPU over each window is {cluster.accounting()}; the idle server used "
            f"{idle:.2f} ms a second, left in. The daemon's own "
            "is the sum of its threads' schedstat; the floor's its own getrusage; the processes' from wait4, start-up "
            "included. `pg_isready` does not authenticate: it stops at the server's password request.\n")


def watch(daemon: Daemon, seconds: float) -> dict:
    """Samples `/status` for `seconds`: transitions and failures seen, and the last distance."""
    first = status(daemon)
    end = time.monotonic() + seconds
    worst_streak = 0
    while time.monotonic() < end:
        worst_streak = max(worst_streak, status(daemon)["consecutive_failures"])
        time.sleep(0.25)
    last = status(daemon)
    text = daemon.get("/metrics")[1].decode()
    return {"first": first, "last": last, "false_transitions": last["transitions"] - first["transitions"],
            "failures": int(metric(text, "dreamnet_healthd_probe_failures_total")),
            "probes": int(metric(text, "dreamnet_healthd_probes_total")), "worst_streak": worst_streak}


def distance_section(args: argparse.Namespace, cluster: Cluster, work: str) -> str:
    log(f"2/3 distance: 150 ms of round trip, the defaults at a 1 s interval, {args.seconds} s per mode")
    relay = DelayRelay(cluster.port, 0.075)
    lines = ["| mode | first verdict | false transitions | probes | failed | round trip, ms | new connection, ms | its headroom, ms |",
             "|---|---|---|---|---|---|---|---|"]
    verdicts = []
    try:
        for mode in ("session", "fresh"):
            daemon = Daemon(args.daemon, f"{work}/distance-{mode}", [
                "--database-url", cluster.url(port=relay.port), "--interval", "1s", "--probe-connection", mode])
            try:
                verdict = wait_verdict(daemon)
                seen = watch(daemon, args.seconds)
            finally:
                daemon.stop()
            distance = seen["last"].get("distance") or {}
            lines.append(f"| {mode} | {verdict['state']} | {seen['false_transitions']} | {seen['probes']} | {seen['failures']} | "
                         f"{distance.get('round_trip_ms', 0):.1f} | {distance.get('connect_ms', 0):.1f} | "
                         f"{distance.get('connect_headroom_ms', 0):.0f} |")
            verdicts.append(verdict["state"] == "healthy" and seen["false_transitions"] == 0)
    finally:
        relay.close()
    return (f"### 150 ms of round trip, TLS `verify-full` + SCRAM, the defaults at a 1 s interval, {args.seconds} s per mode\n\n"
            + "\n".join(lines) + "\n\n"
            f"Goal, no false transition in either mode: {'met' if all(verdicts) else 'NOT met'}. The relay delays each "
            "direction by 75 ms and terminates TCP itself, so a new connection here is six round trips (SSLRequest, TLS, "
            "startup, two SASL exchanges), one fewer than over a network, where the TCP handshake is one more.\n")


def pooler_section(args: argparse.Namespace, cluster: Cluster, work: str, certificates: Certificates) -> str:
    log(f"3/3 PgBouncer (transaction pooling) at the defaults, {args.seconds} s, then a lock for {args.seconds} s")
    bouncer = PgBouncer(cluster, f"{work}/pgbouncer", certificates)
    daemon = Daemon(args.daemon, f"{work}/pooled", [
        "--database-url", cluster.url(port=bouncer.port, channel_binding=False), "--interval", "1s"])
    try:
        verdict = wait_verdict(daemon)
        seen = watch(daemon, args.seconds)
        locked = lock_behind(bouncer, cluster, args, daemon=daemon)
    finally:
        daemon.stop()
        bouncer.stop()
    # The same lock with one application client waiting instead of the daemon: what PgBouncer
    # does for any client that waits.
    alone = PgBouncer(cluster, f"{work}/pgbouncer-alone", certificates)
    try:
        waiter = [f"{args.pg_bin}/psql", "-X", "-d", cluster.url(port=alone.port, channel_binding=False), "-c", "SELECT 1"]
        baseline = lock_behind(alone, cluster, args, waiter=waiter)
    finally:
        alone.stop()
    healthy = verdict["state"] == "healthy" and seen["false_transitions"] == 0
    return (f"### PgBouncer 1.18, transaction pooling, TLS `verify-full` + SCRAM, the defaults at a 1 s interval\n\n"
            "| what | figure |\n|---|---|\n"
            f"| first verdict | {verdict['state']} (`server_timeouts`: {seen['last'].get('server_timeouts')}) |\n"
            f"| false transitions in {args.seconds} s | {seen['false_transitions']} ({seen['probes']} probes, {seen['failures']} failed) |\n"
            f"| a lock blocking every new server session, {args.seconds} s: most client connections of the daemon at PgBouncer | {locked['clients']} |\n"
            f"| the same: most server backends with a TCP client (PgBouncer's connection attempts) | {locked['backends']} |\n"
            f"| the same lock with one `psql -c 'SELECT 1'` waiting at PgBouncer instead of the daemon: server backends | {baseline['backends']} |\n"
            f"| the probes' reasons meanwhile | {', '.join(sorted(r for r in locked['reasons'] if r))} |\n\n"
            f"Goals: healthy from the first verdict with no false transition ({'met' if healthy else 'NOT met'}); at most 3 of "
            f"the daemon's connections at PgBouncer during the lock ({'met' if locked['clients'] <= 3 else 'NOT met'}) and on "
            f"the server ({'met' if locked['backends'] <= 3 else 'NOT met'}: the backends are PgBouncer's, one new connection "
            "attempt per `server_connect_timeout` (15 s) for as long as any client waits, each left waiting on the lock when "
            "PgBouncer gives up on it; one waiting `psql` leaves as many).\n")


def lock_behind(bouncer: PgBouncer, cluster: Cluster, args: argparse.Namespace, daemon: Daemon | None = None,
                waiter: list[str] | None = None) -> dict:
    """Ends PgBouncer's idle server connections, then holds a lock that blocks every new server
    session for `--seconds`, sampling the clients at PgBouncer and the server's TCP backends."""
    cluster.psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE client_addr IS NOT NULL")
    holder = subprocess.Popen([f"{args.pg_bin}/psql", "-X", "-h", cluster.sockets, "-p", str(cluster.port), "-U", "postgres",
                               "-c", f"BEGIN; LOCK pg_catalog.pg_database IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep({args.seconds}); COMMIT"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    waiting = subprocess.Popen(waiter, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL) if waiter else None
    seen = {"clients": 0, "backends": 0, "reasons": set()}
    while holder.poll() is None:
        seen["clients"] = max(seen["clients"], bouncer.clients())
        seen["backends"] = max(seen["backends"], cluster.tcp_backends())
        if daemon:
            seen["reasons"].add((status(daemon).get("last_probe") or {}).get("reason"))
        time.sleep(0.2)
    if waiting:
        waiting.wait(30)
    # The backends left waiting end with the lock.
    deadline = time.monotonic() + 10
    while cluster.tcp_backends() > 0 and time.monotonic() < deadline:
        time.sleep(0.1)
    return seen


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--daemon", required=True)
    parser.add_argument("--floor", required=True, help="scripts/lib/libpq-floor.c, built")
    parser.add_argument("--pg-bin", required=True)
    parser.add_argument("--seconds", type=int, default=60)
    parser.add_argument("--write", help="BENCHMARKS.md: the report goes between its markers")
    args = parser.parse_args(argv)
    work = tempfile.mkdtemp(prefix="dreamnet-managed-", dir="/tmp")
    os.chmod(work, 0o755)
    certificates = Certificates(f"{work}/tls")
    cluster = Cluster(args.pg_bin, f"{work}/pg", certificates)
    cluster.account()
    try:
        version = cluster.psql("SHOW server_version")
        sections = [cost_section(args, cluster, work), distance_section(args, cluster, work),
                    pooler_section(args, cluster, work, certificates)]
    finally:
        cluster.stop()
        shutil.rmtree(work, ignore_errors=True)
    text = (f"Measured by `scripts/bench-managed` on {os.cpu_count()} cores, PostgreSQL {version}, "
            f"{time.strftime('%Y-%m-%d')}.\n\n" + "\n".join(sections))
    print(text)
    if args.write:
        report.write(args.write, MARKER, text)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
