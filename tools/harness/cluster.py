"""The throwaway PostgreSQL that the benchmarks, the soak, the fleet and `scripts/run` start: data
in DIR/data, its Unix socket in DIR/sock, its log in DIR/server.log, TCP on 127.0.0.1 only, the
superuser `postgres` with trust unless the caller writes its own pg_hba.conf. fsync is off: the
data is disposable. (The Swift tests have their own, Tests/TestSupport/TestPostgres.swift.)

initdb and postgres refuse to run as root, so as root every server tool runs as the `postgres`
user. From a shell:

    python3 -m harness.cluster start DIR [PORT]     # prints the port
    python3 -m harness.cluster stop DIR
    python3 -m harness.cluster pg-ctl DIR PORT start|stop   # the command line, for a person
    python3 -m harness.cluster bindir               # where initdb, pg_ctl and postgres are
"""
from __future__ import annotations

import glob, os, re, shlex, shutil, signal, socket, subprocess, sys


class ClusterError(Exception):
    """A server tool failed; the message carries what it printed."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now (the kernel picks it)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def version_key(path: str) -> tuple:
    """Sorts /usr/lib/postgresql/N/bin by N as a number (16 after 9.6)."""
    return tuple(int(part) for part in re.findall(r"\d+", path))


def server_bin(environment: dict[str, str] | None = None) -> str:
    """PG_BINDIR when it holds initdb, else the newest /usr/lib/postgresql/*/bin that does.
    pg_config --bindir is not used: it belongs to libpq-dev and may name a directory without initdb."""
    environment = os.environ if environment is None else environment
    chosen = environment.get("PG_BINDIR", "")
    if chosen and os.access(f"{chosen}/initdb", os.X_OK):
        return chosen
    found = [d for d in glob.glob("/usr/lib/postgresql/*/bin") if os.access(f"{d}/initdb", os.X_OK)]
    if not found:
        raise ClusterError("no PostgreSQL server found under /usr/lib/postgresql (is the postgresql package installed?)")
    return max(found, key=version_key)


def is_root() -> bool:
    return os.geteuid() == 0


def as_owner(command: list[str]) -> list[str]:
    """The command as the cluster's owner: `postgres` when this runs as root, else as it is."""
    return ["runuser", "-u", "postgres", "--", *command] if is_root() else list(command)


# The postmaster's own workers, by the process title after `postgres: `; every other child serves a client.
BACKGROUND = ("checkpointer", "background writer", "walwriter", "autovacuum launcher", "autovacuum worker",
              "logical replication launcher", "archiver", "stats collector", "startup", "walsender", "walreceiver")


def is_client_backend(cmdline: bytes) -> bool:
    """Whether a postmaster's child, by its /proc/PID/cmdline, serves a client: a backend not yet
    past its start-up still has the postmaster's command line, and counts."""
    title = cmdline.replace(b"\0", b" ").decode(errors="replace")
    name = title[len("postgres: "):] if title.startswith("postgres: ") else ""
    return not name.startswith(BACKGROUND)


def server_options(port: int, sockets: str) -> str:
    """postgres's command-line options: its port, its socket directory, loopback only, no fsync."""
    return f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off"


class Cluster:
    """One throwaway cluster in `directory`. `create()` makes and starts it; a Cluster made on an
    existing directory (the shell's `stop`) only drives it."""

    def __init__(self, pg_bin: str, directory: str, port: int | None = None):
        self.pg_bin = pg_bin
        self.directory = os.path.abspath(directory)
        self.port = port if port is not None else free_port()
        self.data = f"{self.directory}/data"
        self.sockets = f"{self.directory}/sock"
        self.log = f"{self.directory}/server.log"

    @classmethod
    def create(cls, pg_bin: str, directory: str, port: int | None = None, settings: dict[str, str] | None = None,
               hba: str | None = None, start: bool = True) -> "Cluster":
        """initdb (trust for every local and loopback connection), `settings` appended to
        postgresql.conf, `hba` replacing pg_hba.conf when given, and start."""
        cluster = cls(pg_bin, directory, port)
        cluster.initdb()
        if settings:
            cluster.configure(settings)
        if hba is not None:
            with open(f"{cluster.data}/pg_hba.conf", "w") as f:
                f.write(hba)
        if start:
            cluster.start()
        return cluster

    # ------------------------------------------------------------------ making and configuring

    def initdb(self) -> None:
        os.makedirs(self.data, exist_ok=True)
        os.makedirs(self.sockets, exist_ok=True)
        open(self.log, "a").close()
        if is_root():
            # mktemp -d makes 0700 directories; postgres must enter this one and own what it writes.
            os.chmod(self.directory, 0o755)
            for path in (self.data, self.sockets, self.log):
                shutil.chown(path, "postgres", "postgres")
            if subprocess.run(as_owner(["test", "-x", self.directory])).returncode != 0:
                raise ClusterError(f"user postgres cannot enter {self.directory} (a parent directory is not traversable)")
        os.chmod(self.data, 0o700)
        self._run([f"{self.pg_bin}/initdb", "-D", self.data, "-U", "postgres", "-A", "trust", "-E", "UTF8",
                   "--locale=C.UTF-8", "--no-sync"], "initdb")

    def configure(self, settings: dict[str, str]) -> None:
        """Appends `name = value` lines to postgresql.conf (read at the next start or reload)."""
        with open(f"{self.data}/postgresql.conf", "a") as conf:
            for name, value in settings.items():
                conf.write(f"{name} = {value}\n")

    def install_file(self, source: str, name: str) -> None:
        """Copies a file (a TLS key, say) into the data directory, owned by the server, mode 0600."""
        target = f"{self.data}/{name}"
        shutil.copy(source, target)
        os.chmod(target, 0o600)
        if is_root():
            shutil.chown(target, "postgres", "postgres")

    # ------------------------------------------------------------------ running

    def pg_ctl_command(self, action: str, mode: str = "fast", timeout: int = 60) -> list[str]:
        command = [f"{self.pg_bin}/pg_ctl", "-D", self.data]
        if action == "start":
            command += ["-l", self.log, "-w", "-t", str(timeout), "-o", server_options(self.port, self.sockets), "start"]
        elif action == "stop":
            command += ["-m", mode, "-w", "-t", str(timeout), "stop"]
        else:
            raise ValueError(f"unknown pg_ctl action: {action}")
        return as_owner(command)

    def try_pg_ctl(self, action: str, mode: str = "fast", timeout: int = 60) -> tuple[bool, str]:
        """(ok, what pg_ctl printed); never raises, for the fault drivers that count failures."""
        try:
            out = subprocess.run(self.pg_ctl_command(action, mode, timeout), capture_output=True, text=True,
                                 timeout=timeout + 30, cwd=self.directory)
        except subprocess.TimeoutExpired:
            return False, "pg_ctl timed out"
        return out.returncode == 0, (out.stdout + out.stderr).strip()

    def start(self, timeout: int = 60) -> None:
        ok, out = self.try_pg_ctl("start", timeout=timeout)
        if not ok:
            raise ClusterError(f"PostgreSQL failed to start on port {self.port}; pg_ctl said:\n{out}\n"
                               f"--- {self.log} ---\n{self.read_log()}")

    def stop(self, mode: str = "fast", timeout: int = 60) -> None:
        ok, out = self.try_pg_ctl("stop", mode=mode, timeout=timeout)
        if not ok:
            raise ClusterError(f"pg_ctl stop -m {mode} failed: {out}")

    def shut_down(self) -> bool:
        """Stops it whatever state it is in, for clean-up: resumes a SIGSTOPped postmaster first
        (it would never see the request), falls back to immediate mode; whether it stopped."""
        if not os.path.exists(f"{self.data}/postmaster.pid"):
            return True
        pid = self.postmaster_pid()
        if pid:
            try:
                os.kill(pid, signal.SIGCONT)
            except OSError:
                pass
        for mode in ("fast", "immediate"):
            if self.try_pg_ctl("stop", mode=mode, timeout=30)[0]:
                return True
        print(f"warning: could not stop PostgreSQL in {self.directory}", file=sys.stderr)
        return False

    def postmaster_pid(self) -> int | None:
        try:
            with open(f"{self.data}/postmaster.pid") as f:
                return int(f.readline())
        except (OSError, ValueError):
            return None

    def read_log(self) -> str:
        try:
            with open(self.log, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    # ------------------------------------------------------------------ SQL

    def psql_command(self, sql: str, database: str = "postgres", over_socket: bool = False) -> list[str]:
        host = self.sockets if over_socket else "127.0.0.1"
        return [f"{self.pg_bin}/psql", "-X", "-q", "-A", "-t", "-F", "|", "-v", "ON_ERROR_STOP=1", "-h", host,
                "-p", str(self.port), "-U", "postgres", "-d", database, "-c", sql]

    def try_psql(self, sql: str, timeout: float = 15, database: str = "postgres",
                 over_socket: bool = False) -> tuple[bool, str]:
        """(ok, output or error) of one statement as the superuser; never raises."""
        environment = dict(os.environ, PGCONNECT_TIMEOUT="5")
        try:
            out = subprocess.run(self.psql_command(sql, database, over_socket), capture_output=True, text=True,
                                 timeout=timeout, env=environment, cwd=self.directory)
        except subprocess.TimeoutExpired:
            return False, "psql timed out"
        return out.returncode == 0, (out.stdout if out.returncode == 0 else out.stderr.strip())

    def psql(self, sql: str, timeout: float = 60, database: str = "postgres", over_socket: bool = False) -> str:
        """The output of one statement, stripped; raises ClusterError when it fails."""
        ok, out = self.try_psql(sql, timeout, database, over_socket)
        if not ok:
            raise ClusterError(f"psql: {sql[:80]}: {out}")
        return out.strip()

    # ------------------------------------------------------------------ processes

    def children(self) -> list[int]:
        """The postmaster's child processes now (backends, starting ones included, and its workers)."""
        pid = self.postmaster_pid()
        if not pid:
            return []
        try:
            with open(f"/proc/{pid}/task/{pid}/children") as f:
                return [int(child) for child in f.read().split()]
        except OSError:
            return []

    def client_backends(self) -> list[int]:
        """The children that serve clients, read from /proc (asking the server would add to what is measured)."""
        out = []
        for child in self.children():
            try:
                with open(f"/proc/{child}/cmdline", "rb") as f:
                    cmdline = f.read()
            except OSError:
                continue
            if is_client_backend(cmdline):
                out.append(child)
        return out

    def _run(self, command: list[str], what: str) -> None:
        out = subprocess.run(as_owner(command), capture_output=True, text=True, cwd=self.directory)
        if out.returncode != 0:
            raise ClusterError(f"{what} failed; its output:\n{out.stdout}{out.stderr}")


def main(argv: list[str]) -> int:
    usage = ("usage: python3 -m harness.cluster start DIR [PORT] | stop DIR | pg-ctl DIR PORT start|stop"
             " | bindir")
    try:
        if len(argv) in (2, 3) and argv[0] == "start":
            cluster = Cluster.create(server_bin(), argv[1], int(argv[2]) if len(argv) == 3 else None)
            print(cluster.port)
            return 0
        if len(argv) == 2 and argv[0] == "stop":
            return 0 if Cluster(server_bin(), argv[1], 0).shut_down() else 1
        if len(argv) == 1 and argv[0] == "bindir":
            print(server_bin())
            return 0
        if len(argv) == 4 and argv[0] == "pg-ctl":
            print(shlex.join(Cluster(server_bin(), argv[1], int(argv[2])).pg_ctl_command(argv[3])))
            return 0
    except (ClusterError, ValueError) as error:
        print(f"cluster: {error}", file=sys.stderr)
        return 1
    print(usage, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
