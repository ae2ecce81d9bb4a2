import Foundation
import HealthCore
import PostgresProbe
import Testing
import TestSupport

/// The databases people run: TLS `verify-full`, SCRAM with channel binding, PgBouncer in
/// transaction pooling in front, and a provider's pooled endpoint that refuses startup options.
@Suite(.serialized) struct ManagedDatabaseTests {
    func prober(_ url: String, mode: ProbeConnection = .fresh, timeout: Duration = .seconds(1)) throws -> PostgresProber {
        try PostgresProber(target: ConnectionTarget.parse(url), timeout: timeout, policy: ProbePolicy(mode: mode))
    }

    func probe(_ url: String) async throws -> ProbeResult {
        try #require(await prober(url).probe())
    }

    @Test func verifyFullWithSCRAMAndChannelBinding() async throws {
        let certificates = try TestCertificates.make()
        defer { certificates.destroy() }
        let cluster = try await TestPostgres.start(tls: certificates)
        defer { cluster.destroy() }

        let session = try prober(cluster.scramURL(), mode: .session)
        let result = try #require(await session.probe())
        #expect(result.ok, "\(String(describing: result.failure))")
        #expect(result.phases.map(\.phase) == [.resolve, .connect, .tls, .auth, .query])
        // The server's own view of the kept session: TLS, and SCRAM (no other rule lets TCP in).
        let seen = try cluster.psql("""
            SELECT s.ssl, s.version IS NOT NULL FROM pg_stat_ssl s JOIN pg_stat_activity a USING (pid)
            WHERE a.application_name = 'dreamnet-healthd'
            """)
        #expect(seen == "t|t")
        // Without the password, the same URL is refused by SCRAM.
        let anonymous = try await probe(cluster.scramURL(password: "wrong"))
        #expect(anonymous.failure?.reason == .auth)
        #expect(anonymous.failure?.sqlstate == "28P01")
        #expect(anonymous.failure?.message.contains("wrong") == false)
    }

    /// Configuration faults over TLS have reasons of their own, so that an operator sees at a
    /// glance that the database is not down.
    @Test func tlsConfigurationFaultsHaveReasonsOfTheirOwn() async throws {
        let certificates = try TestCertificates.make()
        let stranger = try TestCertificates.make()
        let misnamed = try TestCertificates.make(names: ["DNS:db.example.com"])
        defer { [certificates, stranger, misnamed].forEach { $0.destroy() } }
        let cluster = try await TestPostgres.start(tls: certificates)
        defer { cluster.destroy() }
        let plain = try await TestPostgres.start()
        defer { plain.destroy() }

        let unknownAuthority = try await probe(cluster.scramURL(rootCertificate: stranger.authorityFile))
        #expect(unknownAuthority.failure?.reason == .tlsCertificate, "\(String(describing: unknownAuthority.failure))")
        #expect(unknownAuthority.failure?.phase == .tls)
        #expect(unknownAuthority.failure?.message.contains("certificate verify failed") == true)

        let missingRoot = try await probe(cluster.scramURL(rootCertificate: URL(fileURLWithPath: "/nonexistent/root.crt")))
        #expect(missingRoot.failure?.reason == .tlsCertificate, "\(String(describing: missingRoot.failure))")

        // A server whose certificate names another host.
        let wrongName = try await TestPostgres.start(tls: misnamed)
        defer { wrongName.destroy() }
        let mismatch = try await probe(wrongName.scramURL(rootCertificate: misnamed.authorityFile))
        #expect(mismatch.failure?.reason == .tlsCertificate, "\(String(describing: mismatch.failure))")
        #expect(mismatch.failure?.message.contains("does not match host name") == true)

        // TLS required, and the server offers none.
        let noTLS = try await probe("\(plain.url)?sslmode=require")
        #expect(noTLS.failure?.reason == .tlsRequired, "\(String(describing: noTLS.failure))")

        // Channel binding required, and the server authenticated without it (trust).
        let unbound = try await probe("\(plain.url)?sslmode=disable&channel_binding=require")
        #expect(unbound.failure?.reason == .channelBinding, "\(String(describing: unbound.failure))")
    }

    /// PgBouncer in transaction pooling, at the daemon's defaults (server timeouts on, session
    /// mode): healthy from the first verdict, the refusal said once, and no false transition
    /// while the server backends behind the pooler are terminated again and again.
    @Test func throughPgBouncerAtTheDefaults() async throws {
        let certificates = try TestCertificates.make()
        defer { certificates.destroy() }
        let cluster = try await TestPostgres.start(tls: certificates)
        defer { cluster.destroy() }
        let bouncer = try TestPgBouncer.start(in: cluster, tls: certificates)
        defer { bouncer.stop() }

        // PgBouncer 1.18 offers no SCRAM-SHA-256-PLUS: `channel_binding=require` cannot be met
        // through it, and the reason says it is configuration.
        let bound = try await probe(bouncer.url(sslmode: "verify-full", channelBinding: true))
        #expect(bound.failure?.reason == .channelBinding, "\(String(describing: bound.failure))")
        let daemon = try RunningDaemon(
            ["--interval", "500ms", "--no-splay"],
            environment: ["DATABASE_URL": bouncer.url(sslmode: "verify-full")]
        )
        let first = try #require(try await daemon.waitForStatus(timeout: .seconds(15)) { $0.state != "starting" })
        #expect(first.state == "healthy", "\(String(describing: first.lastProbe))")
        #expect(first.serverTimeouts == "set-local")
        for _ in 0..<5 {
            try cluster.terminateTCPSessions()
            try await Task.sleep(for: .milliseconds(1_200))
        }
        let after = try await daemon.status()
        #expect(after.state == "healthy")
        #expect(after.transitions == 1, "false transitions through the pooler: \(after.transitions - 1)")
        let said = daemon.process.output().split(separator: "\n").filter { $0.contains("refused the daemon's startup options") }
        #expect(said.count == 1, "\(said)")
        // The first transition is a row, written through the pooler too.
        var rows = ""
        for _ in 0..<50 where rows != "1" {
            rows = try await offPool { try cluster.psql("SELECT count(*) FROM system_events") }
            if rows != "1" { try await Task.sleep(for: .milliseconds(200)) }
        }
        #expect(rows == "1")

        // A lock that blocks every new server session, PgBouncer's idle server connections gone:
        // the probe and the delivery (of the transition to unhealthy) each wait on one client
        // connection at PgBouncer, carried on at every attempt; a client the daemon closed while
        // PgBouncer queued it stays listed until a server connection frees up (PgBouncer does not
        // read from a queued client), so three at most.
        try cluster.terminateTCPSessions()
        let holder = try cluster.holdLockBlockingNewSessions(seconds: 15)
        defer { holder.terminate(timeout: .seconds(5)) }
        var mostClients = 0
        var sawUnhealthy = false
        while holder.isRunning {
            mostClients = max(mostClients, try await offPool { try bouncer.clientCount() })
            sawUnhealthy = try await daemon.status().state == "unhealthy" || sawUnhealthy
            try await Task.sleep(for: .milliseconds(300))
        }
        #expect(sawUnhealthy)
        #expect(mostClients <= 3, "the daemon had \(mostClients) clients at PgBouncer")
        // Once the lock goes, the delivery held all along gets its row in: nothing was lost.
        rows = ""
        for _ in 0..<75 where rows != "3" {
            rows = try await offPool { try cluster.psql("SELECT count(*) FROM system_events") }
            if rows != "3" { try await Task.sleep(for: .milliseconds(200)) }
        }
        #expect(rows == "3", "rows: healthy, unhealthy, healthy again")
    }

    /// A pooled endpoint that relays PgBouncer's refusal under XX000, as a serverless proxy does:
    /// the probe connects again at once without its options, and keeps to that until replaced.
    @Test func aPooledEndpointsRefusalIsRetriedAtOnce() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let endpoint = try PooledEndpointStandIn(upstreamPort: cluster.port)
        defer { endpoint.close() }
        let url = "postgresql://postgres@127.0.0.1:\(endpoint.port)/postgres"

        let pooled = try prober(url)
        for _ in 0..<3 {
            let result = try #require(await pooled.probe())
            #expect(result.ok, "\(String(describing: result.failure))")
            #expect(result.serverTimeouts == .setLocal)
        }
        #expect(endpoint.counts.refused == 1)
        #expect(endpoint.counts.relayed == 3)
        // A new prober (a reload) tries the options again, once.
        #expect(try await probe(url).ok)
        #expect(endpoint.counts.refused == 2)

        // With server timeouts off nothing is refused; the server's own answer is unchanged.
        let off = try PostgresProber(target: ConnectionTarget.parse(url), timeout: .seconds(1), policy: ProbePolicy(serverTimeouts: false))
        let plain = try #require(await off.probe())
        #expect(plain.ok && plain.serverTimeouts == .off)
        #expect(endpoint.counts.refused == 2)

        // Options of the operator's own are not the daemon's to drop: the refusal is reported.
        let own = try await probe(url + "?options=-c%20search_path%3Dpublic")
        #expect(own.failure?.reason == .serverError, "\(String(describing: own.failure))")
        #expect(own.failure?.sqlstate == "XX000")
        #expect(own.failure?.message.contains("unsupported startup parameter in options: search_path") == true)
    }

    /// A lock behind PgBouncer that blocks every new server session, with the pooler's own
    /// server connections gone: the daemon holds one client connection at the pooler (its
    /// unfinished one) and the pooler no more than a few server connections for it.
    @Test func aLockBehindPgBouncerPilesUpNothing() async throws {
        let cluster = try await TestPostgres.start()
        defer { cluster.destroy() }
        let bouncer = try TestPgBouncer.start(in: cluster)
        defer { bouncer.stop() }
        let fresh = try prober(bouncer.url())
        #expect(try #require(await fresh.probe()).ok)

        // The pooler's idle server connections end, before the lock (which shuts out every new
        // session, psql's too): the next client needs a new backend.
        try cluster.terminateTCPSessions()
        let holder = try cluster.holdLockBlockingNewSessions(seconds: 15)
        defer { holder.terminate(timeout: .seconds(5)) }
        try await Task.sleep(for: .seconds(1))
        let sampler = try BackendSampler(cluster: cluster)
        var results: [ProbeResult] = []
        var mostClients = 0
        while holder.isRunning {
            if let result = await fresh.probe() { results.append(result) }
            mostClients = max(mostClients, try await offPool { try bouncer.clientCount() })
            try await Task.sleep(for: .milliseconds(500))
        }
        let figures = sampler.stop()
        // The last probe may have started as the lock went.
        let held = results.dropLast()
        #expect(held.count >= 3)
        #expect(held.allSatisfy { $0.failure?.reason == .timeout }, "\(results.map(\.reasonText))")
        #expect(mostClients <= 1, "the daemon held \(mostClients) clients at the pooler")
        #expect(figures.most <= 3, "the pooler held \(figures.most) server backends for the daemon")
        // Polled without blocking a thread of the cooperative pool, which other suites share.
        var recovered = false
        let until = ContinuousClock.now + .seconds(10)
        while !recovered, ContinuousClock.now < until {
            recovered = await fresh.probe()?.ok == true
            if !recovered { try await Task.sleep(for: .milliseconds(200)) }
        }
        #expect(try bouncer.clientCount() <= 1)
        #expect(recovered)
    }
}
