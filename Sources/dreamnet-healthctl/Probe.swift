import ArgumentParser
import FoundationEssentials
import Glibc
import HealthCore
import ProbeCommandLine

/// `dreamnet-healthctl probe`: validated here, run by `dreamnet-healthd probe` (the program that
/// links libpq), which takes this process's place: the same output and exit codes, and no
/// libpq loaded for the CLI's other commands.
struct Probe: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "probe", abstract: ProbeOptions.abstract, discussion: ProbeOptions.discussion
    )

    @OptionGroup var options: ProbeOptions

    func run() throws {
        Self.runDaemon(arguments: options.forwarded)
    }

    /// `dreamnet-healthd probe ARGUMENTS` in this process's place. `main` calls this for
    /// `dreamnet-healthctl probe ...` before parsing anything: the daemon's binary parses the
    /// same options (`ProbeOptions`), and this program's own start-up is then all the probe
    /// costs on top of it.
    static func runDaemon(arguments: [String]) -> Never {
        let candidates = daemonCandidates(environment: ProcessInfo.processInfo.environment)
        guard let daemon = candidates.first(where: { access($0, X_OK) == 0 }) else {
            writeError("cannot probe: dreamnet-healthd, which runs the probe, is not installed (looked at \(candidates.joined(separator: ", ")))")
            Glibc.exit(ExitVerdict.unknown.rawValue)
        }
        // Its messages and usage carry this program's name (argv[0]).
        var pointers = (["dreamnet-healthctl", "probe"] + arguments).map { strdup($0) } + [nil]
        execv(daemon, &pointers)
        let reason = String(cString: strerror(errno))
        writeError("cannot probe: cannot run \(daemon): \(reason)")
        Glibc.exit(ExitVerdict.unknown.rawValue)
    }

    /// Where `dreamnet-healthd` is: `DREAMNET_HEALTHD` if set; else beside this program (a
    /// build directory, /usr/local/bin); else where the package installs it.
    static func daemonCandidates(environment: [String: String]) -> [String] {
        if let chosen = environment["DREAMNET_HEALTHD"], !chosen.isEmpty { return [chosen] }
        var candidates: [String] = []
        var path = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink("/proc/self/exe", &path, path.count - 1)
        if count > 0 {
            let own = String(decoding: path[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if let slash = own.lastIndex(of: "/") { candidates.append(own[..<slash] + "/dreamnet-healthd") }
        }
        candidates += ["/usr/sbin/dreamnet-healthd", "/usr/local/sbin/dreamnet-healthd"]
        return candidates
    }
}
