import ArgumentParser
import OneShotProbe
import ProbeCommandLine

/// `dreamnet-healthctl probe`'s engine, a program of its own (installed in
/// /usr/libexec/dreamnet-healthd): it links libpq and what a probe needs, and nothing of the
/// daemon (systemd, SQLite, SwiftNIO), whose libraries would cost every call their load.
/// `dreamnet-healthctl` runs it in its own place, as `dreamnet-healthctl probe ARGUMENTS`: its
/// help and usage errors name that command.
struct ControlProbeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dreamnet-healthctl probe", abstract: ProbeOptions.abstract, discussion: ProbeOptions.discussion
    )

    @OptionGroup var options: ProbeOptions

    func run() throws {
        try OneShotProbe.run(options)
    }
}

// `dreamnet-healthctl probe ARGUMENTS` from the CLI; run by hand (or by the tools that document
// the programs, `--experimental-dump-help`), without the `probe`.
let given = CommandLine.arguments.dropFirst()
OneShotCommand.main(ControlProbeCommand.self, arguments: Array(given.first == "probe" ? given.dropFirst() : given))
