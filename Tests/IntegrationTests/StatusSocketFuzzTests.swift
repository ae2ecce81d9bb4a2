import Foundation
import Glibc
import Testing
import TestSupport

/// The real daemon's status socket fed over ten thousand malformed requests: raw bytes,
/// broken request and header lines, oversized headers, bad chunked bodies, wrong versions,
/// pipelined garbage, several per connection. No database: the not-configured state answers.
@Suite(.serialized) struct StatusSocketFuzzTests {
    static let requests = 10_500

    @Test func malformedRequestsGetA4xxOrAClosedConnection() async throws {
        let daemon = try RunningDaemon(["--interval", "200ms"])
        // Warm up first, so that the baseline includes what serving itself allocates.
        for _ in 0..<50 { #expect(try await daemon.get("/status").status == 200) }
        for _ in 0..<20 { _ = try await daemon.get("/events?limit=1000") }
        let before = try residentBytes(of: daemon.process.pid)

        var fuzz = RequestFuzzer(seed: 0x5EED_50C4_E7F0_0001)
        let started = ContinuousClock.now
        var sent = 0
        var connections = 0
        var responses: [Int: Int] = [:]
        var closedEarly = 0
        while sent < Self.requests, ContinuousClock.now - started < .seconds(50) {
            // 1 to 8 malformed requests on one connection, those the daemon answers and keeps the
            // connection open after first; then a good one that asks to close.
            let batch = (0..<fuzz.int(1..<9)).map { _ in fuzz.malformedRequest() }
                .sorted { $0.keepsConnection && !$1.keepsConnection }.map(\.bytes)
            sent += batch.count
            connections += 1
            let closing = Array("GET /status HTTP/1.1\r\nHost: fuzz\r\nConnection: close\r\n\r\n".utf8)
            let exchange = try Exchange(socketPath: daemon.socketPath)
            exchange.send(batch.flatMap { $0 } + closing, inPieces: fuzz.oneIn(8))
            let received = exchange.receiveUntilClosed()
            guard let received else {
                Issue.record("connection \(connections) neither answered nor closed: \(describe(batch))")
                continue
            }
            let parsed = HTTPResponses.parse(received)
            if let problem = parsed.problem {
                Issue.record("connection \(connections): \(problem) in \(String(decoding: received.prefix(600), as: UTF8.self).debugDescription) for \(describe(batch))")
            }
            for (position, response) in parsed.responses.enumerated() {
                responses[response.status, default: 0] += 1
                // Only the closing request may succeed, and it is answered last.
                let last = position == parsed.responses.count - 1
                let allowed = (400...499).contains(response.status) || last && response.status == 200 && response.body.contains("\"state\"")
                if !allowed {
                    Issue.record("connection \(connections): \(response.head.debugDescription) for \(describe(batch))")
                }
            }
            if parsed.responses.count < batch.count + 1 { closedEarly += 1 }
            if !daemon.process.isRunning { break }
        }
        let elapsed = ContinuousClock.now - started

        #expect(sent >= 10_000, "\(sent) requests in \(elapsed)")
        #expect(daemon.process.isRunning, "\(daemon.process.output().suffix(2_000))")
        #expect(try await daemon.get("/status").status == 200)
        #expect(try await daemon.get("/health").status == 200)
        let after = try residentBytes(of: daemon.process.pid)
        #expect(after - before < 32 << 20, "VmRSS grew from \(before >> 10) KiB to \(after >> 10) KiB")
        // Every kind of refusal was reached: the fuzzing went past the first line.
        for status in [400, 404, 405, 413] { #expect(responses[status, default: 0] > 0, "\(responses)") }
        print("status socket fuzz: \(sent) malformed requests on \(connections) connections in \(elapsed); "
            + "responses \(responses.sorted { $0.key < $1.key }); \(closedEarly) connections closed early; "
            + "VmRSS \(before >> 10) → \(after >> 10) KiB")
    }

    /// Found by the test above: after a CONNECT or an `Upgrade:` request (curl --http2 sends
    /// `Upgrade: h2c`) NIO parses no further requests, so the connection sat unanswered until the
    /// idle timeout, and the reply to CONNECT had neither a length nor an end.
    @Test(arguments: [
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n",
        "CONNECT x:443 HTTP/1.1\r\nHost: x:443\r\n\r\n",
    ])
    func requestsThatEndParsingCloseTheConnection(request: String) throws {
        let daemon = try RunningDaemon([])
        let exchange = try Exchange(socketPath: daemon.socketPath)
        // The client keeps its side open and waits, as a client reusing the connection does.
        exchange.send(Array((request + "GET /status HTTP/1.1\r\nHost: x\r\n\r\n").utf8), inPieces: false, halfClose: false)
        let received = try #require(exchange.receiveUntilClosed(), "the daemon neither answered nor closed")
        let parsed = HTTPResponses.parse(received)
        #expect(parsed.problem == nil, "\(String(decoding: received, as: UTF8.self).debugDescription)")
        #expect(parsed.responses.count == 1)
        #expect(parsed.responses.first?.head.lowercased().contains("connection: close") == true)
    }

    private func describe(_ batch: [[UInt8]]) -> String {
        batch.map { String(decoding: $0.prefix(300), as: UTF8.self).debugDescription }.joined(separator: ", ")
    }
}

/// One connection: send everything, half-close, read until the daemon closes.
private final class Exchange {
    let descriptor: Int32

    init(socketPath: String) throws {
        let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(socketPath.utf8)) }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(descriptor, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        setsockopt(descriptor, SOL_SOCKET, SO_SNDTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size))
            }
        }
        guard connected == 0 else {
            let reason = String(cString: strerror(errno))
            close(descriptor)
            throw TestSupportError("connect: \(reason)")
        }
        // Set only once connected: a throwing initializer of a class that has set all its
        // properties runs deinit, which would close the descriptor a second time (by then
        // perhaps another socket of this process).
        self.descriptor = descriptor
    }

    deinit { close(descriptor) }

    /// The daemon may close halfway through a malformed request; what is left is not sent.
    func send(_ bytes: [UInt8], inPieces: Bool, halfClose: Bool = true) {
        var offset = 0
        while offset < bytes.count {
            let end = inPieces ? min(bytes.count, offset + 7) : bytes.count
            let written = bytes[offset..<end].withUnsafeBytes { Glibc.send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard written > 0 else { break }
            offset += written
        }
        if halfClose { shutdown(descriptor, Int32(SHUT_WR)) }
    }

    /// Everything until the daemon closes; `nil` if it does neither within the timeout.
    func receiveUntilClosed() -> [UInt8]? {
        var received: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: 65_536)
        while true {
            let count = read(descriptor, &chunk, chunk.count)
            if count > 0 {
                received.append(contentsOf: chunk[..<count])
            } else if count == 0 || errno == ECONNRESET {
                return received
            } else if errno != EINTR {
                return nil
            }
        }
    }
}

/// Splits a byte stream into HTTP/1.x responses, strictly: any byte that is not part of a
/// well-formed response is a problem.
enum HTTPResponses {
    struct Response {
        var status: Int
        var head: String
        var body: String
    }

    static func parse(_ bytes: [UInt8]) -> (responses: [Response], problem: String?) {
        var responses: [Response] = []
        var rest = bytes[...]
        while !rest.isEmpty {
            guard let headEnd = rest.firstRange(of: Array("\r\n\r\n".utf8)) else {
                return (responses, "an incomplete response head")
            }
            let head = String(decoding: rest[..<headEnd.lowerBound], as: UTF8.self)
            let lines = head.components(separatedBy: "\r\n")
            let statusLine = lines[0].split(separator: " ", maxSplits: 2, omittingEmptySubsequences: false)
            guard statusLine.count >= 2, ["HTTP/1.1", "HTTP/1.0"].contains(statusLine[0]), statusLine[1].count == 3,
                  let status = Int(statusLine[1])
            else { return (responses, "a malformed status line \(lines[0].debugDescription)") }
            var length: Int?
            for line in lines.dropFirst() {
                guard let colon = line.firstIndex(of: ":"), colon != line.startIndex, !line.hasPrefix(" ") else {
                    return (responses, "a malformed header line \(line.debugDescription)")
                }
                let name = line[..<colon].lowercased()
                let value = line[line.index(after: colon)...].trimmingCharacters(in: .whitespaces)
                if name == "content-length" { length = Int(value) }
                if name == "transfer-encoding" { return (responses, "a chunked response") }
            }
            let bodyStart = headEnd.upperBound
            guard let length, length >= 0 else {
                // Without a length the body runs to the end of the connection, which must then close.
                guard head.lowercased().contains("\r\nconnection: close") else {
                    return (responses, "no Content-Length in \(head.debugDescription) on a connection left open")
                }
                responses.append(Response(status: status, head: head, body: String(decoding: rest[bodyStart...], as: UTF8.self)))
                break
            }
            guard rest.distance(from: bodyStart, to: rest.endIndex) >= length else { return (responses, "a short body") }
            let bodyEnd = rest.index(bodyStart, offsetBy: length)
            responses.append(Response(status: status, head: head, body: String(decoding: rest[bodyStart..<bodyEnd], as: UTF8.self)))
            rest = rest[bodyEnd...]
        }
        return (responses, nil)
    }
}

/// Malformed requests, generated from a seed (SplitMix64, as in HealthCoreTests' fuzzing).
struct RequestFuzzer {
    private var generator: SplitMix64

    init(seed: UInt64) {
        generator = SplitMix64(seed: seed)
    }

    private mutating func next() -> UInt64 { generator.next() }

    mutating func int(_ range: Range<Int>) -> Int { range.lowerBound + Int(next() % UInt64(range.count)) }
    mutating func oneIn(_ n: Int) -> Bool { int(0..<n) == 0 }
    mutating func pick<T>(_ items: [T]) -> T { items[int(0..<items.count)] }
    mutating func bytes(_ count: Int) -> [UInt8] { (0..<count).map { _ in UInt8(truncatingIfNeeded: next()) } }

    /// Targets that can never succeed, so any answer but a refusal is wrong.
    private mutating func badTarget() -> String {
        pick([
            "/nope", "/fz-\(int(0..<1_000_000))", "/status/", "//status", "/STATUS", "/events?limit=0", "/events?limit=-1",
            "/events?limit=1001", "/events?limit=%31", "/events?limit=" + String(repeating: "9", count: int(20..<3_000)),
            "/events?limit=\u{0661}", "/%2e%2e/%2e%2e/etc/passwd", "/" + String(repeating: "a/", count: int(1..<4_000)),
            "/st%61tus", "/health%00", "*", "/metrics/x", "/events?limit=5&limit=junk",
        ])
    }

    private mutating func headers() -> String {
        var lines = ["Host: fuzz"]
        for _ in 0..<int(0..<4) { lines.append(pick(["Accept: */*", "X-Fz: \(int(0..<1_000))", "User-Agent: fuzz/1.0", "Accept-Encoding: gzip"])) }
        return lines.map { $0 + "\r\n" }.joined()
    }

    /// A request that is wrong: at the protocol level or for this API. `keepsConnection` when it
    /// is well-formed HTTP, which the daemon answers and then reads the next request.
    mutating func malformedRequest() -> (bytes: [UInt8], keepsConnection: Bool) {
        let kind = int(0..<16)
        return (malformedRequest(kind), kind >= 11)
    }

    private mutating func malformedRequest(_ kind: Int) -> [UInt8] {
        let version = "HTTP/1.1"
        switch kind {
        case 0:
            // Raw bytes.
            return bytes(int(1..<2_000))
        case 1:
            // A broken request line.
            return Array(pick([
                "GET\r\n\r\n", "GET /nope\r\n\r\n", " GET /nope HTTP/1.1\r\n\r\n", "GET  /nope  HTTP/1.1\r\n\r\n",
                "GET /nope HTTP/1.1 extra\r\n\r\n", "GET\t/nope\tHTTP/1.1\r\n\r\n", "G\0T /nope HTTP/1.1\r\n\r\n",
                "GET /no pe HTTP/1.1\r\n\r\n", "GET /nope\0 HTTP/1.1\r\n\r\n", "\r\n\r\nGET /nope HTTP/1.1\r\n\r\n",
                "GET /nope HTTP/1.1\rHost: x\r\r", "GET /nope HTTP/1.1\n\n", "/nope HTTP/1.1\r\n\r\n", "GET HTTP/1.1\r\n\r\n",
                "GET /nope HTTP/1.1\r\n", "\u{0}\u{0}\u{0}", "PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", "GÉT /nope HTTP/1.1\r\n\r\n",
                String(repeating: "G", count: int(100..<20_000)) + " /nope HTTP/1.1\r\n\r\n",
            ]).utf8)
        case 2:
            // A bad header line.
            let bad = pick([
                "NoColon", ": empty-name", "Host : x", "Bad Name: x", "X-Fz:\0nul", "X-Fz: a\rb", " folded: continuation",
                "X-Fz: ok\r\n folded", "Content-Length: -1", "Content-Length: abc", "Content-Length: 1, 2",
                "Content-Length: 99999999999999999999999", "Transfer-Encoding: gzip", "Transfer-Encoding: chunked, identity",
                "X-\u{7F}: x", "X-Fz: \u{1B}[2J", "Héader: x", "\t: tab",
            ])
            return Array("GET \(badTarget()) \(version)\r\n\(headers())\(bad)\r\n\r\n".utf8)
        case 3:
            // Oversized headers: one huge line, or very many.
            if oneIn(2) {
                return Array("GET \(badTarget()) \(version)\r\nX-Big: \(String(repeating: "a", count: int(60_000..<200_000)))\r\n\r\n".utf8)
            }
            let many = (0..<int(500..<5_000)).map { "X-\($0): \(String(repeating: "v", count: 30))\r\n" }.joined()
            return Array("GET \(badTarget()) \(version)\r\n\(many)\r\n".utf8)
        case 4:
            // Bad chunked bodies.
            let body = pick([
                "zz\r\nhello\r\n0\r\n\r\n", "5\r\nabc\r\n0\r\n\r\n", "FFFFFFFFFFFFFFFFFFFF\r\nx\r\n", "5;\0ext\r\nhello\r\n0\r\n\r\n",
                "-5\r\nhello\r\n0\r\n\r\n", "5\r\nhelloX\r\n0\r\n\r\n", "0\r\nTrailer\r\n\r\n", "\r\n\r\n", "5 5\r\nhello\r\n0\r\n\r\n",
                "5\nhello\n0\n\n",
            ])
            return Array("POST \(badTarget()) \(version)\r\nHost: fuzz\r\nTransfer-Encoding: chunked\r\n\r\n\(body)".utf8)
        case 5:
            // A body too large for this API, chunked or not.
            let size = int(4_097..<40_000)
            if oneIn(2) {
                return Array("POST /status \(version)\r\nHost: fuzz\r\nContent-Length: \(size)\r\n\r\n".utf8) + bytes(size)
            }
            let chunk = String(repeating: "b", count: size)
            return Array("POST /status \(version)\r\nHost: fuzz\r\nTransfer-Encoding: chunked\r\n\r\n\(String(size, radix: 16))\r\n\(chunk)\r\n0\r\n\r\n".utf8)
        case 6:
            // A wrong version.
            let wrong = pick(["HTTP/1.2", "HTTP/2.0", "HTTP/3", "HTTP/0.9", "HTTP/9.9", "HTTPS/1.1", "http/1.1", "HTTP/1.10", "HTTP/1", "HTTP/", "HTTP/1.1.1", "HTTP/11"])
            return Array("GET \(badTarget()) \(wrong)\r\nHost: fuzz\r\n\r\n".utf8)
        case 7:
            // A good request to a bad target, then garbage.
            return Array("GET \(badTarget()) \(version)\r\nHost: fuzz\r\n\r\n".utf8) + bytes(int(1..<200))
        case 8, 9:
            // A byte-level mutation of a request that can only be refused.
            var request = Array("\(pick(["POST", "PUT", "DELETE", "GET"])) \(badTarget()) \(version)\r\n\(headers())\r\n".utf8)
            for _ in 0..<int(1..<6) {
                let position = int(0..<request.count)
                switch int(0..<4) {
                case 0: request[position] ^= UInt8(1) << UInt8(int(0..<8))
                case 1: request.insert(contentsOf: bytes(int(1..<8)), at: position)
                case 2: request.removeSubrange(position..<min(request.count, position + int(1..<8)))
                default: request.insert(contentsOf: Array(pick(["\r\n", "\r", "\n", ":", " ", "\0", "\r\n\r\n", "%"]).utf8), at: position)
                }
                if request.isEmpty { request = [0] }
            }
            return request
        case 10:
            // Duplicate or conflicting framing.
            return Array(pick([
                "POST /nope \(version)\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nxx",
                "POST /nope \(version)\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
                "POST /nope \(version)\r\nTransfer-Encoding: identity\r\n\r\n",
                "GET /nope \(version)\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n",
                "GET /nope \(version)\r\nExpect: 100-continue\r\nContent-Length: 4\r\n\r\nabcd",
                "CONNECT fuzz:443 \(version)\r\nHost: fuzz:443\r\n\r\n",
            ]).utf8)
        default:
            // Well-formed HTTP the API refuses: wrong method, unknown path, bad limit.
            let method = pick(["POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "FUZZ"])
            let target = oneIn(2) ? pick(["/status", "/health", "/events", "/metrics"]) : badTarget()
            let line = method == "GET" ? "GET \(badTarget())" : "\(method) \(target)"
            let body = oneIn(3) ? String(repeating: "x", count: int(0..<4_000)) : ""
            let length = body.isEmpty && oneIn(2) ? "" : "Content-Length: \(body.utf8.count)\r\n"
            return Array("\(line) \(pick([version, "HTTP/1.0"]))\r\n\(headers())Connection: keep-alive\r\n\(length)\r\n\(body)".utf8)
        }
    }
}
