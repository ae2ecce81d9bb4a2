import Foundation
import Glibc
import HostSockets
import Testing
import TestSupport

/// The kernel's socket table as the daemon reads it to follow the application's use of a
/// database: real connections on the loopback, this process's and another's.
@Suite struct SocketTableTests {
    /// A connected TCP socket of this process to 127.0.0.1:`port`, and its local port.
    private func connect(to port: Int) throws -> (descriptor: Int32, localPort: UInt16) {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = UInt16(port).bigEndian
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { Glibc.connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            let reason = String(cString: strerror(errno))
            close(fd)
            throw TestSupportError("connect: \(reason)")
        }
        var local = sockaddr_in()
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        _ = withUnsafeMutablePointer(to: &local) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { getsockname(fd, $0, &length) }
        }
        return (fd, UInt16(bigEndian: local.sin_port))
    }

    @Test func aConnectionShowsHowLongAgoItLastSentWithoutBeingTouched() async throws {
        let listener = try BlackHoleListener()
        defer { listener.close() }
        let remote = try #require(TCPEndpoint(numeric: "127.0.0.1", port: UInt16(listener.port)))
        let client = try connect(to: listener.port)
        defer { close(client.descriptor) }
        #expect(send(client.descriptor, "hello", 5, 0) == 5)

        let fresh = try SocketTable.connections(to: [remote])
        let mine = try #require(fresh.first { $0.localPort == client.localPort }, "\(fresh)")
        #expect(fresh.filter { !$0.isClosed }.count == 1)
        #expect(!mine.isClosed)
        #expect(mine.remote == remote)
        #expect(mine.sinceSent < .milliseconds(500), "\(mine)")
        #expect(SocketTable.ownSocketInodes().contains(mine.inode))
        #expect(mine.uid == getuid())

        // Reading the table sends nothing: the age grows.
        try await Task.sleep(for: .milliseconds(700))
        let later = try #require(try SocketTable.connections(to: [remote]).first { $0.localPort == client.localPort })
        #expect(later.sinceSent >= .milliseconds(600), "\(later)")
        #expect(later.sinceTraffic >= .milliseconds(600), "\(later)")

        #expect(send(client.descriptor, "again", 5, 0) == 5)
        let again = try #require(try SocketTable.connections(to: [remote]).first { $0.localPort == client.localPort })
        #expect(again.sinceSent < .milliseconds(500), "\(again)")

        // Another port of the same address is not the database.
        let elsewhere = try #require(TCPEndpoint(numeric: "127.0.0.1", port: UInt16(listener.port == 65_535 ? 1 : listener.port + 1)))
        #expect(try SocketTable.connections(to: [elsewhere]).allSatisfy { $0.localPort != client.localPort })
    }

    /// Another process's connection (the application's) is in the table and is not among this
    /// process's own sockets, which is how the daemon leaves its own probes out.
    @Test func anotherProcesssConnectionIsNotOneOfOurs() async throws {
        let listener = try BlackHoleListener()
        defer { listener.close() }
        let remote = try #require(TCPEndpoint(numeric: "127.0.0.1", port: UInt16(listener.port)))
        let launched = ContinuousClock.now
        let application = try BackgroundProcess(
            URL(fileURLWithPath: "/usr/bin/python3"),
            ["-c", "import socket, time; s = socket.create_connection(('127.0.0.1', \(listener.port))); s.send(b'x'); print('connected', flush=True); time.sleep(30)"]
        )
        defer { application.terminate(timeout: .seconds(2)) }
        #expect(await waitUntil(timeout: .seconds(10)) { application.output().contains("connected") })
        let connections = try SocketTable.connections(to: [remote]).filter { !$0.isClosed }
        let own = SocketTable.ownSocketInodes()
        let theirs = connections.filter { !own.contains($0.inode) }
        #expect(theirs.count == 1, "\(connections)")
        // It sent its byte after it was started: a busy machine can make that many seconds ago.
        let sinceLaunch = ContinuousClock.now - launched
        #expect(theirs.first.map { $0.sinceSent <= sinceLaunch } == true, "\(String(describing: theirs.first)), started \(sinceLaunch) ago")
    }

    /// A connection this host closed first stays in the table, closed (TIME_WAIT), for a
    /// minute, with the time since its close: how a connection opened for one request is seen.
    @Test func aConnectionClosedByThisHostIsSeenClosedWithItsAge() async throws {
        let server = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
        defer { close(server) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_addr.s_addr = UInt32(0x7F00_0001).bigEndian
        var length = socklen_t(MemoryLayout<sockaddr_in>.size)
        let bound = withUnsafeMutablePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { bind(server, $0, length) == 0 && getsockname(server, $0, &length) == 0 }
        }
        #expect(bound && listen(server, 4) == 0)
        let port = Int(UInt16(bigEndian: address.sin_port))
        let remote = try #require(TCPEndpoint(numeric: "127.0.0.1", port: UInt16(port)))
        let client = try connect(to: port)
        let accepted = accept(server, nil, nil)
        #expect(accepted >= 0)
        #expect(send(client.descriptor, "bye", 3, 0) == 3)
        // The client closes first (as libpq does after its Terminate), then the server.
        close(client.descriptor)
        let closed = ContinuousClock.now
        var byte: UInt8 = 0
        while recv(accepted, &byte, 1, 0) > 0 {}
        close(accepted)
        #expect(await waitUntil(timeout: .seconds(5)) {
            ((try? SocketTable.connections(to: [remote])) ?? []).contains { $0.localPort == client.localPort && $0.isClosed }
        })
        try await Task.sleep(for: .milliseconds(1_200))
        let entry = try #require(try SocketTable.connections(to: [remote]).first { $0.localPort == client.localPort })
        #expect(entry.isClosed && entry.inode == 0, "\(entry)")
        // TIME_WAIT's time left is kept in whole jiffies: a little slack either way.
        let since = ContinuousClock.now - closed
        #expect(entry.sinceSent >= .milliseconds(900) && entry.sinceSent <= since + .milliseconds(200), "\(entry), closed \(since) ago")
    }

    @Test func endpointsCompareAsTheKernelShowsThem() throws {
        let mapped = try #require(TCPEndpoint(numeric: "::ffff:10.1.2.3", port: 5432))
        let plain = try #require(TCPEndpoint(numeric: "10.1.2.3", port: 5432))
        #expect(mapped == plain)
        #expect(plain.description == "10.1.2.3:5432")
        let v6 = try #require(TCPEndpoint(numeric: "2001:db8::1", port: 6543))
        #expect(v6.description == "[2001:db8::1]:6543")
        #expect(TCPEndpoint(numeric: "db.example.net", port: 5432) == nil)
        #expect(TCPEndpoint(address: [1, 2, 3], port: 1) == nil)
    }
}
