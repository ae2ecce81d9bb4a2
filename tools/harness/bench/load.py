"""Part 3, the status socket under 1, 16 and 64 keep-alive clients, over the Unix socket
(dreamnet-loadgen) and TCP (wrk), beside nginx serving the same JSON as a static file on the same
transports, and the probe cadence meanwhile."""
from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time

from harness import goals
from harness.bench.common import Bench, log
from harness.cluster import free_port

CLIENTS = (1, 16, 64)
TRANSPORTS = ("Unix socket", "TCP")


def parse_wrk(out: str) -> dict:
    """Requests per second and the p50 and p99 latencies (ms) of `wrk --latency`'s output."""
    def latency(label):
        match = re.search(rf"^\s*{label}%\s+([\d.]+)(us|ms|s)", out, re.M)
        value, unit = float(match.group(1)), match.group(2)
        return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value
    return {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)), "p50_ms": latency("50"), "p99_ms": latency("99")}


def load_row(transport: str, connections: int, ours: dict, theirs: dict, probes: int, failed: int, elapsed: float,
             ours_db: float, theirs_db: float) -> str:
    return (f"| {transport} | {connections} | {ours['rps']:,.0f} | {theirs['rps']:,.0f} | **{ours['rps'] / theirs['rps']:.2f}** | "
            f"{ours['p50_ms']:.3f} / {ours['p99_ms']:.3f} | {theirs['p50_ms']:.3f} / {theirs['p99_ms']:.3f} | "
            f"{probes} in {elapsed:.1f} s, {failed} failed | {ours_db:.0f} / {theirs_db:.0f} |")


def figures(runs: list[dict]) -> dict:
    """From each run's {transport, connections, ours, theirs, probes, elapsed}."""
    if not runs:
        return {}
    out = {"load.min_ratio": min(r["ours"]["rps"] / r["theirs"]["rps"] for r in runs),
           "load.probes_per_second": min(r["probes"] / r["elapsed"] for r in runs)}
    at_64 = [r["ours"]["p99_ms"] for r in runs if r["connections"] == 64]
    if at_64:
        out["load.p99_64_ms"] = max(at_64)
    return out


def title(seconds: int) -> str:
    return f"3. Status socket, `GET /health`, keep-alive, {seconds} s per run ({goals.heading_clause('load')})"


def section(seconds: int, rows: list[str]) -> tuple[str, str]:
    return (title(seconds),
            "| transport | clients | dreamnet-healthd req/s | nginx req/s | ratio | p50 / p99 ms, daemon | p50 / p99 ms, nginx | daemon probes (1 s interval) during the run | slowest `pg_isready` meanwhile, ms: daemon run / nginx run |\n|---|---|---|---|---|---|---|---|---|\n"
            + "\n".join(rows)
            + "\n\nUnix socket: `dreamnet-loadgen` (one thread per connection, closed loop); TCP: `wrk -t min(2, clients)`. "
            "nginx serves the daemon's own `/health` body as a static file, `worker_processes auto`. Client, servers and PostgreSQL share the "
            "machine's cores: the last column shows how long the database itself took to accept a connection while each load ran.")


NGINX_CONF = """
    daemon off;
    worker_processes auto;
    pid {dir}/nginx.pid;
    error_log {dir}/error.log warn;
    events {{ worker_connections 1024; }}
    http {{
        access_log off;
        keepalive_requests 1000000;
        server {{
            listen unix:{sock};
            listen 127.0.0.1:{port};
            root {dir}/www;
            location = /health {{ default_type application/json; }}
        }}
    }}
    """


def run(bench: Bench) -> tuple[str, str]:
    s = bench.settings
    seconds = s.load_seconds
    log(f"3/7 status socket under load ({seconds} s per run)")
    http_port, nginx_port = free_port(), free_port()
    daemon = bench.daemon("load", ["--database-url", s.url, "--interval", "1s", "--http-listen", f"127.0.0.1:{http_port}"])
    daemon.wait_state("healthy")
    nginx_dir = f"{s.work}/nginx"
    os.makedirs(f"{nginx_dir}/www", exist_ok=True)
    with open(f"{nginx_dir}/www/health", "wb") as f:
        f.write(daemon.body("/health"))
    nginx_sock = f"{nginx_dir}/nginx.sock"
    with open(f"{nginx_dir}/nginx.conf", "w") as f:
        f.write(NGINX_CONF.format(dir=nginx_dir, sock=nginx_sock, port=nginx_port))
    nginx = subprocess.Popen(["nginx", "-c", f"{nginx_dir}/nginx.conf", "-p", nginx_dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    bench.remember_pid(nginx.pid)
    for _ in range(200):
        if os.path.exists(nginx_sock):
            break
        time.sleep(0.02)

    def loadgen(socket_path, connections):
        out = subprocess.run([s.loadgen_bin, "--unix", socket_path, "--path", "/health", "--connections", str(connections),
                              "--duration", str(seconds)], capture_output=True, text=True)
        return json.loads(out.stdout)

    def wrk(port, connections):
        return parse_wrk(subprocess.run(["wrk", "-t", str(min(2, connections)), "-c", str(connections), "-d", f"{seconds}s", "--latency",
                                         f"http://127.0.0.1:{port}/health"], capture_output=True, text=True).stdout)

    def probe_counts():
        return daemon.metric("dreamnet_healthd_probes_total"), daemon.metric("dreamnet_healthd_probe_failures_total")

    def with_isready_sampling(run):
        """Runs `run` while pg_isready asks the database every 250 ms; returns its result and the
        slowest answer: how the database itself fares under the same load."""
        slowest, stop = [0.0], threading.Event()

        def sample():
            while not stop.is_set():
                t = time.monotonic()
                subprocess.run([f"{s.pg_bin}/pg_isready", "-h", "127.0.0.1", "-p", str(s.pg_port), "-t", "10"], stdout=subprocess.DEVNULL)
                slowest[0] = max(slowest[0], (time.monotonic() - t) * 1000)
                stop.wait(0.25)
        sampler = threading.Thread(target=sample)
        sampler.start()
        try:
            return run(), slowest[0]
        finally:
            stop.set()
            sampler.join()

    rows, runs = [], []
    for transport in TRANSPORTS:
        for connections in CLIENTS:
            unix = transport == "Unix socket"
            (probes0, failed0), t0 = probe_counts(), time.monotonic()
            ours, ours_db = with_isready_sampling(lambda: loadgen(daemon.sock, connections) if unix else wrk(http_port, connections))
            elapsed, (probes1, failed1) = time.monotonic() - t0, probe_counts()
            theirs, theirs_db = with_isready_sampling(lambda: loadgen(nginx_sock, connections) if unix else wrk(nginx_port, connections))
            rows.append(load_row(transport, connections, ours, theirs, probes1 - probes0, failed1 - failed0, elapsed, ours_db, theirs_db))
            runs.append({"transport": transport, "connections": connections, "ours": ours, "theirs": theirs,
                         "probes": probes1 - probes0, "elapsed": elapsed})
    nginx.terminate()
    nginx.wait(10)
    daemon.stop()
    bench.figures.update(figures(runs))
    return section(seconds, rows)
