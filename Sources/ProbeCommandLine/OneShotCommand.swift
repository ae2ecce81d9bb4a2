import ArgumentParser
import Glibc
import HealthCore

/// How the programs' one-shot commands start and end: parsed, run, and their exit code the
/// verdict (`ExitVerdict`). Usage errors quote arguments back, and an argument may be a
/// connection string: they are scrubbed, and exit 3 (unknown), as monitoring expects of every
/// failure to get an answer.
public enum OneShotCommand {
    public static func main(_ command: any ParsableCommand.Type, arguments: [String]) -> Never {
        do {
            var parsed = try command.parseAsRoot(arguments)
            try parsed.run()
            exit(0)
        } catch {
            let code = command.exitCode(for: error)
            if code == .success { command.exit(withError: error) }  // --help, --version
            if error is ExitCode { exit(code.rawValue) }
            say(SecretScrubber(arguments: CommandLine.arguments).scrub(command.fullMessage(for: error)))
            exit(ExitVerdict.unknown.rawValue)
        }
    }

    /// A line on stderr after the program's name: `dreamnet-healthctl` also for the probe
    /// program it runs for its `probe` (which it passes its own name as argv[0]).
    public static func say(_ message: String) {
        let name = CommandLine.arguments.first.map { $0.split(separator: "/").last.map(String.init) ?? $0 } ?? "dreamnet-healthd"
        let line = Array("\(name): \(message)\n".utf8)
        _ = line.withUnsafeBytes { write(STDERR_FILENO, $0.baseAddress, $0.count) }
    }
}
