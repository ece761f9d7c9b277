// swift-tools-version:6.0
import PackageDescription

/// Murmuration: a serverless peer-to-peer node for gossip federated learning,
/// and the network simulator that runs the same protocol code.
///
/// Dependencies point one way: `Crypto` needs only libsodium, `Learner` needs no
/// networking, `Gossip` needs `Crypto`, and `Simulation` drives `Gossip` in virtual time.
/// `DeterministicRandom` is the one seeded generator they share, so a seed reproduces a run.
let package = Package(
    name: "Murmuration",
    products: [
        .executable(name: "peer", targets: ["peer"]),
        .executable(name: "netsim", targets: ["netsim"]),
        .library(name: "Crypto", targets: ["Crypto"]),
        .library(name: "Gossip", targets: ["Gossip"]),
        .library(name: "Learner", targets: ["Learner"]),
        .library(name: "Simulation", targets: ["Simulation"]),
        .library(name: "Federation", targets: ["Federation"]),
        .library(name: "Experiments", targets: ["Experiments"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/LebJe/TOMLKit", from: "0.6.0"),
        // The prediction server of `peer serve` and `peer join --serve`: small, pure Swift, no SwiftNIO.
        .package(url: "https://github.com/swhitty/FlyingFox", from: "0.27.1"),
        // Latency percentiles of the benchmarks (murmur-bench only).
        .package(url: "https://github.com/HdrHistogram/hdrhistogram-swift", from: "0.2.0"),
    ],
    targets: [
        // System libraries from Debian packages (see `make deps`).
        .systemLibrary(name: "CSodium", pkgConfig: "libsodium", providers: [.apt(["libsodium-dev"])]),
        .systemLibrary(name: "CLibUV", pkgConfig: "libuv", providers: [.apt(["libuv1-dev"])]),
        .systemLibrary(name: "CBLAS", pkgConfig: "openblas", providers: [.apt(["libopenblas-dev"])]),
        .systemLibrary(name: "CZlib", pkgConfig: "zlib", providers: [.apt(["zlib1g-dev"])]),
        .systemLibrary(name: "CDNNL", providers: [.apt(["libdnnl-dev"])]),

        .target(name: "DeterministicRandom"),
        // What every command shares: the error and exit conventions of docs/cli.md.
        .target(name: "CommandSupport", dependencies: [.product(name: "ArgumentParser", package: "swift-argument-parser")]),
        .target(name: "Crypto", dependencies: ["CSodium"]),
        .target(name: "Gossip", dependencies: ["Crypto", "DeterministicRandom", "CLibUV", "CZlib", "CPrefetch", .product(name: "Logging", package: "swift-log")]),
        .target(name: "CInference"),
        .target(name: "Learner", dependencies: ["DeterministicRandom", "CBLAS", "CZlib", "CDNNL", "CInference"]),
        // The one composition of gossip and learning: neither Gossip nor Learner knows the other.
        .target(name: "Federation", dependencies: ["Crypto", "Gossip", "Learner", "DeterministicRandom"]),
        .systemLibrary(name: "CPrefetch"),
        .target(name: "Simulation", dependencies: ["Gossip", "Crypto", "CPrefetch"], path: "netsim/Simulation",
                swiftSettings: [.unsafeFlags(["-cross-module-optimization", "-enforce-exclusivity=unchecked"])]),

        // Experiments: scenario files resolved and run on the simulator, learning networks for every algorithm.
        .target(name: "Experiments", dependencies: ["Simulation", "Federation", "Gossip", "Learner", "Crypto", "DeterministicRandom",
                                                  .product(name: "TOMLKit", package: "TOMLKit")],
                path: "netsim/Experiments"),

        .executableTarget(
            name: "peer",
            dependencies: [
                "Crypto", "Gossip", "Learner", "Federation", "CommandSupport", "DeterministicRandom",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "TOMLKit", package: "TOMLKit"),
                .product(name: "FlyingFox", package: "FlyingFox"),
                .product(name: "FlyingSocks", package: "FlyingFox"),
            ]
        ),
        .executableTarget(
            name: "netsim",
            dependencies: ["Simulation", "Experiments", "Gossip", "Learner", "CommandSupport", "DeterministicRandom",
                           .product(name: "ArgumentParser", package: "swift-argument-parser")],
            path: "netsim/CLI"
        ),
        .executableTarget(
            name: "murmur-bench",
            dependencies: ["Crypto", "Gossip", "Learner", "Federation", "Experiments", "Simulation", "DeterministicRandom", "CSodium",
                           .product(name: "Histogram", package: "hdrhistogram-swift")],
            path: "Benchmarks"
        ),

        .testTarget(name: "CryptoTests", dependencies: ["Crypto", "CSodium"]),
        .testTarget(name: "GossipTests", dependencies: ["Gossip", "Crypto", "DeterministicRandom"]),
        .testTarget(name: "LearnerTests", dependencies: ["Learner", "DeterministicRandom", "CInference"]),
        .testTarget(name: "FederationTests", dependencies: ["Federation", "Experiments", "Gossip", "Crypto", "Learner", "Simulation", "DeterministicRandom"]),
        .testTarget(name: "SimulationTests", dependencies: ["Simulation", "Gossip", "Crypto"]),
        // Runs the built `peer` and `netsim` as a user would, and the commands the docs show.
        .testTarget(name: "CLITests"),
    ],
    swiftLanguageModes: [.v6]
)
