import Foundation
import Glibc
import Synchronization

/// A stand-in for a serverless provider's pooled endpoint (Neon's proxy in front of PgBouncer):
/// it reads the client's startup packet itself, refuses one that carries `options` the way that
/// proxy does (an ErrorResponse with SQLSTATE XX000 and PgBouncer's text with the proxy's
/// advice appended), and relays any other to the server, the startup packet first.
///
/// It answers an SSLRequest or GSSENCRequest with "N": the real proxy speaks TLS, which the
/// TLS fixtures test against the server itself; here the subject is the startup packet.
public final class PooledEndpointStandIn: Sendable {
    public var port: Int { listener.port }
    private let listener: RelayListener
    private let upstreamPort: Int
    private let state = Mutex(State())

    private struct State {
        var refused = 0
        var relayed = 0
    }

    public init(upstreamPort: Int) throws {
        listener = try RelayListener()
        self.upstreamPort = upstreamPort
        Thread.detachNewThread { [self] in acceptLoop() }
    }

    deinit { close() }

    /// Startup packets refused for their `options`, and connections relayed to the server.
    public var counts: (refused: Int, relayed: Int) { state.withLock { ($0.refused, $0.relayed) } }

    public func close() {
        listener.close()
    }

    /// The text the proxy sends for a startup parameter its pooler does not accept.
    public static func refusal(parameter: String) -> String {
        "unsupported startup parameter in options: \(parameter). Please use unpooled connection or remove this parameter "
            + "from the startup package. More details: https://neon.tech/docs/connect/connection-errors#unsupported-startup-parameter"
    }

    private func acceptLoop() {
        while let client = listener.next() {
            guard listener.admit([client]) else { continue }
            Thread.detachNewThread { [self] in
                serve(client)
                listener.release([client])
            }
        }
    }

    private func serve(_ client: Int32) {
        // SSLRequest and GSSENCRequest: 8 bytes, code 80877103 / 80877104. Declined, as often as asked.
        var packet: [UInt8]
        while true {
            guard let next = readStartupPacket(from: client) else { return }
            packet = next
            let code = packet.count >= 8 ? bigEndian32(packet, at: 4) : 0
            guard packet.count == 8, code == 80_877_103 || code == 80_877_104 else { break }
            guard writeAll([UInt8(ascii: "N")], to: client) else { return }
        }
        let parameters = Self.startupParameters(packet)
        if let options = parameters["options"] {
            state.withLock { $0.refused += 1 }
            // "-c statement_timeout=1000 -c ..." names statement_timeout.
            let first = options.split(separator: " ").first { $0 != "-c" && !$0.hasPrefix("--") }
            let parameter = first.map { String($0.split(separator: "=").first ?? $0) } ?? "options"
            _ = writeAll(Self.errorResponse(sqlstate: "XX000", message: Self.refusal(parameter: parameter)), to: client)
            return
        }
        guard let server = connectToLoopback(port: upstreamPort), listener.admit([server]) else { return }
        state.withLock { $0.relayed += 1 }
        defer { listener.release([server]) }
        guard writeAll(packet, to: server) else { return }
        let finished = DispatchSemaphore(value: 0)
        Thread.detachNewThread {
            forwardDelayed(from: server, to: client, delay: { .zero })
            finished.signal()
        }
        forwardDelayed(from: client, to: server, delay: { .zero })
        finished.wait()
    }

    /// The name/value pairs after the protocol version.
    static func startupParameters(_ packet: [UInt8]) -> [String: String] {
        let strings = packet.dropFirst(8).split(separator: 0, omittingEmptySubsequences: false).map {
            String(decoding: $0, as: UTF8.self)
        }
        var parameters: [String: String] = [:]
        var index = 0
        while index + 1 < strings.count, !strings[index].isEmpty {
            parameters[strings[index]] = strings[index + 1]
            index += 2
        }
        return parameters
    }

    static func errorResponse(sqlstate: String, message: String) -> [UInt8] {
        var body: [UInt8] = []
        for (field, value) in [("S", "ERROR"), ("V", "ERROR"), ("C", sqlstate), ("M", message)] {
            body.append(UInt8(ascii: Unicode.Scalar(field)!))
            body += Array(value.utf8) + [0]
        }
        body.append(0)
        let length = UInt32(body.count + 4)
        return [UInt8(ascii: "E")] + withUnsafeBytes(of: length.bigEndian) { Array($0) } + body
    }
}

private func bigEndian32(_ bytes: [UInt8], at offset: Int) -> UInt32 {
    UInt32(bytes[offset]) << 24 | UInt32(bytes[offset + 1]) << 16 | UInt32(bytes[offset + 2]) << 8 | UInt32(bytes[offset + 3])
}
