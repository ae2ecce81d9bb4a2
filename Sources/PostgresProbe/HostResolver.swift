import Dispatch
import Glibc
import Synchronization

/// Name resolution under a deadline.
///
/// `getaddrinfo` blocks with no timeout of its own we control (resolv.conf's, several seconds
/// per server), and libpq would call it inside `PQconnectStartParams`. So names are resolved
/// here, on a thread of their own, while the probe waits on a pipe with `poll()` until its
/// deadline; the addresses are then handed to libpq as `hostaddr`. A lookup still running when
/// the deadline passes is left to finish in the background, and a later probe for the same
/// name joins it instead of starting another: at most one thread per name, however long DNS
/// stays broken.
final class HostResolver: Sendable {
    static let shared = HostResolver()

    enum Failure: Error, Equatable {
        case timedOut
        case cancelled
        case failed(String)
    }

    private let inFlight = Mutex<[String: Lookup]>([:])

    /// A lookup older than this is presumed stuck (a hung NSS module, say): a new probe starts a
    /// fresh one rather than waiting on it forever. Bounds threads to one per name per period.
    static let stuckAfter = Duration.seconds(30)

    /// Starts a lookup of `host`, or joins the one already running.
    func begin(_ host: String) -> Lookup? {
        let now = ContinuousClock.now
        let lookup = inFlight.withLock { lookups -> Lookup? in
            if let running = lookups[host], now - running.startedAt < Self.stuckAfter { return running }
            let fresh = try? Lookup(host: host, startedAt: now)
            lookups[host] = fresh
            return fresh
        }
        lookup?.start { [self] in
            inFlight.withLock { lookups in
                if let lookup, lookups[host] === lookup { lookups[host] = nil }
            }
        }
        return lookup
    }

    /// Waits for a lookup started with `begin`.
    func wait(
        for lookup: Lookup?, until deadline: ContinuousClock.Instant, cancellation: ProbeCancellation
    ) -> Result<[String], Failure> {
        guard let lookup else { return .failure(.failed("could not start name resolution")) }
        switch cancellation.wait(lookup.readDescriptor, for: POLLIN, until: deadline) {
        case .deadline: return .failure(.timedOut)
        case .cancelled: return .failure(.cancelled)
        case .ready: return lookup.result ?? .failure(.timedOut)
        }
    }

    /// The numeric addresses of `host` within `limit`, or nil (no answer in time, or none):
    /// the probes' bounded lookup, for a caller other than a probe. Blocks for at most
    /// `limit`; call it off the cooperative pool.
    static func addresses(of host: String, within limit: Duration) -> [String]? {
        if isNumericAddress(host) { return [host] }
        let lookup = shared.begin(host)
        guard case .success(let addresses) = shared.wait(for: lookup, until: .now + limit, cancellation: ProbeCancellation()) else {
            return nil
        }
        return addresses
    }

    /// `true` for a literal IPv4 or IPv6 address, which needs no lookup.
    static func isNumericAddress(_ host: String) -> Bool {
        var v4 = in_addr()
        var v6 = in6_addr()
        return inet_pton(AF_INET, host, &v4) == 1 || inet_pton(AF_INET6, host, &v6) == 1
    }
}

/// One `getaddrinfo` call on its own thread; its flag becomes readable when it is done.
final class Lookup: Sendable {
    let host: String
    let startedAt: ContinuousClock.Instant
    private let done = ThreadFlag()
    private let state = Mutex<(started: Bool, result: Result<[String], HostResolver.Failure>?)>((false, nil))

    init(host: String, startedAt: ContinuousClock.Instant) throws {
        self.host = host
        self.startedAt = startedAt
        if let failure = done.failure { throw ResolverError(message: failure) }
    }

    /// Readable once the lookup has a result.
    var readDescriptor: Int32 { done.descriptor }

    var result: Result<[String], HostResolver.Failure>? {
        state.withLock { $0.result }
    }

    /// Starts the lookup once; later callers join it.
    func start(whenDone: @escaping @Sendable () -> Void) {
        let first = state.withLock { state -> Bool in
            defer { state.started = true }
            return !state.started
        }
        guard first else { return }
        let finish = { @Sendable [self] (result: Result<[String], HostResolver.Failure>) in
            state.withLock { $0.result = result }
            whenDone()
            done.set()
        }
        let started = DetachedThread.start { [host] in finish(Self.lookUp(host)) }
        if !started { finish(.failure(.failed("could not start a thread for name resolution"))) }
    }

    private static func lookUp(_ host: String) -> Result<[String], HostResolver.Failure> {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        hints.ai_flags = AI_ADDRCONFIG
        var list: UnsafeMutablePointer<addrinfo>?
        let status = getaddrinfo(host, nil, &hints, &list)
        guard status == 0, let list else {
            let reason = String(cString: gai_strerror(status))
            return .failure(.failed("could not translate host name \"\(host)\" to address: \(reason)"))
        }
        defer { freeaddrinfo(list) }
        var addresses: [String] = []
        var entry: UnsafeMutablePointer<addrinfo>? = list
        while let current = entry {
            var buffer = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            if getnameinfo(
                current.pointee.ai_addr, current.pointee.ai_addrlen, &buffer, socklen_t(buffer.count),
                nil, 0, NI_NUMERICHOST
            ) == 0 {
                let address = String(decoding: buffer.prefix(while: { $0 != 0 }).map { UInt8(bitPattern: $0) }, as: UTF8.self)
                if !addresses.contains(address) { addresses.append(address) }
            }
            entry = current.pointee.ai_next
        }
        return addresses.isEmpty
            ? .failure(.failed("host name \"\(host)\" has no address"))
            : .success(addresses)
    }
}

struct ResolverError: Error, CustomStringConvertible {
    var message: String
    var description: String { message }
}

/// Runs blocking libpq work on a thread of its own and awaits the result.
///
/// A probe must never queue behind other blocking work (a spool write, an insert into a slow
/// events database): a shared pool would let those delay it past its deadline and upset the
/// probe cadence. Each call has a thread to itself, a parked one when there is one.
/// `nil` if no thread could be created.
public func onOwnThread<T: Sendable>(_ body: @escaping @Sendable () -> T) async -> T? {
    await withCheckedContinuation { (continuation: CheckedContinuation<T?, Never>) in
        let started = ParkedThreads.shared.run { continuation.resume(returning: body()) }
        if !started { continuation.resume(returning: nil) }
    }
}

/// Threads for blocking calls that are kept parked between calls: the probe loop hands each
/// probe to a thread that is already there instead of creating and tearing one down per probe.
/// A call that finds no parked thread gets a new one, so calls never wait for each other; at
/// most `keepParked` threads stay parked, the rest end.
final class ParkedThreads: Sendable {
    static let shared = ParkedThreads(keepParked: 2)

    private final class Worker: Sendable {
        let wake = DispatchSemaphore(value: 0)
        let job = Mutex<(@Sendable () -> Void)?>(nil)
    }

    private let parked = Mutex<[Worker]>([])
    private let keepParked: Int

    init(keepParked: Int) {
        self.keepParked = keepParked
    }

    /// `false` if no thread could be started for it.
    func run(_ body: @escaping @Sendable () -> Void) -> Bool {
        if let worker = parked.withLock({ $0.popLast() }) {
            worker.job.withLock { $0 = body }
            worker.wake.signal()
            return true
        }
        let worker = Worker()
        worker.job.withLock { $0 = body }
        return DetachedThread.start { [self] in
            while let job = worker.job.withLock({ job in defer { job = nil }; return job }) {
                job()
                let stays = parked.withLock { parked -> Bool in
                    guard parked.count < keepParked else { return false }
                    parked.append(worker)
                    return true
                }
                guard stays else { return }
                worker.wake.wait()
            }
        }
    }
}

/// A detached POSIX thread for one blocking call. Lookups need a thread each (see
/// `HostResolver`), and this keeps Foundation's `Thread` out of the binary.
enum DetachedThread {
    private final class Box {
        let body: @Sendable () -> Void
        init(_ body: @escaping @Sendable () -> Void) { self.body = body }
    }

    /// `false` if the thread could not be created.
    static func start(_ body: @escaping @Sendable () -> Void) -> Bool {
        let box = Unmanaged.passRetained(Box(body))
        var attributes = pthread_attr_t()
        pthread_attr_init(&attributes)
        defer { pthread_attr_destroy(&attributes) }
        pthread_attr_setdetachstate(&attributes, Int32(PTHREAD_CREATE_DETACHED))
        var thread = pthread_t()
        let status = pthread_create(&thread, &attributes, { argument in
            let box = Unmanaged<Box>.fromOpaque(argument!).takeRetainedValue()
            box.body()
            return nil
        }, box.toOpaque())
        if status != 0 { box.release() }
        return status == 0
    }
}
