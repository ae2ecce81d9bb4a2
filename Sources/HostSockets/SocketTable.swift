import CSockDiag
import Glibc

/// An IP address and TCP port, as the socket table compares them.
public struct TCPEndpoint: Hashable, Sendable, CustomStringConvertible {
    /// 4 bytes for IPv4, 16 for IPv6. An IPv4-mapped IPv6 address is kept as its IPv4 one:
    /// a dual-stack socket connected to an IPv4 address shows it that way.
    public let address: [UInt8]
    public let port: UInt16

    public init?(address: [UInt8], port: UInt16) {
        switch address.count {
        case 4: self.address = address
        case 16 where address[0..<10].allSatisfy({ $0 == 0 }) && address[10] == 0xFF && address[11] == 0xFF:
            self.address = Array(address[12...])
        case 16: self.address = address
        default: return nil
        }
        self.port = port
    }

    /// From a numeric address ("10.0.0.5", "2001:db8::1"); nil for anything else.
    public init?(numeric: String, port: UInt16) {
        var v4 = in_addr()
        if inet_pton(AF_INET, numeric, &v4) == 1 {
            self.init(address: withUnsafeBytes(of: &v4) { Array($0) }, port: port)
            return
        }
        var v6 = in6_addr()
        guard inet_pton(AF_INET6, numeric, &v6) == 1 else { return nil }
        self.init(address: withUnsafeBytes(of: &v6) { Array($0) }, port: port)
    }

    public var description: String {
        var text = [CChar](repeating: 0, count: Int(INET6_ADDRSTRLEN))
        let family = address.count == 4 ? AF_INET : AF_INET6
        _ = address.withUnsafeBytes { inet_ntop(family, $0.baseAddress, &text, socklen_t(text.count)) }
        let host = String(decoding: text.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        return address.count == 4 ? "\(host):\(port)" : "[\(host)]:\(port)"
    }
}

/// One TCP connection of this host, established or lately closed by it, as the kernel's socket
/// table has it.
public struct TCPConnection: Sendable, Equatable {
    public var remote: TCPEndpoint
    public var localPort: UInt16
    /// The socket's inode: what `/proc/PID/fd` links to (`socket:[inode]`); 0 once closed.
    public var inode: UInt32
    /// 0 once closed (the kernel keeps no owner for a closed connection).
    public var uid: UInt32
    /// How long ago the connection last sent, and last received, data (`tcp_info`'s
    /// `tcpi_last_data_sent` and `tcpi_last_data_recv`; `ss -ti`'s lastsnd and lastrcv). For a
    /// closed one, both are the time since it closed.
    public var sinceSent: Duration
    public var sinceReceived: Duration
    /// Closed by this host, and in TIME_WAIT for `SocketTable.timeWaitLength` after that: a
    /// connection opened for one request and closed at once is still seen this way.
    public var isClosed: Bool = false

    /// How long ago it last carried data either way.
    public var sinceTraffic: Duration { min(sinceSent, sinceReceived) }
}

public struct SocketTableError: Error, Sendable, CustomStringConvertible {
    public var description: String
}

/// The host's TCP connections, read from the kernel (netlink `NETLINK_SOCK_DIAG`, one dump per
/// address family), without sending anything on them: how the daemon sees whether the
/// application on its host is using the database, without touching the database.
public enum SocketTable {
    /// How long Linux keeps a connection this host closed in TIME_WAIT (`TCP_TIMEWAIT_LEN`,
    /// fixed at build time).
    public static let timeWaitLength = Duration.seconds(60)

    /// Connections to any of `remotes`, established or closed by this host within
    /// `timeWaitLength` (`isClosed`), from every process on the host that the kernel shows this
    /// process (all of them, for sockets in the same network namespace).
    public static func connections(to remotes: Set<TCPEndpoint>) throws(SocketTableError) -> [TCPConnection] {
        guard !remotes.isEmpty else { return [] }
        let fd = socket(AF_NETLINK, Int32(SOCK_DGRAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), NETLINK_SOCK_DIAG)
        guard fd >= 0 else { throw SocketTableError(description: "netlink socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var timeout = timeval(tv_sec: 1, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        var found: [TCPConnection] = []
        let families = Set(remotes.map { $0.address.count == 4 ? AF_INET : AF_INET6 })
        // IPv4 peers also show in the IPv6 dump, on dual-stack sockets.
        for family in [AF_INET, AF_INET6] where families.contains(family) || (family == AF_INET6 && families.contains(AF_INET)) {
            try dump(family: family, on: fd) { connection in
                if remotes.contains(connection.remote) { found.append(connection) }
            }
        }
        return found
    }

    /// The inodes of this process's own sockets, to tell its connections from the application's.
    public static func ownSocketInodes() -> Set<UInt32> {
        var inodes: Set<UInt32> = []
        guard let directory = opendir("/proc/self/fd") else { return inodes }
        defer { closedir(directory) }
        var link = [CChar](repeating: 0, count: 64)
        while let entry = readdir(directory) {
            let name = withUnsafeBytes(of: entry.pointee.d_name) { String(decoding: $0.prefix { $0 != 0 }, as: UTF8.self) }
            guard name.first?.isNumber == true else { continue }
            let count = readlink("/proc/self/fd/\(name)", &link, link.count - 1)
            guard count > 0 else { continue }
            let target = String(decoding: link[..<count].map { UInt8(bitPattern: $0) }, as: UTF8.self)
            if target.hasPrefix("socket:["), target.hasSuffix("]"), let inode = UInt32(target.dropFirst(8).dropLast()) {
                inodes.insert(inode)
            }
        }
        return inodes
    }

    // MARK: Netlink

    private static func dump(family: Int32, on fd: Int32, _ each: (TCPConnection) -> Void) throws(SocketTableError) {
        var header = nlmsghdr()
        header.nlmsg_len = UInt32(MemoryLayout<nlmsghdr>.size + MemoryLayout<inet_diag_req_v2>.size)
        header.nlmsg_type = UInt16(SOCK_DIAG_BY_FAMILY)
        header.nlmsg_flags = UInt16(NLM_F_REQUEST | NLM_F_DUMP)
        header.nlmsg_seq = UInt32(family)
        var request = inet_diag_req_v2()
        request.sdiag_family = UInt8(family)
        request.sdiag_protocol = UInt8(IPPROTO_TCP)
        request.idiag_ext = UInt8(1 << (INET_DIAG_INFO - 1))
        request.idiag_states = 1 << 1 | 1 << 6  // TCP_ESTABLISHED, TCP_TIME_WAIT
        var message = withUnsafeBytes(of: &header) { Array($0) }
        message += withUnsafeBytes(of: &request) { Array($0) }
        var kernel = sockaddr_nl()
        kernel.nl_family = sa_family_t(AF_NETLINK)
        let sent = withUnsafePointer(to: &kernel) { address in
            address.withMemoryRebound(to: sockaddr.self, capacity: 1) {
                sendto(fd, message, message.count, 0, $0, socklen_t(MemoryLayout<sockaddr_nl>.size))
            }
        }
        guard sent == message.count else {
            throw SocketTableError(description: "netlink request: \(String(cString: strerror(errno)))")
        }
        var buffer = [UInt8](repeating: 0, count: 32_768)
        while true {
            let count = buffer.withUnsafeMutableBytes { recv(fd, $0.baseAddress, $0.count, 0) }
            if count < 0 && errno == EINTR { continue }
            guard count > 0 else {
                throw SocketTableError(description: "netlink reply: \(count < 0 ? String(cString: strerror(errno)) : "closed")")
            }
            let outcome = buffer.withUnsafeBytes { bytes in
                Result { () throws(SocketTableError) in try parse(UnsafeRawBufferPointer(rebasing: bytes[..<count]), each) }
            }
            if try outcome.get() { return }
        }
    }

    /// One datagram of the dump; true once it holds the dump's end.
    private static func parse(_ bytes: UnsafeRawBufferPointer, _ each: (TCPConnection) -> Void) throws(SocketTableError) -> Bool {
        let headerLength = Int(csockdiag_nlmsg_hdrlen())
        var offset = 0
        while offset + MemoryLayout<nlmsghdr>.size <= bytes.count {
            let header = bytes.loadUnaligned(fromByteOffset: offset, as: nlmsghdr.self)
            let length = Int(header.nlmsg_len)
            guard length >= MemoryLayout<nlmsghdr>.size, offset + length <= bytes.count else {
                throw SocketTableError(description: "netlink reply: a truncated message")
            }
            switch Int32(header.nlmsg_type) {
            case NLMSG_DONE:
                return true
            case NLMSG_ERROR:
                let error = bytes.loadUnaligned(fromByteOffset: offset + headerLength, as: nlmsgerr.self)
                throw SocketTableError(description: "netlink: \(String(cString: strerror(-error.error)))")
            default:
                if length >= headerLength + MemoryLayout<inet_diag_msg>.size,
                   let connection = connection(in: UnsafeRawBufferPointer(rebasing: bytes[(offset + headerLength)..<(offset + length)])) {
                    each(connection)
                }
            }
            offset += Int(csockdiag_nlmsg_align(UInt32(length)))
        }
        return false
    }

    private static func connection(in body: UnsafeRawBufferPointer) -> TCPConnection? {
        let message = body.loadUnaligned(as: inet_diag_msg.self)
        var destination = message.id.idiag_dst
        let addressBytes = withUnsafeBytes(of: &destination) { Array($0) }
        let address = message.idiag_family == UInt8(AF_INET) ? Array(addressBytes[0..<4]) : addressBytes
        guard let remote = TCPEndpoint(address: address, port: UInt16(bigEndian: message.id.idiag_dport)) else { return nil }
        if message.idiag_state == 6 {
            // TIME_WAIT: no tcp_info, only the time left; it began at the close.
            let closedAgo = max(.zero, timeWaitLength - .milliseconds(Int64(message.idiag_expires)))
            return TCPConnection(
                remote: remote, localPort: UInt16(bigEndian: message.id.idiag_sport), inode: 0, uid: 0,
                sinceSent: closedAgo, sinceReceived: closedAgo, isClosed: true
            )
        }
        var info = tcp_info()
        var offset = Int(csockdiag_nlmsg_align(UInt32(MemoryLayout<inet_diag_msg>.size)))
        let attributeHeader = Int(csockdiag_rta_hdrlen())
        var haveInfo = false
        while offset + attributeHeader <= body.count {
            let attribute = body.loadUnaligned(fromByteOffset: offset, as: rtattr.self)
            let length = Int(attribute.rta_len)
            guard length >= attributeHeader, offset + length <= body.count else { break }
            if attribute.rta_type == UInt16(INET_DIAG_INFO) {
                // The kernel's tcp_info may be longer or shorter than this libc's: its prefix.
                let payload = min(length - attributeHeader, MemoryLayout<tcp_info>.size)
                withUnsafeMutableBytes(of: &info) { target in
                    target.copyMemory(from: UnsafeRawBufferPointer(rebasing: body[(offset + attributeHeader)..<(offset + attributeHeader + payload)]))
                }
                haveInfo = true
            }
            offset += Int(csockdiag_rta_align(UInt32(length)))
        }
        guard haveInfo else { return nil }
        return TCPConnection(
            remote: remote, localPort: UInt16(bigEndian: message.id.idiag_sport), inode: message.idiag_inode,
            uid: message.idiag_uid, sinceSent: .milliseconds(Int64(info.tcpi_last_data_sent)),
            sinceReceived: .milliseconds(Int64(info.tcpi_last_data_recv))
        )
    }
}
