import ArgumentParser
import FoundationEssentials
import Glibc
import HealthCore
import ProbeCommandLine

/// `dreamnet-healthctl probe`: run by the probe program (`dreamnet-probe`, which links libpq and
/// nothing of the daemon), which takes this process's place: the same output and exit codes,
/// and no libpq loaded for the CLI's other commands. Listed here for the help and completions.
struct Probe: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "probe", abstract: ProbeOptions.abstract, discussion: ProbeOptions.discussion
    )

    @OptionGroup var options: ProbeOptions

    func run() throws {
        Self.runProbeProgram(arguments: options.forwarded)
    }

    /// The probe program in this process's place, as `dreamnet-healthctl probe ARGUMENTS`.
    /// `main` calls this before parsing anything: the probe program parses the same options
    /// (`ProbeOptions`), and this program's own start-up is then all it costs on top of it.
    static func runProbeProgram(arguments: [String]) -> Never {
        // getenv, not ProcessInfo's environment, which copies all of it into a dictionary:
        // this runs in every `probe` before anything else.
        let chosen = getenv("DREAMNET_PROBE").map { String(cString: $0) }
        let candidates = programCandidates(chosen: chosen)
        guard let program = candidates.first(where: { access($0, X_OK) == 0 }) else {
            writeError("cannot probe: \(programName), which runs the probe, is not installed (looked at \(candidates.joined(separator: ", ")))")
            Glibc.exit(ExitVerdict.unknown.rawValue)
        }
        // Its messages and usage carry this program's name (argv[0]).
        var pointers = (["dreamnet-healthctl", "probe"] + arguments).map { strdup($0) } + [nil]
        execv(program, &pointers)
        let reason = String(cString: strerror(errno))
        writeError("cannot probe: cannot run \(program): \(reason)")
        Glibc.exit(ExitVerdict.unknown.rawValue)
    }

    static let programName = "dreamnet-probe"

    /// Where the probe program is: `chosen` (`DREAMNET_PROBE`) if set; else beside this program
    /// (a build directory); else in the libexec directory beside this program's bin directory
    /// (`/usr`, `/usr/local`, any `--prefix`); else where the package installs it.
    static func programCandidates(chosen: String?) -> [String] {
        if let chosen, !chosen.isEmpty { return [chosen] }
        var candidates: [String] = []
        var path = [CChar](repeating: 0, count: Int(PATH_MAX) + 1)
        let count = readlink("/proc/self/exe", &path, path.count - 1)
        if count > 0 {
            let own = String(decoding: path[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if let slash = own.lastIndex(of: "/") {
                let directory = own[..<slash]
                candidates.append("\(directory)/\(programName)")
                if let parent = directory.lastIndex(of: "/") {
                    candidates.append("\(directory[..<parent])/libexec/dreamnet-healthd/\(programName)")
                }
            }
        }
        let packaged = "/usr/libexec/dreamnet-healthd/\(programName)"
        if !candidates.contains(packaged) { candidates.append(packaged) }
        return candidates
    }
}
