import ArgumentParser
import HealthCore

/// The options of `probe`, one database probed once with the daemon's engine and deadlines.
/// `dreamnet-healthctl probe` hands them to the probe program (`dreamnet-probe`), which parses
/// them too, as `dreamnet-healthd probe` does: the CLI itself links no libpq, whose chain of
/// libraries would cost every call of `status` its load.
public struct ProbeOptions: ParsableArguments {
    public static let abstract = "Probe a database once, with the daemon's engine and deadline; no daemon needed."
    public static let discussion = "Exit codes: 0 ok, 1 no URL given, 2 probe failed, 3 unusable connection string."

    @Option(name: .customLong("database-url"), help: ArgumentHelp("libpq URL or key=value string (default $DATABASE_URL).", valueName: "url"))
    public var databaseURL: String?

    @Option(help: ArgumentHelp("Hard deadline for the answer to SELECT 1 once connected.", valueName: "duration"))
    public var timeout = "1s"

    @Option(name: .customLong("connect-timeout"), help: ArgumentHelp("Hard deadline for opening the connection: DNS, TCP, TLS and authentication.", valueName: "duration"))
    public var connectTimeout = "2s"

    @Flag(help: "Print the result as JSON.")
    public var json = false

    public init() {}

    public func validate() throws {
        for (flag, text) in [("--timeout", timeout), ("--connect-timeout", connectTimeout)] {
            do {
                let deadline = try HumanDuration.parse(text)
                guard deadline >= .milliseconds(10), deadline <= .seconds(60) else {
                    throw ValidationError("\(flag) must be between 10ms and 60s")
                }
            } catch let error as HumanDuration.ParseError {
                throw ValidationError("\(flag): \(error)")
            }
        }
    }

    /// The deadlines, validated.
    public var deadlines: (answer: Duration, connect: Duration) {
        ((try? HumanDuration.parse(timeout)) ?? .seconds(1), (try? HumanDuration.parse(connectTimeout)) ?? .seconds(2))
    }

    /// The same options, as arguments of the probe program. A URL given on the command line is
    /// passed the same way (it is in this process's arguments already); one from
    /// `DATABASE_URL` stays in the environment, which the probe program inherits.
    public var forwarded: [String] {
        var arguments = ["--timeout", timeout, "--connect-timeout", connectTimeout]
        if let databaseURL { arguments += ["--database-url", databaseURL] }
        if json { arguments.append("--json") }
        return arguments
    }
}
