import Foundation
import Glibc
import Synchronization

/// An error raised by the test helpers, with a human-readable explanation.
public struct TestSupportError: Error, CustomStringConvertible, Sendable {
    public let description: String

    public init(_ description: String) {
        self.description = description
    }
}

// MARK: - Built products

/// The directory holding the package's built executables (`dreamnet-healthd`, `dreamnet-healthctl`).
///
/// Under `swift test` the test runner sits next to the executables, so its location is tried first;
/// the package's `.build/debug` is the fallback.
public func productsDirectory() -> URL {
    let names = ["dreamnet-healthd", "dreamnet-healthctl"]
    let fileManager = FileManager.default
    var candidates: [URL] = []

    // Linux: the test runner is a plain executable inside `.build/<triple>/debug/`.
    if let executable = Bundle.main.executableURL {
        candidates.append(executable.resolvingSymlinksInPath().deletingLastPathComponent())
    }
    // macOS: tests are loaded from `<products>/<Package>PackageTests.xctest`.
    for bundle in Bundle.allBundles where bundle.bundleURL.pathExtension == "xctest" {
        candidates.append(bundle.bundleURL.deletingLastPathComponent())
    }
    if let argument0 = CommandLine.arguments.first, !argument0.isEmpty {
        let url = URL(fileURLWithPath: argument0).resolvingSymlinksInPath()
        candidates.append(url.deletingLastPathComponent())
    }
    let fallback = packageRootDirectory().appendingPathComponent(".build/debug", isDirectory: true)
    candidates.append(fallback)

    for candidate in candidates {
        for name in names where fileManager.isExecutableFile(atPath: candidate.appendingPathComponent(name).path) {
            return candidate
        }
    }
    return fallback
}

/// The package root: the nearest ancestor of this source file that contains `Package.swift`.
public func packageRootDirectory(filePath: String = #filePath) -> URL {
    var directory = URL(fileURLWithPath: filePath).deletingLastPathComponent()
    while directory.path != "/" {
        if FileManager.default.fileExists(atPath: directory.appendingPathComponent("Package.swift").path) {
            return directory
        }
        directory.deleteLastPathComponent()
    }
    // This file lives at <root>/Tests/TestSupport/, should the walk find nothing.
    return URL(fileURLWithPath: filePath)
        .deletingLastPathComponent()
        .deletingLastPathComponent()
        .deletingLastPathComponent()
}

// MARK: - One-shot processes

/// What a finished process left behind.
public struct ProcessOutput: Sendable {
    /// The exit code, or 128 + the signal number if a signal ended it (as a shell reports it).
    public let status: Int32
    public let stdout: String
    public let stderr: String

    public init(status: Int32, stdout: String, stderr: String) {
        self.status = status
        self.stdout = stdout
        self.stderr = stderr
    }
}

/// Runs `executable` to completion and returns its exit status and output.
///
/// `environment` replaces this process's environment when given. Throws if the program cannot be
/// started or is still running after `timeout` (it and its process group are SIGKILLed first).
/// Output goes to temporary files rather than pipes, and completion is judged by the child's exit
/// alone: a grandchild that lives on (a server that daemonises, say) must not make this wait.
public func runProcess(
    _ executable: URL,
    _ arguments: [String],
    environment: [String: String]? = nil,
    currentDirectory: URL? = nil,
    timeout: Duration = .seconds(30)
) throws -> ProcessOutput {
    let scratch = try temporaryDirectory(prefix: "run-")
    defer { try? FileManager.default.removeItem(at: scratch) }
    let stdoutURL = scratch.appendingPathComponent("stdout")
    let stderrURL = scratch.appendingPathComponent("stderr")

    let child = try ChildProcess(
        executable: executable.path,
        arguments: arguments,
        environment: environment ?? ProcessInfo.processInfo.environment,
        currentDirectory: currentDirectory?.path,
        stdoutPath: stdoutURL.path,
        stderrPath: stderrURL.path
    )
    guard let status = child.wait(timeout: timeout) else {
        child.killGroup()
        _ = child.wait(timeout: .seconds(5))
        throw TestSupportError(
            "\(([executable.path] + arguments).joined(separator: " ")) still running after \(timeout); killed.\n"
                + "stdout: \(readText(stdoutURL))\nstderr: \(readText(stderrURL))"
        )
    }
    return ProcessOutput(status: status, stdout: readText(stdoutURL), stderr: readText(stderrURL))
}

// MARK: - Long-running processes

/// A process left running while a test pokes at it, its stdout and stderr captured together in a temporary file.
///
/// Killed (SIGKILL, with its process group) on deinit if it is still running.
public final class BackgroundProcess: Sendable {
    public let pid: pid_t
    /// The file receiving both stdout and stderr.
    public let outputFile: URL

    private let child: ChildProcess
    private let scratch: URL

    /// Starts `executable`. The environment is this process's own, with `environment` overriding it
    /// and the keys in `removing` taken out.
    public init(
        _ executable: URL,
        _ arguments: [String] = [],
        environment: [String: String] = [:],
        removing: [String] = [],
        currentDirectory: URL? = nil
    ) throws {
        var merged = ProcessInfo.processInfo.environment
        merged.merge(environment) { _, new in new }
        for key in removing {
            merged.removeValue(forKey: key)
        }
        let scratch = try temporaryDirectory(prefix: "bg-")
        let outputFile = scratch.appendingPathComponent("output")
        do {
            child = try ChildProcess(
                executable: executable.path,
                arguments: arguments,
                environment: merged,
                currentDirectory: currentDirectory?.path,
                stdoutPath: outputFile.path,
                stderrPath: nil
            )
        } catch {
            try? FileManager.default.removeItem(at: scratch)
            throw error
        }
        self.scratch = scratch
        self.outputFile = outputFile
        self.pid = child.pid
    }

    deinit {
        if child.status == nil {
            child.killGroup()
            _ = child.wait(timeout: .seconds(5))
        }
        try? FileManager.default.removeItem(at: scratch)
    }

    /// Everything the process has written to stdout and stderr so far.
    public func output() -> String {
        readText(outputFile)
    }

    public var isRunning: Bool {
        child.status == nil
    }

    /// The exit status once it has ended: the exit code, or 128 + the signal number if a signal ended it.
    public var exitStatus: Int32? {
        child.status
    }

    /// Sends `sig` to the process (not to its children). Does nothing once it has ended.
    public func signal(_ sig: Int32) {
        child.signal(sig)
    }

    /// Waits for the process to end by itself. Returns its status (see `exitStatus`), or nil if it is still running.
    @discardableResult
    public func waitForExit(timeout: Duration) -> Int32? {
        child.wait(timeout: timeout)
    }

    /// Sends SIGTERM, waits up to `timeout`, then SIGKILLs the process and its process group.
    /// Returns the status it ended with, or nil if even SIGKILL did not end it in time.
    @discardableResult
    public func terminate(timeout: Duration = .seconds(10)) -> Int32? {
        if let status = child.status {
            return status
        }
        child.signal(SIGTERM)
        if let status = child.wait(timeout: timeout) {
            return status
        }
        child.killGroup()
        return child.wait(timeout: .seconds(5))
    }
}

// MARK: - Polling, ports, directories

/// Calls `condition` every `poll` until it returns true or `timeout` passes. Returns whether it became true.
/// The condition is always evaluated at least once, and once more at the deadline.
public func waitUntil(
    timeout: Duration,
    poll: Duration = .milliseconds(50),
    _ condition: () throws -> Bool
) rethrows -> Bool {
    let clock = ContinuousClock()
    let deadline = clock.now.advanced(by: timeout)
    while true {
        if try condition() {
            return true
        }
        let now = clock.now
        if now >= deadline {
            return false
        }
        pause(for: min(poll, now.duration(to: deadline)))
    }
}

/// Blocks the calling thread for `duration`.
func pause(for duration: Duration) {
    guard duration > .zero else { return }
    Thread.sleep(forTimeInterval: duration.timeInterval)
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// The kernel picks it (bind to port 0); ports handed out earlier in this process are skipped,
/// so clusters and listeners started in parallel do not race for the same one.
public func freeTCPPort() -> Int {
    for _ in 0..<64 {
        guard let port = bindEphemeralPort() else { continue }
        let fresh = handedOutPorts.withLock { ports in ports.insert(port).inserted }
        if fresh {
            return port
        }
    }
    fatalError("freeTCPPort: could not find a free TCP port on 127.0.0.1")
}

/// Creates a fresh, uniquely named directory under the system temporary directory, mode 0755
/// so that a server running as another user can traverse it.
public func temporaryDirectory(prefix: String) throws -> URL {
    try temporaryDirectory(prefix: prefix, in: NSTemporaryDirectory())
}

func temporaryDirectory(prefix: String, in parent: String) throws -> URL {
    let base = parent.hasSuffix("/") ? String(parent.dropLast()) : parent
    var template = Array((base + "/" + prefix + "XXXXXX").utf8CString)
    let created: String? = template.withUnsafeMutableBufferPointer { buffer in
        guard let result = mkdtemp(buffer.baseAddress!) else { return nil }
        return String(cString: result)
    }
    guard let path = created else {
        throw TestSupportError("mkdtemp under \(base) failed: \(String(cString: strerror(errno)))")
    }
    // mkdtemp creates 0700.
    guard chmod(path, 0o755) == 0 else {
        throw TestSupportError("chmod 0755 \(path) failed: \(String(cString: strerror(errno)))")
    }
    return URL(fileURLWithPath: path, isDirectory: true)
}

// MARK: - Internals

/// Ports already returned by `freeTCPPort()` in this process.
let handedOutPorts = Mutex<Set<Int>>([])

private func bindEphemeralPort() -> Int? {
    // CLOEXEC: this socket must never leak into a child started concurrently on another thread.
    let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue) | Int32(SOCK_CLOEXEC.rawValue), 0)
    guard fd >= 0 else { return nil }
    defer { _ = close(fd) }
    var address = loopbackAddress(port: 0)
    let bound = withUnsafePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            bind(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size))
        }
    }
    guard bound == 0 else { return nil }
    return boundPort(of: fd)
}

/// A sockaddr_in for 127.0.0.1:`port`.
func loopbackAddress(port: Int) -> sockaddr_in {
    var address = sockaddr_in()
    address.sin_family = sa_family_t(AF_INET)
    address.sin_port = in_port_t(UInt16(port).bigEndian)
    address.sin_addr = in_addr(s_addr: UInt32(0x7F00_0001).bigEndian)
    return address
}

/// The local port a bound socket ended up with.
func boundPort(of fd: Int32) -> Int? {
    var address = sockaddr_in()
    var length = socklen_t(MemoryLayout<sockaddr_in>.size)
    let result = withUnsafeMutablePointer(to: &address) {
        $0.withMemoryRebound(to: sockaddr.self, capacity: 1) {
            getsockname(fd, $0, &length)
        }
    }
    guard result == 0 else { return nil }
    return Int(UInt16(bigEndian: address.sin_port))
}

/// A child started with posix_spawn and reaped by a thread of its own.
///
/// Foundation's `Process` is not used: on Linux it notices termination through a socket the child
/// inherits, so a child that leaves a daemon behind (`pg_ctl start`) never counts as finished.
final class ChildProcess: Sendable {
    let pid: pid_t
    /// nil while running; then the exit code, or 128 + signal number.
    private let exitStatus = Mutex<Int32?>(nil)
    private let exited = DispatchSemaphore(value: 0)

    /// `stderrPath` nil sends stderr to the stdout file. Stdin is /dev/null.
    init(
        executable: String,
        arguments: [String],
        environment: [String: String],
        currentDirectory: String?,
        stdoutPath: String,
        stderrPath: String?
    ) throws {
        var actions = posix_spawn_file_actions_t()
        posix_spawn_file_actions_init(&actions)
        defer { posix_spawn_file_actions_destroy(&actions) }
        var attributes = posix_spawnattr_t()
        posix_spawnattr_init(&attributes)
        defer { posix_spawnattr_destroy(&attributes) }

        if let currentDirectory {
            guard let addChdir = spawnAddChdir else {
                throw TestSupportError("posix_spawn_file_actions_addchdir_np is unavailable")
            }
            _ = addChdir(&actions, currentDirectory)
        }
        posix_spawn_file_actions_addopen(&actions, 0, "/dev/null", O_RDONLY, 0)
        posix_spawn_file_actions_addopen(&actions, 1, stdoutPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        if let stderrPath {
            posix_spawn_file_actions_addopen(&actions, 2, stderrPath, O_WRONLY | O_CREAT | O_TRUNC, 0o644)
        } else {
            posix_spawn_file_actions_adddup2(&actions, 1, 2)
        }
        // Only stdin/stdout/stderr: a descriptor inherited from elsewhere in the test process (a pipe,
        // a listening socket) would otherwise stay open for as long as the child or its daemons live.
        _ = spawnAddCloseFrom?(&actions, 3)

        // Own process group, so a timeout can kill helpers too (runuser's child, a shell's pipeline).
        // Signal mask and dispositions reset: ignored signals survive exec, and a test runner
        // ignoring SIGPIPE or SIGTERM must not pass that on.
        posix_spawnattr_setflags(&attributes, Int16(POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF))
        posix_spawnattr_setpgroup(&attributes, 0)
        var noSignals = sigset_t()
        sigemptyset(&noSignals)
        posix_spawnattr_setsigmask(&attributes, &noSignals)
        var defaultSignals = sigset_t()
        sigemptyset(&defaultSignals)
        for sig in 1..<32 where sig != SIGKILL && sig != SIGSTOP {
            sigaddset(&defaultSignals, Int32(sig))
        }
        posix_spawnattr_setsigdefault(&attributes, &defaultSignals)

        let argv = ([executable] + arguments).map { strdup($0) } + [nil]
        defer { argv.forEach { free($0) } }
        let envp = environment.map { strdup("\($0.key)=\($0.value)") } + [nil]
        defer { envp.forEach { free($0) } }

        var pid: pid_t = 0
        let result = posix_spawn(&pid, executable, &actions, &attributes, argv, envp)
        guard result == 0 else {
            throw TestSupportError("cannot start \(executable): \(String(cString: strerror(result)))")
        }
        self.pid = pid

        // A blocking waitpid per child: exact, and it reaps only this pid.
        Thread.detachNewThread { [self] in
            var raw: Int32 = 0
            var status: Int32 = -1
            while true {
                let reaped = waitpid(self.pid, &raw, 0)
                if reaped == self.pid {
                    let signal = raw & 0x7F
                    status = signal == 0 ? (raw >> 8) & 0xFF : 128 + signal
                    break
                }
                // ECHILD: someone else reaped it (SIGCHLD ignored, say); the code is lost.
                if reaped == -1 && errno != EINTR {
                    break
                }
            }
            self.exitStatus.withLock { $0 = status }
            self.exited.signal()
        }
    }

    var status: Int32? {
        exitStatus.withLock { $0 }
    }

    /// The status, or nil if the child is still running after `timeout`.
    func wait(timeout: Duration) -> Int32? {
        if let status { return status }
        guard exited.wait(timeout: .now() + max(timeout, .zero).timeInterval) == .success else {
            return status
        }
        // Pass the wake-up on, so other waiters (and later ones) return at once too.
        exited.signal()
        return status
    }

    func signal(_ sig: Int32) {
        // Checked so that a recycled pid is never hit; the reaper sets status only after waitpid,
        // so until then the pid still belongs to this child (possibly as a zombie).
        guard status == nil else { return }
        _ = kill(pid, sig)
    }

    /// SIGKILLs the child's process group (and the child, should it have left the group).
    func killGroup() {
        guard status == nil else { return }
        _ = kill(-pid, SIGKILL)
        _ = kill(pid, SIGKILL)
    }
}

/// glibc extensions the Glibc module does not import; present since glibc 2.29 / 2.34.
private typealias SpawnAddChdir = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, UnsafePointer<CChar>?) -> Int32
private typealias SpawnAddCloseFrom = @convention(c) (UnsafeMutablePointer<posix_spawn_file_actions_t>?, Int32) -> Int32

private let spawnAddChdir: SpawnAddChdir? = dlsym(nil, "posix_spawn_file_actions_addchdir_np")
    .map { unsafeBitCast($0, to: SpawnAddChdir.self) }
private let spawnAddCloseFrom: SpawnAddCloseFrom? = dlsym(nil, "posix_spawn_file_actions_addclosefrom_np")
    .map { unsafeBitCast($0, to: SpawnAddCloseFrom.self) }

func readText(_ url: URL) -> String {
    guard let data = FileManager.default.contents(atPath: url.path) else { return "" }
    return String(decoding: data, as: UTF8.self)
}

extension Duration {
    /// In seconds, as Foundation counts them.
    public var timeInterval: TimeInterval {
        let (seconds, attoseconds) = components
        return TimeInterval(seconds) + TimeInterval(attoseconds) / 1e18
    }
}

/// VmRSS from /proc/PID/status, in bytes.
public func residentBytes(of pid: pid_t) throws -> Int {
    try statusBytes(of: pid, field: "VmRSS")
}

/// The anonymous part of a process's resident set (its heap and stacks): what a leak or a
/// buffer grows, apart from the code pages that file-backed RSS counts.
public func anonymousBytes(of pid: pid_t) throws -> Int {
    try statusBytes(of: pid, field: "RssAnon")
}

private func statusBytes(of pid: pid_t, field: String) throws -> Int {
    let status = try String(contentsOfFile: "/proc/\(pid)/status", encoding: .utf8)
    guard let line = status.split(separator: "\n").first(where: { $0.hasPrefix(field + ":") }),
          let kib = Int(line.split(separator: " ", omittingEmptySubsequences: true)[1])
    else { throw TestSupportError("no \(field) in /proc/\(pid)/status") }
    return kib << 10
}
