"""The soak's driver: the daemon against a throwaway PostgreSQL while faults are injected at
random, then the no-loss invariant and the memory rule are checked (scripts/soak says what each
fault and rule is). Run by scripts/soak, which builds the daemon and starts the cluster:

    python3 -m harness.soak DAEMON WORK PORT SECONDS SEED PG_BINDIR
"""
import json, os, random, signal, socket, statistics, subprocess, sys, threading, time

from pathlib import Path

from harness import memcurve, procmem, statusclient
from harness.cluster import Cluster

# The web app's table, as examples/ gives it to operators (checked against the daemon's own).
SYSTEM_EVENTS_SCHEMA = Path(__file__).resolve().parents[2] / "examples" / "sql" / "system_events.sql"

daemon_bin, work, port, seconds, seed, pg_bin = sys.argv[1:7]
port, seconds, seed = int(port), int(seconds), int(seed)

sock_path = f"{work}/status.sock"
state_dir = f"{work}/state"
alert_log = f"{work}/alerts.log"
config_path = f"{work}/healthd.conf"
url = f"postgresql://healthd@127.0.0.1:{port}/postgres"

rng = random.Random(seed)                    # which fault, when, for how long
payload_rng = random.Random(seed ^ 0x5EED)   # bytes thrown at the socket

class SetupError(Exception):
    pass

class RunAborted(Exception):
    """A violation after which the run cannot go on (a daemon that will not start again)."""

def say(message):
    lines = message.split("\n")
    print("\n".join([f"soak: {lines[0]}"] + [f"soak:     {line}" for line in lines[1:]]), flush=True)

def utc(epoch):
    return time.strftime("%H:%M:%S", time.gmtime(epoch)) + f".{int(epoch * 1000) % 1000:03d}Z"

timeline_file = open(f"{work}/timeline.log", "a", buffering=1)
timeline_lock = threading.Lock()
def timeline(message):
    """What happened when (wall clock, as in the daemon's and the server's logs), for diagnosis."""
    with timeline_lock:
        timeline_file.write(f"{utc(time.time())} {message}\n")

violations = []
reported_at_once = [True]    # during the run; the final check reports in the summary
def violation(message):
    violations.append(message)
    timeline(f"VIOLATION: {message}")
    if reported_at_once[0]:
        say(f"VIOLATION: {message}")

# ---------------------------------------------------------------- PostgreSQL

# The cluster scripts/soak started (harness.cluster); the faults stop and start it again.
cluster = Cluster(pg_bin, work, port)

def psql(sql, timeout=15):
    """(ok, output) of one statement as the superuser, over TCP (trust)."""
    return cluster.try_psql(sql, timeout=timeout)

def db_start():
    return cluster.try_pg_ctl("start")

def db_stop(mode):
    return cluster.try_pg_ctl("stop", mode=mode)

def postmaster_pid():
    return cluster.postmaster_pid()

# ---------------------------------------------------------------- status socket

def http_get(path, timeout=3.0):
    """Body of GET path on the status socket, parsed as JSON; raises OSError/ValueError."""
    status, body = statusclient.get(sock_path, path, timeout)
    if status != 200:
        raise ValueError(f"reply {status}")
    return json.loads(body)

# ---------------------------------------------------------------- the daemon

class Life:
    def __init__(self, index, proc, log_path):
        self.index = index
        self.proc = proc
        self.pid = proc.pid
        self.log_path = log_path
        self.started = time.monotonic()
        self.ended = None
        self.killed = False        # by this script (SIGKILL or the final SIGTERM)
        self.memory = []           # memcurve.Sample, seconds since the life began
        self.events = []           # ids in the order /events listed them, oldest first
        self.seen = set()

    def duration(self):
        return (self.ended or time.monotonic()) - self.started

lives = []
lives_lock = threading.Lock()
deliveries = {}        # id -> last delivery shown on /events
event_info = {}        # id -> (from, to)

# The probe settings live in the config file, not in flags (flags override the file), so that a
# SIGHUP with a rewritten file changes what the daemon does.
def write_config(interval, timeout):
    tmp = config_path + ".tmp"
    with open(tmp, "w") as f:
        f.write("# dreamnet-healthd soak configuration (rewritten by the SIGHUP fault)\n"
                f"interval = {interval}\ntimeout = {timeout}\nconnect_timeout = {timeout}\nfall = 1\nrise = 1\n"
                "flap_threshold = 1000\n")
    os.replace(tmp, config_path)

def current_life():
    with lives_lock:
        return lives[-1] if lives else None

def start_daemon(wait_for=None, first=False):
    """Starts a new life; waits until it answers /status (and reports `wait_for`, if given).
    The first start failing is a set-up error; a restart failing is a violation."""
    def fail(message):
        if first:
            raise SetupError(message)
        violation(message)
        raise RunAborted(message)

    with lives_lock:
        index = len(lives) + 1
        log_path = f"{work}/daemon-{index}.log"
        env = {k: v for k, v in os.environ.items() if k not in ("JOURNAL_STREAM", "NOTIFY_SOCKET", "DATABASE_URL", "LISTEN_FDS", "LISTEN_PID",
                                                              "DREAMNET_HEALTHD_FAULT", "WATCHDOG_USEC", "WATCHDOG_PID")}
        with open(log_path, "wb") as log_file:
            proc = subprocess.Popen(
                [daemon_bin, "--database-url", url, "--socket", sock_path, "--state-dir", state_dir,
                 "--alert-log", alert_log, "--log-level", "info", "--config", config_path],
                stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, env=env, start_new_session=True)
        life = Life(index, proc, log_path)
        lives.append(life)
    timeline(f"daemon life {index} started, pid {proc.pid}")
    with open(f"{work}/daemon.pid", "w") as f:
        f.write(f"{proc.pid}\n")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            fail(f"daemon life {index} exited at start with status {proc.returncode}; log: {log_path}")
        try:
            status = http_get("/status", timeout=1.0)
            if status.get("pid") == proc.pid and (wait_for is None or status.get("state") == wait_for):
                timeline(f"daemon life {index} answers: {status.get('state')}")
                return life
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    fail(f"daemon life {index} (pid {proc.pid}) did not answer on {sock_path} within 60 s; log: {log_path}")

def kill_daemon(life):
    """SIGKILL, unless this life was already killed or has ended; whether it was sent."""
    with lives_lock:
        if life.ended is not None or life.killed:
            return False
        life.killed = True
        try:
            os.kill(life.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    timeline(f"daemon life {life.index} (pid {life.pid}) killed -9")
    return True

def reap(life):
    life.proc.wait(30)
    if life.ended is None:
        life.ended = time.monotonic()

# ---------------------------------------------------------------- background threads

stop_threads = threading.Event()
poll_stats = {"ok": 0, "failed": 0, "failing": False}

def merge_events(life, events):
    new = []
    for event in reversed(events):              # oldest first
        eid = event["id"].lower()
        if eid not in life.seen:
            life.seen.add(eid)
            life.events.append(eid)
            new.append(f"{eid} ({event.get('from')} -> {event.get('to')}, {event.get('delivery')})")
        deliveries[eid] = event.get("delivery")
        event_info[eid] = (event.get("from"), event.get("to"))
    return new

def poll_events_once():
    life = current_life()
    if life is None or life.ended is not None or life.killed:
        return
    try:
        events = http_get("/events?limit=1000", timeout=2.0)["events"]
    except (OSError, ValueError, KeyError) as error:
        poll_stats["failed"] += 1
        if not poll_stats["failing"]:
            timeline(f"/events poll of life {life.index} failed: {error!r} (and the polls after it, until one is answered)")
        poll_stats["failing"] = True
        return
    # A reply from another life than the one asked is dropped (a restart in between).
    if current_life() is not life:
        return
    with lives_lock:
        new = merge_events(life, events)
    if new:
        timeline(f"/events of life {life.index} shows " + ", ".join(new))
    poll_stats["ok"] += 1
    poll_stats["failing"] = False

def poller():
    while not stop_threads.wait(0.15):
        poll_events_once()

memory_log = open(f"{work}/memory.tsv", "a", buffering=1)
memory_log.write("life\tseconds\trss_kib\tanon_kib\tfile_kib\n")

def rss_sampler():
    """The daemon's resident set and its anonymous and file-backed parts, every 2 s, into each
    life's samples and memory.tsv."""
    while not stop_threads.wait(2.0):
        life = current_life()
        if life is None or life.ended is not None:
            continue
        try:
            memory = procmem.read(life.pid)
        except (OSError, ValueError):
            continue
        sample = memcurve.Sample(time.monotonic() - life.started, memory.rss, memory.anon, memory.file)
        life.memory.append(sample)
        memory_log.write(f"{life.index}\t{sample.seconds:.1f}\t{memory.rss >> 10}\t{memory.anon >> 10}\t{memory.file >> 10}\n")

# A kill armed to fire the moment the daemon logs a transition: the log line is written after the
# event is in the spool and before its alert line, so this aims at the window between the two.
armed = {"life": None, "until": 0.0, "fired_at": None}
armed_lock = threading.Lock()
armed_wake = threading.Event()
TRANSITION_MARKERS = (b"database unhealthy (was ", b"database healthy (was ", b"database not-configured (was ")

def armed_killer():
    while not stop_threads.is_set():
        armed_wake.wait(0.5)
        with armed_lock:
            life = armed["life"]
        if life is None:
            continue
        armed_wake.clear()
        try:
            offset = os.path.getsize(life.log_path)
        except OSError:
            offset = 0
        tail = b""
        while not stop_threads.is_set():
            with armed_lock:
                if armed["life"] is not life or time.monotonic() > armed["until"]:
                    break
            try:
                size = os.path.getsize(life.log_path)
            except OSError:
                size = offset
            if size > offset:
                with open(life.log_path, "rb") as f:
                    f.seek(offset)
                    chunk = f.read(size - offset)
                offset = size
                tail = (tail + chunk)[-4096:]
                if any(m in tail for m in TRANSITION_MARKERS):
                    if kill_daemon(life):
                        with armed_lock:
                            armed["fired_at"] = time.time()
                    timeline(f"armed kill: life {life.index} had logged a transition")
                    break
            else:
                time.sleep(0.0002)
        with armed_lock:
            if armed["life"] is life:
                armed["life"] = None

# ---------------------------------------------------------------- faults

counts = {}
variants = {}
def count(kind, variant=None):
    counts[kind] = counts.get(kind, 0) + 1
    if variant:
        key = (kind, variant)
        variants[key] = variants.get(key, 0) + 1

active = {}              # kind -> {"until": monotonic, ...}
rotations = [0]
kill_free_after = 0.6    # fraction of the run after which the daemon is no longer killed
db_state = {"stopped": False, "frozen": False}
kill_times = []          # (wall clock, life index, how)
flood_sockets = []
flood_stats = {"connections": 0, "refused": 0, "garbage_bytes": 0}

def db_up():
    return not db_state["stopped"] and not db_state["frozen"]

def daemon_running():
    life = current_life()
    return life is not None and life.ended is None and not life.killed and time.monotonic() - life.started > 0.5

def inject(kind, now):
    hold = rng.uniform(0.2, 2.5)
    entry = {"until": now + hold}
    timeline(f"inject {kind}")
    if kind == "db-stop":
        mode = rng.choice(["fast", "immediate"])
        timeline(f"pg_ctl stop -m {mode}")
        ok, out = db_stop(mode)
        if not ok:
            raise SetupError(f"pg_ctl stop -m {mode} failed: {out}")
        db_state["stopped"] = True
        count(kind, mode)
    elif kind == "db-freeze":
        pid = postmaster_pid()
        if pid is None:
            raise SetupError("no postmaster.pid to freeze")
        os.kill(pid, signal.SIGSTOP)
        db_state["frozen"] = True
        entry["pid"] = pid
        count(kind)
    elif kind == "backend-terminate":
        ok, out = psql("SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE usename = 'healthd'")
        count(kind, None if ok else "psql failed")
        return                                          # instant: nothing to undo
    elif kind in ("insert-revoke", "read-only"):
        # Undone even when psql failed: it may have failed after the commit.
        ok, out = psql("REVOKE INSERT ON system_events FROM healthd" if kind == "insert-revoke"
                       else "ALTER ROLE healthd SET default_transaction_read_only = on")
        if not ok:
            timeline(f"{kind}: psql failed: {out}")
        count(kind, None if ok else "psql failed")
    elif kind == "daemon-kill":
        life = current_life()
        if rng.random() < 0.5:
            kill_daemon(life)
            kill_times.append((time.time(), life.index, "at once"))
            count(kind, "at once")
        else:
            # Held longer, so that another fault (or its undo) makes a transition meanwhile.
            entry["until"] = now + rng.uniform(1.0, 4.0)
            entry["armed"] = True
            with armed_lock:
                armed.update(life=life, until=entry["until"], fired_at=None)
            timeline(f"armed kill: life {life.index}, until the next transition or {entry['until'] - now:.1f} s")
            armed_wake.set()
        entry["life"] = life
    elif kind == "sighup":
        interval, timeout = rng.choice([("200ms", "500ms"), ("300ms", "500ms"), ("200ms", "400ms"), ("300ms", "400ms")])
        write_config(interval, timeout)
        timeline(f"config: interval {interval}, timeout {timeout}")
        os.kill(current_life().pid, signal.SIGHUP)
        count(kind)
        return
    elif kind == "log-rotate":
        rotations[0] += 1
        entry["n"] = rotations[0]
        entry["signal"] = rng.random() < 0.5
        try:
            os.rename(alert_log, f"{alert_log}.{rotations[0]}")
            timeline(f"alerts.log renamed to alerts.log.{rotations[0]}")
        except FileNotFoundError:
            timeline(f"no alerts.log to rotate (rotation {rotations[0]})")
        count(kind, "then SIGUSR1" if entry["signal"] else "no signal")
    elif kind == "socket-flood":
        flood(entry)
        count(kind)
    active[kind] = entry

def flood(entry):
    n = 200
    for _ in range(n):
        c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        c.settimeout(0.5)
        try:
            c.connect(sock_path)
        except OSError:
            flood_stats["refused"] += 1
            c.close()
            continue
        flood_stats["connections"] += 1
        what = payload_rng.random()
        try:
            if what < 0.5:
                data = payload_rng.randbytes(payload_rng.randint(1, 64 * 1024))
                flood_stats["garbage_bytes"] += len(data)
                c.sendall(data)
            elif what < 0.7:
                c.sendall(b"GET /status HTTP/1.1\r\nHost: x\r\nContent-Le")
                if payload_rng.random() < 0.5:
                    c.close()                           # gone in the middle of a request
                    continue
            elif what < 0.85:
                c.sendall(b"GET /events?limit=1000 HTTP/1.1\r\nHost: x\r\n\r\n" * 20)   # never read
        except OSError:
            pass
        flood_sockets.append(c)

def undo(kind, entry):
    timeline(f"undo {kind}")
    if kind == "db-stop":
        ok, out = db_start()
        if not ok:
            time.sleep(1)
            ok, out = db_start()
            if not ok:
                raise SetupError(f"pg_ctl start failed: {out}")
        db_state["stopped"] = False
    elif kind == "db-freeze":
        try:
            os.kill(entry["pid"], signal.SIGCONT)
        except ProcessLookupError:
            pass
        db_state["frozen"] = False
    elif kind in ("insert-revoke", "read-only"):
        sql = ("GRANT INSERT ON system_events TO healthd" if kind == "insert-revoke"
               else "ALTER ROLE healthd RESET default_transaction_read_only")
        ok, out = psql(sql)
        if not ok:
            return False                                # tried again on the next turn
    elif kind == "daemon-kill":
        life = entry["life"]
        if entry.get("armed"):
            with armed_lock:
                armed["life"] = None
            if kill_daemon(life):
                kill_times.append((time.time(), life.index, "armed, no transition came: at the end of the hold"))
                count(kind, "armed, no transition came")
            else:
                with armed_lock:
                    fired_at = armed["fired_at"] or time.time()
                kill_times.append((fired_at, life.index, "at a transition"))
                count(kind, "at a transition")
        reap(life)
        start_daemon()
    elif kind == "log-rotate":
        if entry["signal"] and daemon_running():
            os.kill(current_life().pid, signal.SIGUSR1)
            timeline("SIGUSR1 sent")
    elif kind == "socket-flood":
        for c in flood_sockets:
            try:
                if payload_rng.random() < 0.3:
                    c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")
                c.close()
            except OSError:
                pass
        flood_sockets.clear()
        # The daemon must still answer.
        deadline = time.monotonic() + 15
        while True:
            try:
                http_get("/status", timeout=2.0)
                break
            except (OSError, ValueError) as error:
                if not daemon_running() or time.monotonic() > deadline:
                    if daemon_running():
                        violation(f"status socket did not answer within 15 s of a flood: {error}")
                    break
                time.sleep(0.1)
    return True

KINDS = {  # kind: weight
    "db-stop": 3, "db-freeze": 3, "backend-terminate": 2, "insert-revoke": 2, "read-only": 2,
    "daemon-kill": 2, "sighup": 2, "log-rotate": 2, "socket-flood": 1,
}

def available(kind, fraction):
    if kind in active:
        return False
    if kind in ("db-stop", "db-freeze"):
        return db_up()
    if kind in ("backend-terminate", "insert-revoke", "read-only"):
        return db_up()
    if kind == "daemon-kill":
        return fraction < kill_free_after and daemon_running()
    if kind in ("sighup", "socket-flood"):
        return daemon_running()
    return True

def check_daemon_alive():
    """A daemon that exits without being told to is a violation; it is started again."""
    life = current_life()
    if life is None or life.ended is not None or life.killed:
        return
    if life.proc.poll() is not None:
        life.ended = time.monotonic()
        violation(f"daemon life {life.index} (pid {life.pid}) exited by itself with status {life.proc.returncode}; log: {life.log_path}")
        start_daemon()

# ---------------------------------------------------------------- the run

def setup():
    for sql in ("CREATE ROLE healthd LOGIN", SYSTEM_EVENTS_SCHEMA.read_text(),
                "GRANT SELECT, INSERT ON system_events TO healthd"):
        ok, out = psql(sql)
        if not ok:
            raise SetupError(f"set-up SQL failed: {out}")
    write_config("200ms", "500ms")
    start_daemon(wait_for="healthy", first=True)

def run_faults():
    started = time.monotonic()
    end = started + seconds
    next_inject = started + rng.uniform(0.3, 1.0)
    while True:
        now = time.monotonic()
        if now >= end:
            break
        check_daemon_alive()
        for kind, entry in sorted(active.items(), key=lambda item: item[1]["until"]):
            if entry["until"] <= now:
                if kind in ("insert-revoke", "read-only") and not db_up():
                    continue                            # undone once the server is back
                if undo(kind, entry):
                    del active[kind]
        now = time.monotonic()
        if now >= next_inject:
            fraction = (now - started) / seconds
            choices = [k for k in KINDS if available(k, fraction)]
            if choices:
                kind = rng.choices(choices, weights=[KINDS[k] for k in choices])[0]
                inject(kind, now)
            next_inject = max(now, next_inject) + rng.uniform(0.2, 1.5)
        wake = min([next_inject, end] + [e["until"] for e in active.values()])
        time.sleep(max(0.01, min(0.1, wake - time.monotonic())))
    return time.monotonic() - started

def undo_everything():
    order = ["db-freeze", "db-stop", "daemon-kill", "insert-revoke", "read-only", "log-rotate", "socket-flood"]
    for kind in order:
        if kind in active:
            entry = active.pop(kind)
            for _ in range(30):
                if undo(kind, entry):
                    break
                time.sleep(1)
    # Whatever happened above: privileges back, role writable again.
    for sql in ("GRANT SELECT, INSERT ON system_events TO healthd", "ALTER ROLE healthd RESET default_transaction_read_only"):
        ok, out = psql(sql, timeout=30)
        if not ok:
            raise SetupError(f"could not restore the role: {out}")
    check_daemon_alive()

def wait_recovered():
    deadline = time.monotonic() + 60
    last = None
    while time.monotonic() < deadline:
        check_daemon_alive()
        try:
            last = http_get("/status", timeout=2.0)
            spool = last.get("spool", {})
            if last.get("state") == "healthy" and spool.get("pending") == 0 and spool.get("in_memory") == 0:
                return last, True
        except (OSError, ValueError):
            pass
        time.sleep(0.2)
    return last, False

def read_rows():
    ok, out = psql("SELECT id, event_type, coalesce(payload->>'from', ''), coalesce(payload->>'to', ''), "
                   "extract(epoch FROM timestamp), coalesce(metadata->>'pid', ''), coalesce(metadata->>'delivery', '') "
                   "FROM system_events ORDER BY timestamp, (metadata->>'seq')::bigint", timeout=60)
    if not ok:
        raise SetupError(f"could not read system_events: {out}")
    rows = []
    for line in out.splitlines():
        if line:
            eid, kind, frm, to, at, pid, delivery = line.split("|")
            rows.append({"id": eid.lower(), "type": kind, "from": frm, "to": to, "at": float(at), "pid": pid, "delivery": delivery})
    return rows

def read_alerts():
    files = [f"{alert_log}.{n}" for n in range(1, rotations[0] + 1)] + [alert_log]
    lines, bad = [], []
    for path in files:
        try:
            with open(path, "rb") as f:
                content = f.read()
        except FileNotFoundError:
            continue
        for number, raw in enumerate(content.split(b"\n"), 1):
            if not raw:
                continue
            try:
                line = json.loads(raw)
                lines.append({"id": str(line["id"]).lower(), "type": line.get("event_type"),
                              "from": (line.get("payload") or {}).get("from"), "to": (line.get("payload") or {}).get("to")})
            except (ValueError, KeyError, TypeError, AttributeError):
                bad.append(f"{os.path.basename(path)}:{number}: {raw[:120]!r}")
    return lines, bad

def first_mismatch(a, b):
    for i, (x, y) in enumerate(zip(a, b)):
        if x != y:
            return i
    return min(len(a), len(b))

def short(ids, limit=10):
    ids = list(ids)
    text = ", ".join(ids[:limit])
    return text + (f", ... ({len(ids)} in all)" if len(ids) > limit else "")

def describe_row(row):
    life = next((l for l in lives if str(l.pid) == row["pid"]), None)
    text = f"{row['id']} ({row['from']} -> {row['to']} at {utc(row['at'])}, pid {row['pid'] or '?'}"
    if life:
        text += f" = daemon life {life.index}"
        kills = [k for k in kill_times if k[1] == life.index]
        if kills:
            gap = kills[0][0] - row["at"]
            text += f", which was killed -9 ({kills[0][2]}) {gap * 1000:.0f} ms after this event's observation time"
    return text + ")"

def check(final_status, recovered):
    reported_at_once[0] = False
    rows = read_rows()
    alerts, bad = read_alerts()
    row_ids = [r["id"] for r in rows]
    alert_ids = [a["id"] for a in alerts]
    by_id = {r["id"]: r for r in rows}

    # 1. alert log == system_events
    if bad:
        violation(f"alert log lines that are not JSON events: {'; '.join(bad[:5])}{' ...' if len(bad) > 5 else ''}")
    for name, ids in (("system_events", row_ids), ("the alert log", alert_ids)):
        dups = sorted({i for i in ids if ids.count(i) > 1}) if len(set(ids)) != len(ids) else []
        if dups:
            violation(f"ids twice in {name}: {short(dups)}")
    missing_alerts = [i for i in row_ids if i not in set(alert_ids)]
    extra_alerts = [i for i in alert_ids if i not in by_id]
    if missing_alerts:
        violation(f"{len(missing_alerts)} system_events row(s) with no alert log line (rule 1):\n"
                  + "\n".join(describe_row(by_id[i]) for i in missing_alerts[:10])
                  + ("\n..." if len(missing_alerts) > 10 else ""))
    if extra_alerts:
        violation(f"{len(extra_alerts)} alert log line(s) with no system_events row (rule 1): {short(extra_alerts)}")
    common = set(row_ids) & set(alert_ids)
    a = [i for i in row_ids if i in common]
    b = [i for i in alert_ids if i in common]
    if a != b:
        at = first_mismatch(a, b)
        violation(f"alert log and system_events list the same ids in another order (rule 1): from position {at}: "
                  f"rows {short(a[at:at + 3])} vs alert lines {short(b[at:at + 3])}")
    mismatched = [x["id"] for x in alerts if x["id"] in by_id and x["type"] == "database.health.transition"
                  and (x["from"], x["to"]) != (by_id[x["id"]]["from"], by_id[x["id"]]["to"])]
    if mismatched:
        violation(f"alert lines whose from/to differ from their row: {short(mismatched)}")

    # 2. what the daemon showed on /events
    shown = []
    seen_any = set()
    for life in lives:
        for eid in life.events:
            if eid not in seen_any:
                seen_any.add(eid)
                shown.append(eid)
    dropped = [e for e in shown if deliveries.get(e) == "dropped"]
    suppressed = [e for e in shown if deliveries.get(e) == "suppressed"]
    expected = [e for e in shown if deliveries.get(e) not in ("dropped", "suppressed")]
    if dropped:
        violation(f"/events showed {len(dropped)} dropped event(s) (spool limit reached?): {short(dropped)}")
    not_in_db = [e for e in expected if e not in by_id]
    if not_in_db:
        violation(f"{len(not_in_db)} transition(s) shown on /events are not in system_events (rule 2): "
                  + short(f"{e} ({event_info.get(e, ('?', '?'))[0]} -> {event_info.get(e, ('?', '?'))[1]}, "
                          f"delivery {deliveries.get(e)})" for e in not_in_db))
    position = {eid: i for i, eid in enumerate(row_ids)}
    in_db = [e for e in expected if e in position]
    out_of_order = [(p, q) for p, q in zip(in_db, in_db[1:]) if position[p] > position[q]]
    if out_of_order:
        violation(f"{len(out_of_order)} pair(s) of transitions in another order in system_events than on /events (rule 2): "
                  + short(f"{p} before {q}" for p, q in out_of_order))
    transition_rows = [r for r in rows if r["type"] == "database.health.transition"]
    unseen = [r["id"] for r in transition_rows if r["id"] not in seen_any]

    # 3. the chain
    breaks = []
    previous = "unknown"
    for r in transition_rows:
        if r["from"] != previous:
            breaks.append(f"{r['id']} is {r['from']} -> {r['to']} after a transition to {previous}")
        previous = r["to"]
    if breaks:
        violation(f"{len(breaks)} break(s) in the chain of transitions (rule 3): {short(breaks, 5)}")

    # 4. the final state
    final_state = (final_status or {}).get("state")
    if not recovered:
        spool = (final_status or {}).get("spool", {})
        violation(f"not recovered within 60 s of the last fault: state {final_state}, spool pending "
                  f"{spool.get('pending')}, in memory {spool.get('in_memory')}, last delivery error {spool.get('last_delivery_error')!r}")
    elif final_state != "healthy":
        violation(f"final state {final_state}, expected healthy (rule 4)")
    if not transition_rows:
        violation("no transition rows at all (rule 4)")
    elif transition_rows[-1]["to"] != "healthy":
        violation(f"last transition row {transition_rows[-1]['id']} is to {transition_rows[-1]['to']}, expected healthy (rule 4)")

    other_rows = len(rows) - len(transition_rows)
    return {"rows": len(rows), "transition_rows": len(transition_rows), "other_rows": other_rows,
            "alert_lines": len(alerts), "alert_files": len([p for p in [f"{alert_log}.{n}" for n in range(1, rotations[0] + 1)] + [alert_log] if os.path.exists(p)]),
            "shown": len(shown), "suppressed": len(suppressed), "unseen": unseen, "direct": sum(r["delivery"] == "direct" for r in rows),
            "spooled": sum(r["delivery"] == "spooled" for r in rows)}

def rss_report():
    lines = []
    for life in lives:
        values = [sample.rss / procmem.MIB for sample in life.memory]
        anon = [sample.anon / procmem.MIB for sample in life.memory]
        if values:
            lines.append(f"life {life.index}: {life.duration():.0f} s, {len(values)} samples, RSS "
                         f"min {min(values):.1f} / median {statistics.median(values):.1f} / max {max(values):.1f} MiB, "
                         f"RssAnon median {statistics.median(anon):.1f} / max {max(anon):.1f} MiB")
        else:
            lines.append(f"life {life.index}: {life.duration():.0f} s, no samples")
    longest = max(lives, key=lambda l: l.duration())
    verdict_growth = memcurve.growth(longest.memory, longest.duration())
    if verdict_growth is not None:
        verdict = f"longest life {longest.index} ({longest.duration():.0f} s): {verdict_growth.describe()}"
        lines.append(f"curve of life {longest.index}:")
        lines.extend(f"  {row}" for row in memcurve.format_curve(longest.memory))
        if verdict_growth.violates:
            violation(f"resident memory grew over life {longest.index}: {verdict_growth.first_rss / procmem.MIB:.1f} -> "
                      f"{verdict_growth.last_rss / procmem.MIB:.1f} MiB (rule 5)")
    else:
        verdict = f"longest life {longest.index} lasted {longest.duration():.0f} s (< 60 s or too few samples): growth not judged"
    return lines, verdict

def stop_daemon():
    life = current_life()
    if life is None or life.ended is not None:
        return
    life.killed = True
    try:
        os.kill(life.pid, signal.SIGTERM)
        code = life.proc.wait(20)
        life.ended = time.monotonic()
        if code != 0:
            violation(f"daemon life {life.index} exited with status {code} on SIGTERM; log: {life.log_path}")
    except subprocess.TimeoutExpired:
        life.proc.kill()
        life.proc.wait(10)
        life.ended = time.monotonic()
        violation(f"daemon life {life.index} did not stop within 20 s of SIGTERM; log: {life.log_path}")

def main():
    started = time.monotonic()
    setup()
    threads = [threading.Thread(target=t, daemon=True) for t in (poller, rss_sampler, armed_killer)]
    for t in threads:
        t.start()
    say(f"injecting faults for {seconds} s (PostgreSQL 127.0.0.1:{port}, daemon pid {current_life().pid})")
    fault_time = run_faults()
    undo_everything()
    recovery_started = time.monotonic()
    final_status, recovered = wait_recovered()
    recovery = time.monotonic() - recovery_started
    time.sleep(1)
    stop_threads.set()
    for t in threads:
        t.join(10)
    poll_events_once()
    try:
        final_status = http_get("/status", timeout=3.0)
    except (OSError, ValueError):
        pass
    stop_daemon()
    figures = check(final_status, recovered)
    rss_lines, rss_verdict = rss_report()

    total = sum(counts.values())
    say(f"seed {seed}")
    say(f"duration: {fault_time:.0f} s of faults, recovery {recovery:.1f} s, {time.monotonic() - started:.0f} s in all")
    say(f"faults injected: {total} ({total / fault_time * 60:.0f}/min)")
    for kind in KINDS:
        detail = ", ".join(f"{v} {n}" for (k, v), n in sorted(variants.items()) if k == kind)
        say(f"  {kind:<18} {counts.get(kind, 0):>4}" + (f"  ({detail})" if detail else ""))
    say(f"socket floods: {flood_stats['connections']} connections, {flood_stats['refused']} refused, "
        f"{flood_stats['garbage_bytes'] / 1048576:.1f} MiB of garbage; alert log rotated {rotations[0]} times")
    say(f"daemon lives: {len(lives)} (killed -9: {len(kill_times)})")
    say(f"system_events rows: {figures['rows']} ({figures['transition_rows']} transitions, {figures['other_rows']} other; "
        f"delivery direct {figures['direct']}, spooled {figures['spooled']})")
    say(f"alert lines: {figures['alert_lines']} in {figures['alert_files']} file(s)")
    say(f"/events: {figures['shown']} transitions shown ({figures['suppressed']} suppressed); "
        f"{figures['transition_rows'] - len(figures['unseen'])} of {figures['transition_rows']} transition rows seen by the poller, "
        f"{len(figures['unseen'])} never (expected only just before a kill -9); polls {poll_stats['ok']} answered, {poll_stats['failed']} not")
    if figures["unseen"]:
        say(f"  never seen on /events: {short(figures['unseen'], 5)}")
    say(f"final /status: state {(final_status or {}).get('state')}, transitions {(final_status or {}).get('transitions')}, "
        f"spool {json.dumps((final_status or {}).get('spool'), sort_keys=True)}")
    say(f"daemon resident memory (every sample: {work}/memory.tsv):")
    for line in rss_lines:
        say(f"  {line}")
    say(f"  {rss_verdict}")
    if violations:
        for v in violations:
            say(f"FAILED: {v}")
        say(f"daemon logs: {work}/daemon-1.log to daemon-{len(lives)}.log (one per life); what was done when: {work}/timeline.log")
        return 1
    say("OK")
    return 0

try:
    code = main()
except SetupError as error:
    say(f"set-up error: {error}")
    code = 2
except RunAborted:
    say(f"seed {seed}: run aborted after {sum(counts.values())} faults")
    for v in violations:
        say(f"FAILED: {v}")
    code = 1
except KeyboardInterrupt:
    code = 130
except Exception:
    import traceback
    traceback.print_exc()
    say("set-up error: the driver failed (traceback above)")
    code = 2
finally:
    stop_threads.set()
    for c in flood_sockets:
        c.close()
    life = current_life()
    if life is not None and life.proc.poll() is None:
        life.killed = True
        life.proc.terminate()
        try:
            life.proc.wait(10)
        except subprocess.TimeoutExpired:
            life.proc.kill()
sys.exit(code)
