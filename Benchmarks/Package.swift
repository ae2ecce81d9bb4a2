// swift-tools-version:6.1
import PackageDescription

// The in-process benchmarks of the daemon's per-probe and per-request hot paths, with allocation
// counts gated by static thresholds (Thresholds/). A package of its own, so that the daemon's
// package never depends on the benchmark tooling.
let package = Package(
    name: "dreamnet-healthd-benchmarks",
    platforms: [.macOS(.v15)],
    dependencies: [
        // Named, so that the products below resolve whatever the checkout's folder is called.
        .package(name: "dreamnet-healthd", path: ".."),
        // The malloc interposer counts allocations without jemalloc or any other system package.
        .package(url: "https://github.com/ordo-one/benchmark", from: "1.38.1", traits: ["MallocInterposer"]),
    ],
    targets: [
        .executableTarget(
            name: "HotPaths",
            dependencies: [
                .product(name: "Benchmark", package: "benchmark"),
                .product(name: "HealthCore", package: "dreamnet-healthd"),
                .product(name: "EventSpool", package: "dreamnet-healthd"),
                .product(name: "HealthDaemon", package: "dreamnet-healthd"),
            ],
            path: "HotPaths",
            plugins: [.plugin(name: "BenchmarkPlugin", package: "benchmark")]
        ),
    ],
    swiftLanguageModes: [.v6]
)
