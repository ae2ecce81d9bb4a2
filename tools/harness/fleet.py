"""scripts/fleet's driver: a fleet of daemons against one cluster, steady, through an outage and
restarted at once (scripts/fleet's header says what each part measures). scripts/fleet builds the
daemon and starts the cluster, then runs

    python3 -m harness.fleet BIN_DIR WORK PORT PG_BINDIR SIZE SECONDS MODES COMMIT REPORT
"""
from harness import statusclient
from harness.cluster import Cluster
import datetime, json, os, re, signal, statistics, subprocess, sys, threading, time

bin_dir, work, pg_port, pg_bin, size, seconds, modes, commit, report_path = sys.argv[1:10]
pg_port, size, seconds, modes = int(pg_port), int(size), int(seconds), modes.split()
daemon_bin = f"{bin_dir}/dreamnet-healthd"
url = f"postgresql://postgres@127.0.0.1:{pg_port}/postgres"
pids_file = f"{work}/pids"
server_log = f"{work}/server.log"
TICK = os.sysconf("SC_CLK_TCK")
INTERVAL, TIMEOUT, FALL, RISE = 1.0, 1.0, 2, 2

def log(message):
    print(f"fleet: {message}", file=sys.stderr, flush=True)

def loadavg():
    return " ".join(open("/proc/loadavg").read().split()[:3])

# The cluster scripts/fleet started (harness.cluster); the outage stops and starts it.
cluster = Cluster(pg_bin, work, pg_port)

def pg_start():
    cluster.start()

def pg_stop():
    cluster.stop()

def psql(sql):
    return cluster.psql(sql)

def postmaster_pid():
    return cluster.postmaster_pid()

def stat_fields(pid):
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()

# ---------------------------------------------------------------------------------------------
# The server.

psql("ALTER SYSTEM SET max_connections = 300")
psql("ALTER SYSTEM SET log_connections = on")
psql("ALTER SYSTEM SET log_disconnections = on")
psql("ALTER SYSTEM SET log_line_prefix = '%m [%p] '")
psql("ALTER SYSTEM SET log_timezone = 'UTC'")
# Autovacuum workers are reaped children of the postmaster: they would land in the CPU figures.
psql("ALTER SYSTEM SET autovacuum = off")
pg_stop(); pg_start()
server_version = psql("SHOW server_version")
# The web app's table, as the fleet would find it (a hundred daemons creating it at once is not
# what is measured here).
psql("""CREATE TABLE IF NOT EXISTS system_events (
    id UUID PRIMARY KEY DEFAULT gen_random_uuid(), event_type VARCHAR(100) NOT NULL,
    source VARCHAR(100) NOT NULL, severity VARCHAR(20) DEFAULT 'info', payload JSONB NOT NULL,
    timestamp TIMESTAMP DEFAULT NOW(), metadata JSONB DEFAULT '{}')""")

BACKGROUND = ("checkpointer", "background writer", "walwriter", "autovacuum launcher", "autovacuum worker",
              "logical replication launcher", "archiver", "stats collector", "startup", "walsender", "walreceiver")

def client_backends():
    """The postmaster's children that serve clients (starting ones included: a backend not yet
    past its start-up still has the postmaster's command line)."""
    out = []
    for child in cluster.children():
        try:
            title = open(f"/proc/{child}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        name = title[len("postgres: "):] if title.startswith("postgres: ") else ""
        if not name.startswith(BACKGROUND):
            out.append(int(child))
    return out

class Sampler:
    """Counts client backends every 100 ms, from /proc (asking the server would add to what is measured)."""
    def __init__(self):
        self.samples, self.stop = [], threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True); self.thread.start()
    def run(self):
        while not self.stop.is_set():
            self.samples.append((time.time(), len(client_backends())))
            self.stop.wait(0.1)
    def most(self, t0, t1):
        return max((n for t, n in self.samples if t0 <= t <= t1), default=0)

sampler = Sampler()

LINE = re.compile(r"^(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\.\d{3}) UTC \[(\d+)\] (\w+):\s+(.*)$")

def connection_log():
    """Every connection in the server's log: {received, app, end} by (pid, received)."""
    sessions, by_pid, ready, last_line = [], {}, [], {}
    for line in open(server_log, errors="replace"):
        m = LINE.match(line)
        if not m:
            continue
        at = datetime.datetime.strptime(m.group(1), "%Y-%m-%d %H:%M:%S.%f").replace(tzinfo=datetime.timezone.utc).timestamp()
        pid, level, message = int(m.group(2)), m.group(3), m.group(4)
        last_line[pid] = at
        if message.startswith("connection received"):
            s = {"received": at, "app": None, "end": None, "refused": False}
            sessions.append(s); by_pid[pid] = s
        elif pid in by_pid:
            s = by_pid[pid]
            if message.startswith("connection authorized"):
                app = re.search(r"application_name=(\S+)", message)
                s["app"] = app.group(1) if app else ""
            elif message.startswith("disconnection"):
                s["end"] = at; del by_pid[pid]
            elif level == "FATAL":
                s["end"] = at; s["refused"] = s["app"] is None; del by_pid[pid]
        if message.startswith("database system is ready to accept connections"):
            ready.append(at)
    # A session with no end in the log whose backend is gone ended at its last line (a start-up
    # packet that never came, say).
    alive = set(client_backends())
    for pid, s in by_pid.items():
        if pid not in alive:
            s["end"] = last_line.get(pid, s["received"])
    return sessions, ready

def fleet_sessions(sessions):
    # Probes and deliveries name themselves; a connection refused before its start-up packet was
    # read has no name and is counted with the fleet (nothing else connects meanwhile).
    return [s for s in sessions if s["app"] is None or s["app"].startswith("dreamnet-healthd")]

def most_of_one(sessions, t0, t1):
    """The most connections one daemon had open at once within [t0, t1]."""
    by_app = {}
    for s in sessions:
        if s["app"]:
            by_app.setdefault(s["app"], []).append(s)
    return max((most_at_once(v, t0, t1) for v in by_app.values()), default=0)

def most_at_once(sessions, t0, t1):
    """The most fleet connections open at once within [t0, t1], from the connection log."""
    edges = []
    for s in sessions:
        end = s["end"] if s["end"] is not None else float("inf")
        if end < t0 or s["received"] > t1:
            continue
        edges.append((max(s["received"], t0), 1)); edges.append((end, -1))
    edges.sort(key=lambda e: (e[0], e[1]))
    most = n = 0
    for _, d in edges:
        n += d; most = max(most, n)
    return most

# ---------------------------------------------------------------------------------------------
# The fleet.

class Daemon:
    def __init__(self, base, index):
        self.dir = f"{base}/d{index:03d}"
        # Each daemon names its connections, so the server's log tells them apart.
        self.name = f"dreamnet-healthd-{index:03d}"
        os.makedirs(self.dir, exist_ok=True)
        self.sock, self.alerts, self.proc, self.pids = f"{self.dir}/status.sock", f"{self.dir}/alerts.log", None, []

    def start(self, args, gate=None):
        """Starts the daemon; with `gate` (a FIFO) it waits, exec'd from a shell, until a line
        can be read from it, so that a hundred can be let go at the same moment."""
        if os.path.exists(self.sock):
            os.unlink(self.sock)
        env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "NOTIFY_SOCKET")}
        out = open(f"{self.dir}/daemon.log", "ab")
        command = [daemon_bin, "--socket", self.sock, "--state-dir", f"{self.dir}/state", "--alert-log", self.alerts,
                   "--log-level", "warning", "--database-url", f"{url}?application_name={self.name}", *args]
        if gate:
            command = ["sh", "-c", 'read -r _ <"$0"; exec "$@"', gate, *command]
        self.proc = subprocess.Popen(command, env=env, stdout=out, stderr=out)
        out.close()
        self.pids.append(self.proc.pid)
        with open(pids_file, "a") as f:
            f.write(f"{self.proc.pid}\n")

    def status(self):
        try:
            return json.loads(statusclient.get(self.sock, "/status", timeout=2.0)[1])
        except (OSError, ValueError, IndexError):
            return None

    def cpu(self):
        f = stat_fields(self.proc.pid)
        return (int(f[11]) + int(f[12])) / TICK

    def pss_mib(self):
        for line in open(f"/proc/{self.proc.pid}/smaps_rollup"):
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
        return 0.0

def start_all(fleet, args):
    for d in fleet:
        d.start(args)

def start_all_at_once(fleet, args):
    """Spawns every daemon behind one gate, then opens it: returns the moment they were let go
    and, per daemon, when its status socket appeared."""
    gate = f"{work}/gate"
    if os.path.exists(gate):
        os.unlink(gate)
    os.mkfifo(gate)
    for d in fleet:
        d.start(args, gate=gate)
    # Opening the FIFO for reading and writing never blocks; each waiting shell reads one line.
    fd = os.open(gate, os.O_RDWR)
    released = time.time()
    os.write(fd, b"\n" * len(fleet))
    up = [None] * len(fleet)
    deadline = time.time() + 30
    while any(u is None for u in up) and time.time() < deadline:
        for i, d in enumerate(fleet):
            if up[i] is None and os.path.exists(d.sock):
                up[i] = time.time() - released
        time.sleep(0.005)
    os.close(fd)
    return released, up

def stop_all(fleet):
    for d in fleet:
        d.proc.send_signal(signal.SIGTERM)
    for d in fleet:
        try:
            d.proc.wait(20)
        except subprocess.TimeoutExpired:
            log(f"{d.dir} did not stop within 20 s of SIGTERM: killed")
            d.proc.kill(); d.proc.wait()

def wait_for(fleet, predicate, timeout, step=0.1):
    """Polls every daemon's /status until predicate holds for all; returns, per daemon, the time
    it first held (None: never within the timeout)."""
    seen = [None] * len(fleet)
    deadline = time.time() + timeout
    while time.time() < deadline and any(t is None for t in seen):
        for i, d in enumerate(fleet):
            if seen[i] is None:
                s = d.status()
                if s is not None and predicate(s):
                    seen[i] = time.time()
        time.sleep(step)
    return seen

def pending(s):
    return (s.get("spool") or {}).get("pending", 0)

def healthy_and_empty(s):
    return s["state"] == "healthy" and pending(s) == 0

def server_cpu_snapshot():
    """The postmaster's own and reaped children's CPU, and each live client backend's."""
    f = stat_fields(postmaster_pid())
    live = {}
    for pid in client_backends():
        try:
            live[pid] = int(open(f"/proc/{pid}/schedstat").read().split()[0]) / 1e9
        except OSError:
            pass
    return sum(int(v) for v in f[11:15]) / TICK, live

def server_cpu_between(a, b):
    (pm0, live0), (pm1, live1) = a, b
    # A backend alive at the start and gone at the end is in cutime + cstime whole.
    return (pm1 - pm0) + sum(live1.values()) - sum(live0.values())

help_text = subprocess.run([daemon_bin, "--help"], capture_output=True, text=True).stdout
has_modes, has_splay = "--probe-connection" in help_text, "--splay" in help_text
if not has_modes:
    modes = ["fresh"]
machine_model = open("/proc/cpuinfo").read().split("model name")[1].split(":")[1].splitlines()[0].strip()

log("idle server baseline (10 s)")
a = server_cpu_snapshot(); t = time.time(); time.sleep(10); b = server_cpu_snapshot()
idle_share = server_cpu_between(a, b) / (time.time() - t)

steady_rows, outage_rows, restart_rows, integrity_rows, goal_notes = [], [], [], [], []
results = {}
for mode in modes:
    base = f"{work}/{mode}"
    fleet = [Daemon(base, i) for i in range(size)]
    args = ["--interval", "1s", "--timeout", "1s", "--fall", str(FALL), "--rise", str(RISE)]
    if has_modes:
        args += ["--probe-connection", mode] + (["--fresh-every", "30s"] if mode == "session" else [])
    if has_splay:
        args += ["--splay"]
    log(f"{mode}: starting {size} daemons")
    start_all(fleet, args)
    became = wait_for(fleet, healthy_and_empty, 120, step=0.25)
    if any(t is None for t in became):
        raise SystemExit(f"fleet: {sum(t is None for t in became)} daemons never became healthy with an empty spool")
    time.sleep(5)

    # 1. Steady.
    log(f"{mode}: steady run ({seconds} s), load {loadavg()}")
    load0 = loadavg()
    cpu0 = [d.cpu() for d in fleet]
    s0, t0 = server_cpu_snapshot(), time.time()
    time.sleep(seconds)
    s1, t1 = server_cpu_snapshot(), time.time()
    cpu1 = [d.cpu() for d in fleet]
    pss = sum(d.pss_mib() for d in fleet)
    load1 = loadavg()
    elapsed = t1 - t0
    server_share = server_cpu_between(s0, s1) / elapsed
    sessions, _ = connection_log()
    fleet_conns = fleet_sessions(sessions)
    opened = sum(1 for s in fleet_conns if t0 <= s["received"] <= t1)
    daemons_cpu = sum(cpu1) - sum(cpu0)
    probes = size * elapsed / INTERVAL
    steady = {"server": server_share, "opened": opened / elapsed, "sampled": sampler.most(t0, t1),
              "logged": most_at_once(fleet_conns, t0, t1), "one": most_of_one(fleet_conns, t0, t1),
              "daemons": daemons_cpu / elapsed, "pss": pss}
    results[mode] = {"steady": steady}
    steady_rows.append(
        f"| {mode} | {size} | **{server_share * 100:.1f} %** ({(server_share - idle_share) / probes * elapsed * 1000:.2f} ms per probe) | "
        f"{opened / elapsed:.1f} | {steady['sampled']} / {steady['logged']} | {steady['one']} | {daemons_cpu / elapsed * 100:.1f} % "
        f"({daemons_cpu / probes * 1000:.2f} ms per probe) | {pss:.0f} ({pss / size:.1f} each) | {load0} → {load1} |")

    # 2. Outage and restart of the database.
    log(f"{mode}: database outage")
    t_stop = time.time()
    pg_stop()
    down = wait_for(fleet, lambda s: s["state"] == "unhealthy" and pending(s) >= 1, FALL * INTERVAL + TIMEOUT + 30)
    if any(t is None for t in down):
        log(f"{mode}: {sum(t is None for t in down)} daemons were not unhealthy with a spooled event after "
            f"{FALL * INTERVAL + TIMEOUT + 30:.0f} s; starting the server anyway")
    # Past the moment the last one became unhealthy, by a margin: every daemon has tried and
    # failed to deliver, and is in its delivery backoff.
    time.sleep(2)
    held = sum(1 for d in fleet if pending(d.status() or {}) >= 1)
    outage_s = time.time() - t_stop
    log(f"{mode}: database restart after {outage_s:.1f} s down, {held} daemons holding spooled events")
    pg_start()
    emptied = wait_for(fleet, healthy_and_empty, 120)
    t_done = time.time()
    sessions, ready = connection_log()
    t_ready = [r for r in ready if r >= t_stop][0]
    fleet_conns = fleet_sessions(sessions)
    done = [t - t_ready for t in emptied if t is not None]
    never = sum(1 for t in emptied if t is None)
    last = max(emptied) if not never else t_done
    during_sampled = sampler.most(t_ready, last)
    during_logged = most_at_once(fleet_conns, t_ready, last)
    during_one = most_of_one(fleet_conns, t_ready, last)
    refused = sum(1 for s in fleet_conns if s["refused"] and t_ready <= s["received"] <= last)
    results[mode]["outage"] = {"all": max(done) if done else None, "never": never, "most": max(during_sampled, during_logged)}
    outage_rows.append(
        f"| {mode} | {outage_s:.1f} | {held} | **{max(done):.2f}** | {statistics.median(done):.2f} | {never} | "
        f"{during_sampled} / {during_logged} | {during_one} | {refused} |" if done else f"| {mode} | {outage_s:.1f} | {held} | never | | {never} | | | |")

    # 3. The whole fleet restarted at once, with splay and then without.
    for splay in ([True, False] if has_splay else [None]):
        label = {True: "splay", False: "no splay", None: "(no splay setting)"}[splay]
        log(f"{mode}: fleet restart, {label}")
        stop_all(fleet)
        time.sleep(1)
        run_args = [a for a in args if a != "--splay"] + (["--splay"] if splay else ["--no-splay"] if splay is False else [])
        r0, up_at = start_all_at_once(fleet, run_args)
        up = [u for u in up_at if u is not None]
        time.sleep(max(0, r0 + 2 * INTERVAL + 1.5 - time.time()))
        sessions, _ = connection_log()
        received = sorted(s["received"] for s in fleet_sessions(sessions) if r0 <= s["received"] < r0 + 2 * INTERVAL)
        buckets = [0] * int(2 * INTERVAL * 10)
        for at in received:
            buckets[min(int((at - r0) * 10), len(buckets) - 1)] += 1
        mean = sum(buckets) / len(buckets)
        busiest = max(buckets)
        ratio = f"{busiest / mean:.1f}" if mean else "no connection yet"
        # As a fleet of hosts would see it: each daemon's connections timed from its own start
        # (its status socket), as if all had started at the same instant.
        own = [0] * int(2 * INTERVAL * 10)
        for d, u in zip(fleet, up_at):
            if u is None:
                continue
            for s in fleet_sessions(sessions):
                offset = s["received"] - (r0 + u)
                if s["app"] == d.name and -0.05 <= offset < 2 * INTERVAL:
                    own[min(max(int(offset * 10), 0), len(own) - 1)] += 1
        own_first = own[:int(INTERVAL * 10)]
        own_ratio = f"{max(own_first) / (sum(own_first) / len(own_first)):.1f}" if sum(own_first) else "none"
        own_ratio2 = f"{max(own) / (sum(own) / len(own)):.1f}" if sum(own) else "none"
        first = buckets[:int(INTERVAL * 10)]
        first_ratio = f"{max(first) / (sum(first) / len(first)):.1f}" if sum(first) else "no connection yet"
        results[mode][f"restart-{label}"] = ratio
        restart_rows.append(
            f"| {mode} | {label} | {statistics.median(up) * 1000:.0f} / {max(up) * 1000:.0f} | {len(received)} | {busiest} | {mean:.1f} | **{ratio}** | "
            f"{first_ratio} | {' '.join(str(b) for b in buckets)} | **{own_ratio2}** / **{own_ratio}** | {' '.join(str(b) for b in own)} |")
        became = wait_for(fleet, healthy_and_empty, 60, step=0.25)
        if any(t is None for t in became):
            log(f"{mode}: {sum(t is None for t in became)} daemons not healthy with an empty spool 60 s after the restart")

    # Every event a row exactly once, per daemon: its alert-log ids against the rows carrying its pid.
    stop_all(fleet)
    rows = psql("SELECT id::text || ' ' || (metadata->>'pid') || ' ' || md5(concat_ws('|', event_type, payload->>'from', "
                "payload->>'to', payload->>'observed_at')) FROM system_events").splitlines()
    by_pid = {}
    for line in rows:
        event_id, pid, content = line.split()
        by_pid.setdefault(int(pid), []).append((event_id, content))
    lines_total = rows_total = lost = duplicated = extra = mismatched = 0
    for d in fleet:
        ids = [json.loads(l)["id"] for l in open(d.alerts) if l.strip()]
        mine = [r for p in d.pids for r in by_pid.get(p, [])]
        mine_ids = [i for i, _ in mine]
        lines_total += len(ids); rows_total += len(mine)
        lost_here = len(set(ids) - set(mine_ids))
        extra_here = len(set(mine_ids) - set(ids))
        # The same line twice, or the same transition (type, from, to, observed_at) in two rows.
        dup_here = (len(ids) - len(set(ids))) + (len(mine) - len({c for _, c in mine}))
        lost += lost_here; extra += extra_here; duplicated += dup_here
        mismatched += 1 if (lost_here or extra_here or dup_here) else 0
    # Rows no daemon of the fleet claims: a pid in metadata that is none of theirs.
    extra += len(rows) - rows_total
    results[mode]["integrity"] = {"lost": lost, "duplicated": duplicated, "extra": extra, "mismatched": mismatched}
    integrity_rows.append(f"| {mode} | {lines_total} | {len(rows)} | **{lost}** | **{duplicated}** | {extra} | {mismatched} of {size} |")
    psql("TRUNCATE system_events")

report = [f"Measured {time.strftime('%Y-%m-%d %H:%M', time.gmtime())} UTC at commit {commit} by `scripts/fleet`, on "
          f"{os.cpu_count()} cores, {machine_model}; PostgreSQL {server_version}, max_connections 300, "
          f"log_connections and log_disconnections on, autovacuum off. {size} daemons, interval 1 s, timeout 1 s, "
          f"fall {FALL}, rise {RISE}{', `--fresh-every 30s` in session mode' if has_modes else ''}; daemons, server and "
          f"this script share the machine with other work (load averages in the first table). The idle server used "
          f"{idle_share * 100:.2f} % of one core.\n"]
report.append(f"#### Steady, {seconds} s (goal: session mode ≤ 5 % of one core on the server)\n")
report.append("| mode | daemons | server CPU, share of one core | connections opened per second | most client backends at once (sampled / from the log) | most of one daemon's at once | daemons' CPU, share of one core | daemons' PSS, MiB | load average before → after |\n|---|---|---|---|---|---|---|---|---|")
report += steady_rows
report.append("\nServer CPU: the postmaster's own and its reaped children's (`/proc/PID/stat` fields 14–17) plus the "
              "live backends' (`/proc/PID/schedstat`) over the run; per probe after the idle server's share is taken off. "
              "Connections opened: `connection received` lines of the fleet in the server's log.\n")
report.append("#### Database outage, then restart (goals: all spools empty within 10 s of the server accepting connections; 0 lost, 0 duplicated; ≤ 100 fleet connections at any moment)\n")
report.append("| mode | server down, s | daemons holding spooled events | all healthy with an empty spool, s after `ready to accept connections` | median daemon, s | never | most fleet connections meanwhile (sampled / from the log) | most of one daemon's at once | refused |\n|---|---|---|---|---|---|---|---|---|")
report += outage_rows
report.append("\n| mode | alert-log lines | system_events rows | lost | duplicated | rows without an alert line | daemons not matching |\n|---|---|---|---|---|---|---|")
report += integrity_rows
report.append("\nPer daemon over the whole run of the mode (first start, outage, restarts): the ids of its alert-log lines "
              "against the ids of the rows whose `metadata.pid` is one of its processes'.\n")
report.append("#### The whole fleet restarted at once (goal: busiest 100 ms bucket ≤ 2 × the mean)\n")
report.append("| mode | first probe | status socket up after the gate opened, median / last, ms | connections in the next 2 s | busiest 100 ms | mean | busiest / mean | busiest / mean, first interval only | per 100 ms | timed from each daemon's own start: busiest / mean, two intervals / first interval | per 100 ms of each daemon's own time |\n|---|---|---|---|---|---|---|---|---|---|---|")
report += restart_rows
report.append("\nAll daemons are spawned behind one gate (a FIFO each waits on before it execs the daemon) and let go "
              "at the same moment; buckets count the fleet's `connection received` lines from that moment. A hundred "
              "processes starting at once on two cores are themselves spread over the time in the third column, which a "
              "fleet of hosts would not be: the last two columns time each daemon's connections from its own start (its "
              "status socket appearing), as hosts started at the same instant would send them (each daemon names its "
              "connections, `application_name=dreamnet-healthd-NNN`, so the log tells them apart). In session mode a daemon connects "
              "once and then keeps its session, so the second interval is empty by design: the first interval's ratio "
              "is the one that says whether they arrive together.")
text = "\n".join(report) + "\n"
open(report_path, "w").write(text)
print(text)
sampler.stop.set()
