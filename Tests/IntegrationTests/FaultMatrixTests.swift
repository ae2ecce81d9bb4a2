import Foundation
import Glibc
import HealthCore
import PostgresProbe
import Testing
import TestSupport

/// Rows of the fault matrix that no other suite covers: each a real fault, placed where it must
/// be. docs/development.md maps every row to its test.
@Suite(.serialized) struct FaultMatrixProbeTests {
    func probe(_ url: String, timeout: Duration = .seconds(1)) async throws -> ProbeResult {
        // One budget for the connection and the answer: the rows hold each to it.
        try #require(try await PostgresProber(
            target: ConnectionTarget.parse(url), timeout: timeout, policy: ProbePolicy(connectTimeout: timeout)
        ).probe())
    }

    /// Row 4: the backend stops after authentication, before the query arrives: the probe ends
    /// at its deadline, in phase `query`; and it closed its connection (the backend, resumed,
    /// finds the client gone and exits).
    @Test func hungQueryOnAStoppedBackendEndsAtTheDeadline() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let interceptor = try SessionInterceptor(upstreamPort: cluster.port) { pid in kill(pid, SIGSTOP) }
        defer { interceptor.close() }
        let result = try await probe("postgresql://postgres@127.0.0.1:\(interceptor.port)/postgres")
        #expect(result.failure?.reason == .timeout)
        #expect(result.failure?.phase == .query)
        #expect(result.latency >= .milliseconds(990) && result.latency < .milliseconds(1_500), "\(result.latency)")
        let backend = try #require(interceptor.backends.first)
        kill(backend, SIGCONT)
        #expect(await waitUntil(timeout: .seconds(10)) { kill(backend, 0) != 0 }, "backend \(backend) still running")
    }

    /// Row 4: a lock held on a catalog the first statement of a session could wait on
    /// (pg_namespace, as VACUUM FULL takes it): the probe does not wait on it.
    @Test func aCatalogLockDoesNotStopTheProbe() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let holder = try BackgroundProcess(
            cluster.binDirectory.appendingPathComponent("psql"),
            ["-h", "127.0.0.1", "-p", "\(cluster.port)", "-U", "postgres",
             "-c", "BEGIN; LOCK TABLE pg_catalog.pg_namespace IN ACCESS EXCLUSIVE MODE; SELECT pg_sleep(30)"]
        )
        defer { holder.terminate(timeout: .seconds(5)) }
        // Running pg_sleep means the lock is held. Seen in the backend's process title: a
        // query to the server could itself wait on the lock.
        #expect(await waitUntil(timeout: .seconds(10)) { cluster.backendTitles.contains { $0.hasSuffix(" SELECT") } })
        for _ in 0..<3 {
            let result = try await probe(cluster.url)
            #expect(result.ok, "\(String(describing: result.failure))")
        }
    }

    /// Row 5: the backend is terminated (pg_terminate_backend) between connecting and the
    /// query: unhealthy with SQLSTATE 57P01, not a timeout.
    @Test func terminatedBackendIs57P01() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let interceptor = try SessionInterceptor(upstreamPort: cluster.port) { pid in
            _ = try? cluster.psql("SELECT pg_terminate_backend(\(pid))")
            _ = waitUntil(timeout: .seconds(5)) { kill(pid, 0) != 0 }
        }
        defer { interceptor.close() }
        // A long deadline: the termination (a psql run) happens while the probe waits to hear
        // that the session is ready, and the suites share the machine.
        let result = try await probe("postgresql://postgres@127.0.0.1:\(interceptor.port)/postgres", timeout: .seconds(10))
        #expect(result.failure?.sqlstate == "57P01", "\(String(describing: result.failure))")
        #expect(result.failure?.reason == .serverError)
        #expect(result.failure?.phase == .query)
    }

    /// Row 23: the role's connection limit is reached (53300).
    @Test func tooManyConnectionsIs53300() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        try cluster.psql("CREATE ROLE limited LOGIN CONNECTION LIMIT 0")
        let result = try await probe("postgresql://limited@127.0.0.1:\(cluster.port)/postgres")
        #expect(result.failure?.reason == .tooManyConnections, "\(String(describing: result.failure))")
        #expect(result.failure?.sqlstate == "53300")
    }

    /// Row 23: the server is shutting down (smart shutdown waits for a session) (57P03).
    @Test func shuttingDownIs57P03() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let session = try BackgroundProcess(
            cluster.binDirectory.appendingPathComponent("psql"),
            ["-h", "127.0.0.1", "-p", "\(cluster.port)", "-U", "postgres", "-c", "SELECT pg_sleep(60)"]
        )
        defer { session.terminate(timeout: .seconds(5)) }
        #expect(await waitUntil(timeout: .seconds(10)) {
            (try? cluster.psql("SELECT count(*) FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep%'")) == "1"
        })
        let postmaster = try #require(cluster.postmasterPID)
        kill(postmaster, SIGTERM)
        // The signal is asynchronous: probe until the postmaster has seen it.
        var result = try await probe("postgresql://postgres@127.0.0.1:\(cluster.port)/postgres")
        let deadline = ContinuousClock.now + .seconds(10)
        while result.failure?.sqlstate != "57P03", ContinuousClock.now < deadline {
            try await Task.sleep(for: .milliseconds(50))
            result = try await probe("postgresql://postgres@127.0.0.1:\(cluster.port)/postgres")
        }
        #expect(result.failure?.sqlstate == "57P03", "\(String(describing: result.failure))")
        #expect(result.failure?.reason == .startingOrStopping)
    }
}

/// Matrix rows that need the whole daemon.
@Suite(.serialized) struct FaultMatrixDaemonTests {
    let fast = ["--interval", "200ms", "--timeout", "500ms", "--connect-timeout", "500ms", "--fall", "1", "--rise", "1", "--flap-threshold", "1000"]

    /// Row 14: fsync fails with EIO (injected into the running daemon with strace): the spool
    /// reports itself degraded and holds the events in memory; once fsync works again they are
    /// stored and delivered, each once, and the alert log matches the table.
    @Test func fsyncErrorsDegradeTheSpoolAndLoseNothing() async throws {
        let probed = try await TestPostgres.start()
        let events = try await TestPostgres.start()
        defer { probed.destroy(); events.destroy() }
        try await events.stop()
        let daemon = try RunningDaemon(fast + ["--database-url", probed.url, "--events-database-url", events.url])
        _ = try #require(try await daemon.waitFor(.healthy))
        let strace = try BackgroundProcess(URL(fileURLWithPath: "/usr/bin/strace"), [
            "-f", "-p", "\(daemon.process.pid)", "-o", "/dev/null", "-e", "trace=fsync,fdatasync",
            "-e", "inject=fsync,fdatasync:error=EIO",
        ])
        defer { strace.terminate(timeout: .seconds(5)) }
        // strace announces nothing once attached: the first failed fsync is the sign.
        try await Task.sleep(for: .seconds(1))
        try await daemon.flap(probed)
        let degraded = try #require(try await daemon.waitForSpool { $0.degraded })
        #expect(degraded.degradedReason?.contains("I/O") == true || degraded.degradedReason?.contains("IOERR") == true,
                "\(degraded.degradedReason ?? "-")")
        #expect(degraded.inMemory == 2)
        #expect(strace.terminate(timeout: .seconds(5)) != nil)

        try await events.start()
        _ = try #require(try await daemon.waitForSpool(timeout: .seconds(60)) { $0.pending == 0 && !$0.degraded && $0.inMemory == 0 })
        let table = try systemEventIDs(events)
        #expect(table.count == 3)
        #expect(try daemon.alertIDs() == table)
        #expect(Set(try await daemon.events().map(\.id)) == Set(table))
    }

    /// Row 24: the events database is another server. The probed one down, the events one up:
    /// transitions go straight in. The events one down, the probed one up: spooled, then replayed.
    @Test func eventsDatabaseAndProbedDatabaseFailApart() async throws {
        let probed = try await TestPostgres.start()
        let events = try await TestPostgres.start()
        defer { probed.destroy(); events.destroy() }
        let daemon = try RunningDaemon(fast + ["--database-url", probed.url, "--events-database-url", events.url])
        _ = try #require(try await daemon.waitFor(.healthy))
        _ = try #require(try await daemon.waitForSpool { $0.pending == 0 })

        try await probed.stop()
        _ = try #require(try await daemon.waitFor(.unhealthy))
        _ = try #require(try await daemon.waitForSpool { $0.pending == 0 })
        let direct = try events.psql("SELECT metadata->>'delivery' FROM system_events ORDER BY timestamp")
        #expect(direct.split(separator: "\n") == ["direct", "direct"])
        #expect(try await daemon.status().state == "unhealthy")

        try await events.stop()
        try await probed.start()
        _ = try #require(try await daemon.waitFor(.healthy))
        #expect(try await daemon.waitForSpool { $0.pending == 1 && $0.lastDeliveryError != nil } != nil)
        try await events.start()
        _ = try #require(try await daemon.waitForSpool { $0.pending == 0 })
        let deliveries = try events.psql("SELECT metadata->>'delivery' || ':' || (payload->>'to') FROM system_events ORDER BY timestamp")
        #expect(deliveries.split(separator: "\n") == ["direct:healthy", "direct:unhealthy", "spooled:healthy"])
        #expect(try daemon.alertIDs() == systemEventIDs(events))
    }

    /// Row 10: an outage of hours with flaps in it, compressed in time: 100 ms probes, the
    /// events database down the whole time, 30 flaps of the probed one. Every transition is
    /// spooled, replayed once and in order, and the alert log matches the table.
    @Test func aLongOutageWithFlapsLosesNothing() async throws {
        let probed = try await TestPostgres.start()
        let events = try await TestPostgres.start()
        defer { probed.destroy(); events.destroy() }
        try await events.stop()
        let daemon = try RunningDaemon([
            "--interval", "100ms", "--timeout", "300ms", "--connect-timeout", "300ms", "--fall", "1", "--rise", "1", "--flap-threshold", "1000",
            "--database-url", probed.url, "--events-database-url", events.url,
        ])
        _ = try #require(try await daemon.waitFor(.healthy))
        for _ in 0..<30 { try await daemon.flap(probed) }
        let spool = try #require(try await daemon.status().spool)
        #expect(spool.pending == 61)
        #expect(spool.dropped == 0)

        try await events.start()
        _ = try #require(try await daemon.waitForSpool(timeout: .seconds(60)) { $0.pending == 0 })
        let table = try systemEventIDs(events)
        #expect(table.count == 61)
        #expect(Set(table).count == 61)
        #expect(try daemon.alertIDs() == table)
        let transitions = try events.psql("SELECT (payload->>'from') || '>' || (payload->>'to') FROM system_events ORDER BY timestamp")
            .split(separator: "\n")
        #expect(transitions.first == "unknown>healthy")
        for (previous, next) in zip(transitions, transitions.dropFirst()) {
            #expect(previous.split(separator: ">").last == next.split(separator: ">").first, "\(previous) then \(next)")
        }
    }

    /// Row 18: NOTIFY_SOCKET unset, naming nothing, or not a socket path at all: notifying is a
    /// no-op and the daemon runs as usual.
    @Test(arguments: [nil, "/nonexistent/notify.sock", "not-a-path", "@"])
    func aMissingOrBogusNotifySocketIsHarmless(notifySocket: String?) async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let daemon = try RunningDaemon(
            ["--interval", "200ms", "--database-url", cluster.url],
            environment: notifySocket.map { ["NOTIFY_SOCKET": $0, "WATCHDOG_USEC": "600000"] } ?? [:]
        )
        _ = try #require(try await daemon.waitFor(.healthy))
        try await cluster.stop()
        _ = try #require(try await daemon.waitFor(.unhealthy))
        #expect(daemon.process.isRunning)
        #expect(daemon.process.terminate(timeout: .seconds(10)) == 0)
    }

    /// Row 21: a resolver that never answers (a name server in a private mount namespace that
    /// is a black hole): a timeout in phase `resolve`, within the deadline; the daemon stays
    /// unhealthy with it and does not pile up lookup threads.
    @Test func aDNSServerThatNeverAnswersIsATimeoutInResolve() async throws {
        #expect(getuid() == 0, "binding port 53 and mounting over /etc/resolv.conf need root")
        let blackHole = try UDPBlackHole(address: "127.0.0.153", port: 53)
        defer { blackHole.close() }
        let directory = try temporaryDirectory(prefix: "healthd-dns")
        defer { try? FileManager.default.removeItem(at: directory) }
        let resolvConf = directory.appendingPathComponent("resolv.conf")
        let nsswitch = directory.appendingPathComponent("nsswitch.conf")
        try "nameserver 127.0.0.153\noptions timeout:5 attempts:2\n".write(to: resolvConf, atomically: true, encoding: .utf8)
        try "hosts: files dns\n".write(to: nsswitch, atomically: true, encoding: .utf8)
        let launcher = [
            "/usr/bin/unshare", "--mount", "--propagation", "private", "/bin/sh", "-c",
            "mount --bind \"$0\" /etc/resolv.conf && mount --bind \"$1\" /etc/nsswitch.conf && shift && exec \"$@\"",
            resolvConf.path, nsswitch.path,
        ]
        let url = "postgresql://watcher@db.blackhole.test/postgres"

        let probe = try runProcess(URL(fileURLWithPath: launcher[0]), Array(launcher.dropFirst()) + [
            Binaries.control.path, "probe", "--json", "--connect-timeout", "1s", "--database-url", url,
        ], timeout: .seconds(30))
        let document = try JSONDecoder().decode(ProbeDocument.self, from: Data(probe.stdout.utf8))
        #expect(document.reason == "timeout", "\(probe.stdout) \(probe.stderr)")
        #expect(document.phase == "resolve")
        #expect(document.latencyMs >= 990 && document.latencyMs < 1_500, "\(document.latencyMs)")

        let daemon = try RunningDaemon(["--interval", "200ms", "--database-url", url], launcher: launcher)
        let unhealthy = try #require(try await daemon.waitFor(.unhealthy))
        #expect(unhealthy.lastProbe?.phase == "resolve")
        #expect(unhealthy.lastProbe?.reason == "timeout")
        try await Task.sleep(for: .seconds(5))
        let threads = try FileManager.default.contentsOfDirectory(atPath: "/proc/\(daemon.process.pid)/task").count
        #expect(threads < 40, "\(threads) threads")
        #expect(try await daemon.status().lastProbe?.phase == "resolve")
    }

    /// Row 22: the wall clock jumps two days back, then three forward, while the daemon runs:
    /// detection, deadlines and ages run on the monotonic clock and are unaffected; timestamps
    /// follow the wall clock as the system tells it, and durations stay sane.
    ///
    /// The one-shot probe runs under libfaketime with the wall clock ten times too fast. The
    /// daemon cannot: libfaketime 0.9.10 also shifts the timers libdispatch arms on the
    /// monotonic clock (a Swift program's `Task.sleep` never returns under any offset), so it
    /// runs with a small preload of its own that shifts only the wall clock
    /// (`clock_gettime(CLOCK_REALTIME)`, `gettimeofday`, `time`), as a clock step would.
    @Test func wallClockJumpsLeaveDeadlinesAndDetectionAlone() async throws {
        let directory = try temporaryDirectory(prefix: "healthd-clock")
        defer { try? FileManager.default.removeItem(at: directory) }

        // A deadline against a wall clock running ten times too fast still takes a second.
        let faketime = "/usr/bin/faketime"
        #expect(FileManager.default.isExecutableFile(atPath: faketime), "faketime is not installed")
        let listener = try BlackHoleListener()
        defer { listener.close() }
        let started = ContinuousClock.now
        // Through the wrapper: with libfaketime preloaded by hand, Swift's CommandLine.arguments
        // comes out empty; the wrapper's shared clock set-up avoids that.
        let probe = try runProcess(URL(fileURLWithPath: faketime), [
            "-m", "-f", "+0 x10", "/usr/bin/env", "FAKETIME_DONT_FAKE_MONOTONIC=1", Binaries.control.path,
            "probe", "--json", "--connect-timeout", "1s", "--database-url", "postgresql://u@127.0.0.1:\(listener.port)/db",
        ], timeout: .seconds(30))
        let elapsed = ContinuousClock.now - started
        let document = try JSONDecoder().decode(ProbeDocument.self, from: Data(probe.stdout.utf8))
        #expect(document.reason == "timeout", "\(probe.stdout) \(probe.stderr)")
        #expect(document.latencyMs >= 990 && document.latencyMs < 1_500, "\(document.latencyMs)")
        #expect(elapsed >= .milliseconds(990), "\(elapsed)")

        // The daemon, with its wall clock shifted by the seconds in `shiftFile`.
        let source = directory.appendingPathComponent("wallclock-shift.c")
        let library = directory.appendingPathComponent("wallclock-shift.so")
        try Self.wallClockShift.write(to: source, atomically: true, encoding: .utf8)
        let compiled = try runProcess(URL(fileURLWithPath: "/usr/bin/env"), ["cc", "-shared", "-fPIC", "-O2", "-o", library.path, source.path, "-ldl"])
        try #require(compiled.status == 0, "cc: \(compiled.stderr)")
        let shiftFile = directory.appendingPathComponent("shift")
        func shiftClock(by seconds: Int) throws { try "\(seconds)\n".write(to: shiftFile, atomically: true, encoding: .utf8) }
        try shiftClock(by: 0)

        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let daemon = try RunningDaemon(
            ["--interval", "200ms", "--timeout", "500ms", "--connect-timeout", "500ms", "--fall", "2", "--rise", "2", "--database-url", cluster.url],
            environment: ["LD_PRELOAD": library.path, "WALLCLOCK_SHIFT_FILE": shiftFile.path]
        )
        _ = try #require(try await daemon.waitFor(.healthy))
        // fall × interval + timeout is 0.9 s; the bound is generous (the suites share the
        // machine): a deadline or a schedule on the wall clock would be off by days.
        let bound = Duration.seconds(10)
        for (shift, fault) in [(-2 * 86_400, true), (3 * 86_400, false)] {
            try shiftClock(by: shift)
            try await Task.sleep(for: .milliseconds(300))
            let faultAt = ContinuousClock.now
            if fault { try await cluster.stop() } else { try await cluster.start() }
            let document = try #require(try await daemon.waitFor(fault ? .unhealthy : .healthy, timeout: bound))
            #expect(ContinuousClock.now - faultAt < bound)
            #expect(document.uptimeS >= 0 && document.uptimeS < 120, "uptime \(document.uptimeS)")
            #expect((0..<2_000).contains(document.lastProbe?.ageMs ?? -1), "age \(document.lastProbe?.ageMs ?? -1)")
            // The event's time is the wall clock's, as shifted.
            let since = try #require(document.since.flatMap(Timestamp.parse))
            #expect(abs(since.timeIntervalSince(Date().addingTimeInterval(TimeInterval(shift)))) < 60, "since \(document.since ?? "-")")
        }
        #expect(try await daemon.events().count == 3)
        #expect(daemon.process.isRunning)
    }

    /// An LD_PRELOAD library that adds the seconds written in $WALLCLOCK_SHIFT_FILE to the wall
    /// clock only; the monotonic clocks, and timers on them, are left alone.
    static let wallClockShift = #"""
#define _GNU_SOURCE
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/time.h>
#include <time.h>

typedef int (*clock_fn)(clockid_t, struct timespec *);

static clock_fn real_clock(void) {
    static clock_fn real;
    if (!real) real = (clock_fn)dlsym(RTLD_NEXT, "clock_gettime");
    return real;
}

/* Seconds to add to the wall clock, from the file WALLCLOCK_SHIFT_FILE names, read again at most every 50 ms. */
static long long shift_seconds(void) {
    static long long shift, last_read_ns;
    struct timespec now;
    real_clock()(CLOCK_MONOTONIC, &now);
    long long now_ns = now.tv_sec * 1000000000LL + now.tv_nsec;
    if (last_read_ns == 0 || now_ns - last_read_ns > 50000000LL) {
        const char *path = getenv("WALLCLOCK_SHIFT_FILE");
        FILE *file = path ? fopen(path, "r") : NULL;
        long long value;
        if (file) {
            if (fscanf(file, "%lld", &value) == 1) shift = value;
            fclose(file);
        }
        last_read_ns = now_ns;
    }
    return shift;
}

int clock_gettime(clockid_t clock, struct timespec *ts) {
    int result = real_clock()(clock, ts);
    if (result == 0 && (clock == CLOCK_REALTIME || clock == CLOCK_REALTIME_COARSE)) ts->tv_sec += shift_seconds();
    return result;
}

int gettimeofday(struct timeval *tv, void *tz) {
    struct timespec ts;
    (void)tz;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (tv) { tv->tv_sec = ts.tv_sec; tv->tv_usec = ts.tv_nsec / 1000; }
    return 0;
}

time_t time(time_t *out) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    if (out) *out = ts.tv_sec;
    return ts.tv_sec;
}
"""#
}
