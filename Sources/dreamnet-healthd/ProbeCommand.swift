import ArgumentParser
import OneShotProbe
import ProbeCommandLine

/// `dreamnet-healthd probe`: one probe, printed, with the exit codes of `dreamnet-healthctl`
/// (like `nginx -t`, a one-shot mode of the program that has the engine). Listed under the root
/// command for its help; `main` parses it on its own, since the daemon's own options have the
/// same names (`--database-url`, `--timeout`) and under the root command would take them.
struct ProbeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "probe", abstract: ProbeOptions.abstract, discussion: ProbeOptions.discussion
    )

    @OptionGroup var options: ProbeOptions

    func run() throws {
        try OneShotProbe.run(options)
    }
}

/// `probe` as `main` parses it: its usage names the whole command.
struct StandaloneProbeCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dreamnet-healthd probe", abstract: ProbeOptions.abstract, discussion: ProbeOptions.discussion
    )

    @OptionGroup var options: ProbeOptions

    func run() throws {
        try OneShotProbe.run(options)
    }
}
