// libFuzzer harness for the status socket's request path, StatusAPI.respond. Not a SwiftPM
// target: scripts/fuzz compiles it together with Sources/HealthCore and runs it.
//
// An input is a request line, `METHOD URI`; the first byte picks the snapshot and whether
// /metrics is served. Every answer must carry a status the API documents and a JSON body.

import FoundationEssentials

private let wall = Date(timeIntervalSince1970: 1_800_000_000)
private let started = ContinuousClock.now
private let snapshots: [StatusSnapshot] = [HealthState.starting, .healthy, .unhealthy, .notConfigured].map { state in
    var configuration = DaemonConfiguration.defaults
    configuration.requireDatabase = state == .notConfigured
    var snapshot = StatusSnapshot(
        configuration: configuration, target: "postgresql://app@db/app", version: "1.0", pid: 7, startedAt: wall, startedInstant: started
    )
    snapshot.state = state
    for index in 0..<(state == .healthy ? 120 : 2) {
        snapshot.append(Transition(
            id: UUID(), from: .healthy, to: .unhealthy, observedAt: wall, reason: "timeout", phase: .tls,
            latency: .milliseconds(index), consecutive: index, message: "message \(index) \"quoted\" \\ \u{0}\u{1B}"
        ), limit: 1_100)
    }
    return snapshot
}
private let exposition: @Sendable () -> [UInt8] = { Array("x 1\n".utf8) }
private let clocks = StatusAPI.Clocks(wall: wall.addingTimeInterval(42), monotonic: started + .seconds(42))

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzz(_ data: UnsafePointer<UInt8>, _ size: Int) -> CInt {
    let bytes = UnsafeBufferPointer(start: data, count: size)
    guard let selector = bytes.first else { return 0 }
    let line = String(decoding: bytes.dropFirst(), as: UTF8.self)
    let parts = line.split(separator: " ", maxSplits: 1, omittingEmptySubsequences: false)
    let method = String(parts[0])
    let uri = parts.count > 1 ? String(parts[1]) : "/"
    let snapshot = snapshots[Int(selector) % snapshots.count]
    let metrics: (@Sendable () -> [UInt8])? = selector & 4 == 0 ? nil : exposition

    let reply = StatusAPI.respond(method: method, uri: uri, snapshot: snapshot, clocks: clocks, metrics: metrics)
    precondition([200, 400, 404, 405, 503].contains(reply.status), "status \(reply.status) for \(line.debugDescription)")
    precondition((reply.status == 405) == (reply.allow == "GET, HEAD"), "Allow \(reply.allow ?? "none") with \(reply.status)")
    if reply.contentType.hasPrefix("text/plain") {
        precondition(reply.status == 200 && metrics != nil)
        return 0
    }
    precondition(reply.contentType == "application/json")
    let decoder = JSONDecoder()
    guard let object = try? decoder.decode([String: JSONValue].self, from: Data(reply.body)) else {
        preconditionFailure("body is not a JSON object: \(String(decoding: reply.body, as: UTF8.self))")
    }
    if reply.status != 200 && reply.status != 503 {
        guard case .string = object["error"] else { preconditionFailure("no error message for \(reply.status)") }
    }
    if case .array(let events) = object["events"] {
        precondition(events.count <= StatusAPI.maximumEventLimit)
    }
    return 0
}

/// Any JSON value, to check that a body parses whatever its shape.
private indirect enum JSONValue: Decodable {
    case null, bool(Bool), number(Double), string(String), array([JSONValue]), object([String: JSONValue])

    init(from decoder: any Decoder) throws {
        let container = try decoder.singleValueContainer()
        if container.decodeNil() {
            self = .null
        } else if let value = try? container.decode(Bool.self) {
            self = .bool(value)
        } else if let value = try? container.decode(Double.self) {
            self = .number(value)
        } else if let value = try? container.decode(String.self) {
            self = .string(value)
        } else if let value = try? container.decode([JSONValue].self) {
            self = .array(value)
        } else {
            self = .object(try container.decode([String: JSONValue].self))
        }
    }
}
