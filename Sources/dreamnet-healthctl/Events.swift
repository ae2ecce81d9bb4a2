import ArgumentParser
import FoundationEssentials
import HealthCore
import StatusClient

struct Events: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "events",
        abstract: "List the daemon's recent transitions, newest first, with where each is on its way to system_events."
    )

    @OptionGroup var options: SocketOptions
    @ParentCommand var parent: HealthControl

    @Option(help: ArgumentHelp("How many (1 to 1000).", valueName: "n"))
    var limit = 20

    @Flag(help: "Print the daemon's JSON.")
    var json = false

    func validate() throws {
        guard (1...StatusAPI.maximumEventLimit).contains(limit) else {
            throw ValidationError("--limit must be from 1 to \(StatusAPI.maximumEventLimit)")
        }
    }

    func run() throws {
        let response: StatusClient.Response
        let document: EventsDocument
        do {
            response = try StatusClient.get("/events?limit=\(limit)", socketPath: options.path(parent: parent))
            document = try JSONDecoder().decode(EventsDocument.self, from: Data(response.body))
        } catch {
            writeError(describe(error))
            throw ExitCode(ExitVerdict.unknown.rawValue)
        }
        if json {
            print(String(decoding: response.body, as: UTF8.self), terminator: "")
            return
        }
        for event in document.events {
            var line = "\(event.observedAt)  \(event.from) -> \(event.to)  \(event.reason)"
            if let phase = event.phase { line += " during \(phase)" }
            if let sqlstate = event.sqlstate { line += " (SQLSTATE \(sqlstate))" }
            line += "  [\(event.delivery ?? "not recorded")]"
            print(line)
            print("    \(event.message)")
        }
        if document.events.isEmpty { print("no transitions since the daemon started") }
    }
}
