import Foundation
import Testing
import TestSupport

/// Flags, config files and exit codes, as scripts and monitoring see them.
@Suite struct CommandLineTests {
    @Test func badConfigurationExitsTwoNamingTheKey() throws {
        let directory = try temporaryDirectory(prefix: "healthd-config")
        defer { try? FileManager.default.removeItem(at: directory) }
        let socket = directory.appendingPathComponent("s.sock").path

        let badInterval = try Binaries.healthd(["--socket", socket, "--interval=-5s"])
        #expect(badInterval.status == 2)
        #expect(badInterval.stderr.contains("interval (--interval)"))

        let file = directory.appendingPathComponent("healthd.conf")
        try "interval = 2s\nintreval = 3s\n".write(to: file, atomically: true, encoding: .utf8)
        let unknown = try Binaries.healthd(["--socket", socket, "--config", file.path])
        #expect(unknown.status == 2)
        #expect(unknown.stderr.contains("intreval"))
        #expect(unknown.stderr.contains("healthd.conf:2"))

        try "fall = 0\n".write(to: file, atomically: true, encoding: .utf8)
        let badFall = try Binaries.healthd(["--socket", socket, "--config", file.path])
        #expect(badFall.status == 2)
        #expect(badFall.stderr.contains("fall"))

        let missing = try Binaries.healthd(["--config", directory.appendingPathComponent("nope.conf").path])
        #expect(missing.status == 2)
        #expect(missing.stderr.contains("nope.conf"))

        let unknownFlag = try Binaries.healthd(["--intervall", "2s"])
        #expect(unknownFlag.status == 2)

        #expect(try Binaries.healthd(["--help"]).status == 0)
        #expect(try Binaries.healthd(["--version"]).stdout.contains("."))
    }

    @Test func usageErrorsExitThreeAndNeverEchoAPassword() throws {
        let mistaken = try Binaries.healthctl(["probe", "postgresql://u:Sentinel-77@127.0.0.1/db"])
        #expect(mistaken.status == 3)
        #expect(mistaken.stderr.contains("Unexpected argument"))
        #expect(!mistaken.stderr.contains("Sentinel"))
        let daemon = try Binaries.healthd(["postgresql://u:Sentinel-77@127.0.0.1/db"])
        #expect(daemon.status == 2)
        #expect(!daemon.stderr.contains("Sentinel"))
        #expect(try Binaries.healthctl(["wait", "--for", "starting"]).status == 3)
        #expect(try Binaries.healthctl(["--help"]).status == 0)
    }

    @Test func unreachableDaemonIsUnknown() throws {
        let status = try Binaries.healthctl(["--socket", "/nonexistent/status.sock", "status"])
        #expect(try Binaries.healthctl(["status", "--socket", "/nonexistent/status.sock"]).status == 3)
        #expect(status.status == 3)
        #expect(status.stderr.contains("cannot reach"))
        let wait = try Binaries.healthctl(["--socket", "/nonexistent/status.sock", "wait", "--timeout", "300ms"])
        #expect(wait.status == 3)
    }

    @Test func probeExitCodes() throws {
        #expect(try Binaries.healthctl(["probe"]).status == 1)
        let refused = try Binaries.healthctl(["probe", "--database-url", "postgresql://u@127.0.0.1:\(freeTCPPort())/db"])
        #expect(refused.status == 2)
        #expect(refused.stdout.contains("refused"))
        #expect(try Binaries.healthctl(["probe", "--database-url", "host=x port=notaport x y"]).status == 3)
        #expect(try Binaries.healthctl(["probe", "--timeout", "soon", "--database-url", "host=x"]).status == 3)
        #expect(try Binaries.healthctl(["probe", "--database-url", "host=127.0.0.1 sslmode=bogus"]).status == 3)
    }

    /// `dreamnet-healthctl` links no libpq (its `status` does not pay for libpq's chain of
    /// libraries); its `probe` is the probe program, which links libpq and nothing of the
    /// daemon's, with the output and exit codes of `dreamnet-healthd probe`.
    @Test func theCLILinksNoLibpqAndItsProbeIsTheProbePrograms() throws {
        let linked = try runProcess(URL(fileURLWithPath: "/usr/bin/ldd"), [Binaries.control.path])
        #expect(linked.status == 0, "\(linked.stderr)")
        #expect(!linked.stdout.contains("libpq"), "\(linked.stdout)")
        let probeLinks = try runProcess(URL(fileURLWithPath: "/usr/bin/ldd"), [Binaries.probe.path])
        #expect(probeLinks.stdout.contains("libpq"))
        for daemonsOnly in ["libsystemd", "libsqlite3"] {
            #expect(!probeLinks.stdout.contains(daemonsOnly), "\(probeLinks.stdout)")
        }

        let url = "postgresql://u:Sentinel-77@127.0.0.1:\(freeTCPPort())/db"
        for arguments in [["probe", "--database-url", url], ["probe", "--database-url", url, "--json"], ["probe"], ["probe", "--timeout", "soon"]] {
            let viaCLI = try Binaries.healthctl(arguments)
            let direct = try Binaries.healthd(arguments)
            #expect(viaCLI.status == direct.status, "\(arguments)")
            // The same lines, bar times and the program's name.
            func shape(_ text: String) -> String {
                text.replacingOccurrences(of: "dreamnet-healthd", with: "dreamnet-healthctl")
                    .replacingOccurrences(of: #"[0-9]+(\.[0-9]+)?"#, with: "N", options: .regularExpression)
            }
            #expect(shape(viaCLI.stdout) == shape(direct.stdout), "\(viaCLI.stdout) | \(direct.stdout)")
            #expect(shape(viaCLI.stderr) == shape(direct.stderr), "\(viaCLI.stderr) | \(direct.stderr)")
            #expect(!(viaCLI.stdout + viaCLI.stderr).contains("Sentinel"))
        }
        #expect(try Binaries.healthctl(["probe"]).stderr.hasPrefix("dreamnet-healthctl: not-configured"))
        // Its help names the CLI's command.
        #expect(try Binaries.healthctl(["probe", "--help"]).stdout.contains("USAGE: dreamnet-healthctl probe"))

        // Without the probe program the probe says so, and is no verdict.
        let missing = try Binaries.healthctl(["probe", "--database-url", url], environment: ["DREAMNET_PROBE": "/nonexistent/dreamnet-probe"])
        #expect(missing.status == 3)
        #expect(missing.stderr.contains("cannot probe: dreamnet-probe, which runs the probe, is not installed (looked at /nonexistent/dreamnet-probe)"), "\(missing.stderr)")
    }

    @Test func aSecondDaemonCannotStealTheSocket() throws {
        let first = try RunningDaemon([])
        let second = try Binaries.healthd(["--socket", first.socketPath, "--state-dir", first.directory.appendingPathComponent("other").path])
        #expect(second.status == 1)
        #expect(second.stderr.contains("another process is listening"))
        #expect(first.process.isRunning)
    }

    @Test func systemdCredentialsCarryTheURLAndPassword() async throws {
        let cluster = try clusterWithPasswordRole("credrole", password: "Sentinel-cred-PW")
        defer { cluster.destroy() }
        let credentials = try temporaryDirectory(prefix: "healthd-credentials")
        defer { try? FileManager.default.removeItem(at: credentials) }
        // As systemd writes them: read-only, a trailing newline.
        let url = credentials.appendingPathComponent("database-url")
        try "postgresql://credrole@127.0.0.1:\(cluster.port)/postgres\n".write(to: url, atomically: true, encoding: .utf8)
        let password = credentials.appendingPathComponent("database-password")
        try "Sentinel-cred-PW\n".write(to: password, atomically: true, encoding: .utf8)
        chmod(url.path, 0o440)
        chmod(password.path, 0o440)

        let daemon = try RunningDaemon(["--interval", "200ms"], environment: ["CREDENTIALS_DIRECTORY": credentials.path])
        let healthy = try #require(try await daemon.waitFor(.healthy))
        #expect(healthy.target == "postgresql://credrole@127.0.0.1:\(cluster.port)/postgres")
        let everything = daemon.process.output() + String(decoding: try await daemon.get("/status").body, as: UTF8.self)
        #expect(!everything.contains("Sentinel"))

        // An unreadable credential is a configuration error naming it.
        let broken = try temporaryDirectory(prefix: "healthd-credentials")
        defer { try? FileManager.default.removeItem(at: broken) }
        try FileManager.default.createDirectory(at: broken.appendingPathComponent("database-url"), withIntermediateDirectories: true)
        let refused = try Binaries.healthd(
            ["--socket", broken.appendingPathComponent("s.sock").path, "--state-dir", broken.appendingPathComponent("state").path],
            environment: ["CREDENTIALS_DIRECTORY": broken.path]
        )
        #expect(refused.status == 2)
        #expect(refused.stderr.contains("credential database-url"))
    }

    @Test func libpqEnvironmentFormsWork() throws {
        let cluster = try clusterWithPasswordRole("svcuser", password: "from-passfile")
        defer { cluster.destroy() }
        let directory = try temporaryDirectory(prefix: "healthd-libpq")
        defer { try? FileManager.default.removeItem(at: directory) }

        let passfile = directory.appendingPathComponent("pgpass")
        // libpq matches the host as written (here both spellings are used), not the address.
        try "127.0.0.1:\(cluster.port):*:svcuser:from-passfile\nlocalhost:\(cluster.port):*:svcuser:from-passfile\n".write(to: passfile, atomically: true, encoding: .utf8)
        chmod(passfile.path, 0o600)
        let services = directory.appendingPathComponent("pg_service.conf")
        try "[probe-target]\nhost=127.0.0.1\nport=\(cluster.port)\nuser=svcuser\ndbname=postgres\n"
            .write(to: services, atomically: true, encoding: .utf8)

        let viaService = try Binaries.healthctl(
            ["probe", "--database-url", "service=probe-target"],
            environment: ["PGSERVICEFILE": services.path, "PGPASSFILE": passfile.path]
        )
        #expect(viaService.status == 0, "\(viaService.stdout)\(viaService.stderr)")

        let viaEnvironment = try Binaries.healthctl(
            ["probe", "--database-url", "dbname=postgres"],
            environment: ["PGHOST": "localhost", "PGPORT": "\(cluster.port)", "PGUSER": "svcuser", "PGPASSFILE": passfile.path]
        )
        #expect(viaEnvironment.status == 0, "\(viaEnvironment.stdout)\(viaEnvironment.stderr)")

        let noPassword = try Binaries.healthctl(
            ["probe", "--database-url", "postgresql://svcuser@127.0.0.1:\(cluster.port)/postgres"],
            environment: ["PGPASSFILE": "/nonexistent"]
        )
        #expect(noPassword.status == 2)
        #expect(noPassword.stdout.contains("auth"))
    }
}
