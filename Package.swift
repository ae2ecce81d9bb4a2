// swift-tools-version:6.0
import PackageDescription

let package = Package(
    name: "dreamnet-healthd",
    platforms: [.macOS(.v15)],
    products: [
        .executable(name: "dreamnet-healthd", targets: ["dreamnet-healthd"]),
        .executable(name: "dreamnet-healthctl", targets: ["dreamnet-healthctl"]),
        // `dreamnet-healthctl probe`'s engine, installed in /usr/libexec/dreamnet-healthd.
        .executable(name: "dreamnet-probe", targets: ["dreamnet-probe"]),
        // The benchmarks' load client (HTTP over a Unix socket); not installed, not part of the daemon.
        .executable(name: "dreamnet-loadgen", targets: ["dreamnet-loadgen"]),
        // The tests' scale-to-zero stand-in as a process, for scripts/bench-sleep; not installed, not part of the daemon.
        .executable(name: "dreamnet-standin", targets: ["dreamnet-standin"]),
        // For the allocation benchmarks in Benchmarks/ (a package of its own); not installed.
        .library(name: "HealthCore", targets: ["HealthCore"]),
        .library(name: "EventSpool", targets: ["EventSpool"]),
        .library(name: "HealthDaemon", targets: ["HealthDaemon"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.6.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.80.0"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.6.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.0.0"),
    ],
    targets: [
        // C shims: one system library each, nothing else.
        .systemLibrary(
            name: "CLibPQ",
            pkgConfig: "libpq",
            providers: [.apt(["libpq-dev"])]
        ),
        .systemLibrary(
            name: "CSystemd",
            pkgConfig: "libsystemd",
            providers: [.apt(["libsystemd-dev"])]
        ),
        // glibc's malloc.h (malloc_trim), which the Glibc module does not export; part of libc.
        .systemLibrary(name: "CGlibcMalloc"),
        // The kernel's socket-diagnostics netlink headers (linux-libc-dev), for HostSockets.
        .systemLibrary(name: "CSockDiag"),
        .systemLibrary(
            name: "CSQLite",
            pkgConfig: "sqlite3",
            providers: [.apt(["libsqlite3-dev"])]
        ),

        // Pure core: states, transitions, damping, config model, encodings. No C, no I/O.
        .target(name: "HealthCore"),

        // Adapters.
        .target(
            name: "PostgresProbe",
            dependencies: ["HealthCore", "CLibPQ"]
        ),
        .target(
            name: "StatusHTTP",
            dependencies: [
                "HealthCore", "CGlibcMalloc",
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        // The CLI's client of the status socket: blocking, one request, SwiftNIO's HTTP codec in
        // an embedded channel. Apart from the server, so that the CLI links no more than this.
        .target(
            name: "StatusClient",
            dependencies: [
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOHTTP1", package: "swift-nio"),
                .product(name: "NIOEmbedded", package: "swift-nio"),
            ]
        ),
        // `probe`'s options, which the CLI, dreamnet-probe (which runs the CLI's `probe`) and
        // `dreamnet-healthd probe` parse, and how such one-shot commands start and end.
        .target(
            name: "ProbeCommandLine",
            dependencies: ["HealthCore", .product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),
        // One probe, printed, its exit code the verdict: `dreamnet-healthd probe` and
        // `dreamnet-probe`.
        .target(
            name: "OneShotProbe",
            dependencies: [
                "HealthCore", "PostgresProbe", "ProbeCommandLine",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .target(
            name: "EventSpool",
            dependencies: ["HealthCore", "CSQLite"]
        ),
        .target(
            name: "AlertLog",
            dependencies: ["HealthCore"]
        ),
        // The host's TCP connections from the kernel's socket table: the application's traffic
        // to a database that sleeps when unused (ScaleToZeroSchedule).
        .target(
            name: "HostSockets",
            dependencies: ["CSockDiag"]
        ),
        .target(
            name: "SystemdNotify",
            dependencies: ["CSystemd"]
        ),

        // Composition root shared by the daemon's @main and the tests.
        .target(
            name: "HealthDaemon",
            dependencies: [
                "HealthCore", "PostgresProbe", "StatusHTTP", "SystemdNotify", "EventSpool", "AlertLog", "HostSockets",
                .product(name: "Logging", package: "swift-log"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "Prometheus", package: "swift-prometheus"),
            ]
        ),
        .executableTarget(
            name: "dreamnet-healthd",
            dependencies: [
                "HealthDaemon", "HealthCore", "PostgresProbe", "ProbeCommandLine", "OneShotProbe",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        // libpq and what a probe needs; nothing of the daemon (systemd, SQLite, SwiftNIO).
        .executableTarget(
            name: "dreamnet-probe",
            dependencies: [
                "OneShotProbe", "ProbeCommandLine",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "dreamnet-healthctl",
            // No libpq: `probe` runs in dreamnet-probe.
            dependencies: [
                "HealthCore", "StatusClient", "ProbeCommandLine",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ]
        ),
        .executableTarget(
            name: "dreamnet-loadgen",
            dependencies: [.product(name: "ArgumentParser", package: "swift-argument-parser")]
        ),

        // Tests: the pure core alone, the loop on test time, and the whole thing against a real PostgreSQL.
        .target(
            name: "TestSupport",
            path: "Tests/TestSupport"
        ),
        // The scale-to-zero stand-in of TestSupport in a process of its own, for scripts/bench-sleep.
        .executableTarget(
            name: "dreamnet-standin",
            dependencies: [
                "TestSupport", "HealthCore",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            path: "Tests/dreamnet-standin"
        ),
        .testTarget(
            name: "HealthCoreTests",
            dependencies: ["HealthCore", "TestSupport"]
        ),
        // The probe loop's core on test time, and the composition root without a database.
        .testTarget(
            name: "HealthDaemonTests",
            dependencies: [
                "HealthCore", "HealthDaemon", "TestSupport",
                .product(name: "Logging", package: "swift-log"),
            ]
        ),
        .testTarget(
            name: "IntegrationTests",
            dependencies: [
                "TestSupport", "HealthCore", "PostgresProbe", "StatusHTTP", "StatusClient", "EventSpool", "AlertLog", "HostSockets",
                .product(name: "NIOPosix", package: "swift-nio"),
            ]
        ),
    ],
    swiftLanguageModes: [.v6]
)
