import Crypto
import Foundation
import Gossip
import Simulation

/// `overlay`: the membership / peer-sampling / discovery node (`GossipNode`, no averaging) on
/// a large simulated network, against the same on a network eight times smaller in the same
/// run: per-node traffic and state should not grow with the network; the simulator's cost
/// per simulated node-second shows what a researcher pays per node.
enum OverlayBench {
    /// Nodes of the large network (`OVERLAY_BENCH_NODES` overrides).
    static let defaultNodes = 4_000
    /// The baseline network is this many times smaller.
    static let baselineDivisor = 8
    /// Virtual time measured after every node joined and the views settled.
    static let window = Duration.seconds(30)
    /// Settling time after the last join (tens of shuffle rounds).
    static let settle = Duration.seconds(30)
    static let link = LinkModel(loss: 0.01, latency: .milliseconds(2), jitter: .milliseconds(3))

    struct Outcome {
        var nodes: Int
        var wallSeconds: Double
        var cost: OverlayCost
    }

    static func simulate(nodes: Int) throws -> Outcome {
        let memo = RecordVerifier.Memo()
        var settings = OverlaySettings.lan
        settings.discovery.beaconEndpoint = nil
        let identities = try (0..<nodes).map { i -> Identity in
            var seed = [UInt8](repeating: 0xB3, count: Identity.seedLength)
            withUnsafeBytes(of: UInt64(i).littleEndian) { for (k, b) in $0.enumerated() { seed[k] = b } }
            return try Identity(seed: seed)
        }
        let sim = Simulator<GossipNode>(nodeCount: nodes, seed: 21, links: LinkPolicy(default: link)) { context in
            var s = settings
            if context.index > 0 { s.discovery.bootstrap = [SimAddress.endpoint(0)] }
            return GossipNode(identity: identities[context.index], endpoints: [context.endpoint], settings: s,
                              seed: context.seed, verifier: RecordVerifier(sharing: memo))
        }
        let spacing = Duration.milliseconds(2)
        for i in 0..<nodes { sim.start(i, at: .zero + spacing * i) }
        let start = Date()
        let cost = OverlayCost.measure(sim, from: .zero + spacing * nodes + settle, window: window)
        return Outcome(nodes: nodes, wallSeconds: Date().timeIntervalSince(start), cost: cost)
    }

    static func run() throws {
        let nodes = ProcessInfo.processInfo.environment["OVERLAY_BENCH_NODES"].flatMap(Int.init) ?? defaultNodes
        let small = try simulate(nodes: max(2, nodes / baselineDivisor))
        let large = try simulate(nodes: nodes)
        let simulatedSmall = Double(small.nodes) * (settle + window).seconds
        let simulatedLarge = Double(large.nodes) * (settle + window).seconds
        var report = BenchReport(suite: "overlay")
        report.add(BenchFigure(
            name: "messages per node per second, \(large.nodes) nodes", value: large.cost.messagesPerNodeSecond, unit: "msg/s",
            baseline: small.cost.messagesPerNodeSecond, ratio: small.cost.messagesPerNodeSecond / large.cost.messagesPerNodeSecond,
            note: "baseline: \(small.nodes) nodes"))
        report.add(BenchFigure(
            name: "bytes per node per second, \(large.nodes) nodes", value: large.cost.bytesPerNodeSecond, unit: "B/s",
            baseline: small.cost.bytesPerNodeSecond, ratio: small.cost.bytesPerNodeSecond / large.cost.bytesPerNodeSecond,
            note: "baseline: \(small.nodes) nodes"))
        report.add(BenchFigure(
            name: "watched peers per node (max), \(large.nodes) nodes", value: Double(large.cost.maxWatched), unit: "peers",
            baseline: Double(small.cost.maxWatched), ratio: Double(small.cost.maxWatched) / Double(max(1, large.cost.maxWatched)),
            note: "view \(large.cost.maxView)"))
        report.add(BenchFigure(
            name: "simulator cost per simulated node-second", value: large.wallSeconds / simulatedLarge * 1e6, unit: "µs",
            baseline: small.wallSeconds / simulatedSmall * 1e6,
            ratio: (small.wallSeconds / simulatedSmall) / (large.wallSeconds / simulatedLarge),
            note: "join, \(Int(settle.seconds)) s settling and \(Int(window.seconds)) s measured; wall \(String(format: "%.1f", large.wallSeconds)) s"))
        report.finish()
    }
}
