import ArgumentParser
import Foundation
import Glibc
import Synchronization

/// A closed-loop HTTP/1.1 load client for the benchmarks: N keep-alive connections, each on its
/// own thread, sending the next request as soon as the last reply is in; over a Unix socket
/// (which wrk cannot) or TCP. Prints one JSON object: requests, throughput and latency
/// percentiles. Not part of the daemon.
@main
struct LoadGenerator: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "dreamnet-loadgen",
        abstract: "Load an HTTP/1.1 server over a Unix socket or TCP with keep-alive connections."
    )

    @Option(help: "A Unix socket to connect to.")
    var unix: String?

    @Option(help: "HOST:PORT to connect to over TCP (IPv4).")
    var tcp: String?

    @Option(help: "The request path.")
    var path = "/health"

    @Option(help: "Concurrent keep-alive connections.")
    var connections = 1

    @Option(help: "Seconds to run, after a warm-up second.")
    var duration = 10.0

    func validate() throws {
        guard (unix == nil) != (tcp == nil) else { throw ValidationError("give exactly one of --unix and --tcp") }
        guard connections >= 1, duration > 0 else { throw ValidationError("--connections and --duration must be positive") }
    }

    func run() throws {
        let request = Array("GET \(path) HTTP/1.1\r\nHost: localhost\r\n\r\n".utf8)
        let target: Target = try unix.map { .unix($0) } ?? .tcp(try Target.parseTCP(tcp!))
        let results = Mutex<[Worker.Result]>([])
        let done = DispatchGroup()
        let start = ContinuousClock.now + .seconds(1)
        let end = start + .milliseconds(Int64(duration * 1_000))
        for _ in 0..<connections {
            let socket = try target.connect()
            done.enter()
            Thread.detachNewThread {
                let result = Worker(descriptor: socket, request: request).run(measuringFrom: start, until: end)
                results.withLock { $0.append(result) }
                done.leave()
            }
        }
        done.wait()
        let all = results.withLock { $0 }
        var latencies = all.flatMap(\.latenciesMicroseconds)
        latencies.sort()
        let errors = all.reduce(0) { $0 + $1.errors }
        func percentile(_ p: Double) -> Double {
            latencies.isEmpty ? 0 : Double(latencies[min(latencies.count - 1, Int(Double(latencies.count) * p))]) / 1_000
        }
        let summary: [String: Double] = [
            "connections": Double(connections), "seconds": duration, "requests": Double(latencies.count),
            "rps": Double(latencies.count) / duration, "p50_ms": percentile(0.50), "p99_ms": percentile(0.99),
            "max_ms": latencies.last.map { Double($0) / 1_000 } ?? 0, "errors": Double(errors),
        ]
        let json = try JSONSerialization.data(withJSONObject: summary, options: [.sortedKeys])
        print(String(decoding: json, as: UTF8.self))
        if errors > 0 { throw ExitCode(1) }
    }
}

enum Target {
    case unix(String)
    case tcp(sockaddr_in)

    static func parseTCP(_ text: String) throws -> sockaddr_in {
        let parts = text.split(separator: ":")
        guard parts.count == 2, let port = UInt16(parts[1]) else { throw ValidationError("--tcp takes HOST:PORT") }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        guard inet_pton(AF_INET, String(parts[0]), &address.sin_addr) == 1 else { throw ValidationError("--tcp takes an IPv4 address") }
        return address
    }

    func connect() throws -> Int32 {
        switch self {
        case .unix(let path):
            let descriptor = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
            var address = sockaddr_un()
            address.sun_family = sa_family_t(AF_UNIX)
            withUnsafeMutableBytes(of: &address.sun_path) { $0.copyBytes(from: Array(path.utf8).prefix($0.count - 1)) }
            let result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
            }
            guard result == 0 else { throw ValidationError("connect \(path): \(String(cString: strerror(errno)))") }
            return descriptor
        case .tcp(var address):
            let descriptor = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
            var one: Int32 = 1
            setsockopt(descriptor, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
            let result = withUnsafePointer(to: &address) {
                $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(descriptor, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
            }
            guard result == 0 else { throw ValidationError("connect: \(String(cString: strerror(errno)))") }
            return descriptor
        }
    }
}

/// One connection: request, whole reply (head, then Content-Length bytes), next request.
struct Worker {
    struct Result: Sendable {
        var latenciesMicroseconds: [UInt32]
        var errors: Int
    }

    let descriptor: Int32
    let request: [UInt8]

    func run(measuringFrom start: ContinuousClock.Instant, until end: ContinuousClock.Instant) -> Result {
        defer { close(descriptor) }
        var latencies: [UInt32] = []
        latencies.reserveCapacity(1 << 20)
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        var filled = 0
        while true {
            let sent = ContinuousClock.now
            if sent >= end { return Result(latenciesMicroseconds: latencies, errors: 0) }
            guard write(all: request) else { return Result(latenciesMicroseconds: latencies, errors: 1) }
            // Read until a whole response is buffered.
            var consumed = 0
            while consumed == 0 {
                if let length = Self.responseLength(buffer, filled) {
                    consumed = length
                    break
                }
                if filled == buffer.count { buffer += [UInt8](repeating: 0, count: buffer.count) }
                let count = buffer.withUnsafeMutableBytes { read(descriptor, $0.baseAddress! + filled, $0.count - filled) }
                guard count > 0 else { return Result(latenciesMicroseconds: latencies, errors: 1) }
                filled += count
            }
            let received = ContinuousClock.now
            if sent >= start {
                let elapsed = received - sent
                latencies.append(UInt32(clamping: elapsed.components.seconds * 1_000_000 + elapsed.components.attoseconds / 1_000_000_000_000))
            }
            buffer.withUnsafeMutableBytes { bytes in
                _ = memmove(bytes.baseAddress!, bytes.baseAddress! + consumed, filled - consumed)
            }
            filled -= consumed
        }
    }

    private func write(all bytes: [UInt8]) -> Bool {
        var offset = 0
        while offset < bytes.count {
            let written = bytes[offset...].withUnsafeBytes { send(descriptor, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }
            guard written > 0 else { return false }
            offset += written
        }
        return true
    }

    /// The length of the first response in the buffer, if it is all there.
    static func responseLength(_ buffer: [UInt8], _ filled: Int) -> Int? {
        guard filled >= 4 else { return nil }
        var headEnd = -1
        for index in 0...(filled - 4)
        where buffer[index] == 13 && buffer[index + 1] == 10 && buffer[index + 2] == 13 && buffer[index + 3] == 10 {
            headEnd = index
            break
        }
        guard headEnd >= 0 else { return nil }
        let head = String(decoding: buffer[0..<headEnd], as: UTF8.self).lowercased()
        var length = 0
        for line in head.split(separator: "\r\n") where line.hasPrefix("content-length:") {
            length = Int(line.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) ?? 0
        }
        let total = headEnd + 4 + length
        return filled >= total ? total : nil
    }
}
