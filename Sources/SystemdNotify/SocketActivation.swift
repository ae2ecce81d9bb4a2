import CSystemd
import Glibc

/// The listening socket systemd passes (`.socket` units, `systemd-socket-activate`).
public enum SocketActivation {
    public struct Failure: Error, Sendable, CustomStringConvertible {
        public var description: String
    }

    /// The passed descriptor, `nil` when none was passed (LISTEN_FDS unset). Anything else that
    /// does not fit (descriptors meant for another process, more than one, not a listening Unix
    /// stream socket) is an error, not silently ignored.
    public static func passedListener(environment: [String: String]) throws(Failure) -> Int32? {
        guard let count = environment["LISTEN_FDS"] else { return nil }
        let pid = environment["LISTEN_PID"].flatMap { Int32($0) }
        guard pid == getpid() else {
            throw Failure(description: "LISTEN_FDS is set for process \(environment["LISTEN_PID"] ?? "(LISTEN_PID unset)"), not this one (\(getpid())); the descriptors are not ours")
        }
        guard count == "1" else {
            throw Failure(description: "LISTEN_FDS=\(count): expected exactly one socket (the status socket)")
        }
        let descriptor = SD_LISTEN_FDS_START
        guard sd_is_socket_unix(descriptor, Int32(SOCK_STREAM.rawValue), 1, nil, 0) > 0 else {
            throw Failure(description: "descriptor \(descriptor) passed by systemd is not a listening Unix stream socket")
        }
        // Not passed on to anything this process starts.
        _ = fcntl(descriptor, F_SETFD, FD_CLOEXEC)
        return descriptor
    }
}
