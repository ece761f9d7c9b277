import Testing
import Gossip
@testable import Simulation

/// The uneven network of issue 3: a dense cluster of 900 and a sparse cluster of 100
/// joined by three links, heavy-tailed sample counts, lossy, duplicating, reordering links.
struct UnevenNetwork {
    static let denseCount = 900
    static let sparseCount = 100
    static let nodeCount = denseCount + sparseCount
    static let dimension = 4
    static let bridges = 3

    let graph: Graph
    let vectors: [[Float]]
    let samples: [Double]
    let mean: [Double]
    let links: LinkPolicy

    init(seed: UInt64) {
        var rng = SplitMix64(seed: seed)
        var graph = Graph(nodeCount: Self.nodeCount)
        graph.addCluster(0..<Self.denseCount, extraLinksPerNode: 12, rng: &rng)
        graph.addCluster(Self.denseCount..<Self.nodeCount, extraLinksPerNode: 1, rng: &rng)
        for b in 0..<Self.bridges {
            graph.connect(b * 300, Self.denseCount + b * 33)
        }
        self.graph = graph
        samples = SampleCounts.pareto(count: Self.nodeCount, rng: &rng)
        // The clusters hold different data, so the bridges matter for the mean.
        vectors = (0..<Self.nodeCount).map { i in
            let offset: Float = i < Self.denseCount ? 1 : 6
            return (0..<Self.dimension).map { _ in offset + Float(rng.next(upperBound: UInt32(1000))) / 250 }
        }
        mean = AveragingMetrics.weightedMean(vectors, weights: samples)
        let lossy = LinkModel(
            loss: 0.3, latency: .milliseconds(2), jitter: .milliseconds(10),
            duplication: 0.1, reorder: 0.1, reorderDelay: .milliseconds(20))
        var sparse = lossy
        sparse.latency = .milliseconds(10)
        sparse.jitter = .milliseconds(20)
        var policy = LinkPolicy(default: lossy, groups: (0..<Self.nodeCount).map { $0 < Self.denseCount ? 0 : 1 })
        policy.setModel(sparse, betweenGroups: 1, and: 1)
        policy.setModel(sparse, betweenGroups: 0, and: 1)
        links = policy
    }

    func simulator(recovery: PushSumAverager.LossRecovery, seed: UInt64) -> Simulator<PushSumAverager> {
        var settings = PushSumAverager.Settings()
        settings.tickInterval = .milliseconds(100)
        settings.retransmitInterval = .milliseconds(60)
        settings.lossRecovery = recovery
        // Two transfers in flight: a lost acknowledgement then does not cost the sender a tick.
        settings.maxInFlight = 2
        let sim = Simulator.averaging(
            over: graph, initial: { [vectors] in vectors[$0] }, samples: samples, settings: settings,
            links: links, seed: seed)
        sim.startAll()
        return sim
    }
}

@Test func acknowledgedPushSum_unevenLossyNetwork_everyNodeReachesWeightedMeanWithin1e6() {
    let network = UnevenNetwork(seed: 3)
    let sim = network.simulator(recovery: .acknowledged, seed: 33)
    let initialWeight = network.samples.reduce(0, +)
    var error = Double.infinity
    sim.run(until: Instant(nanoseconds: 3_000_000_000_000), every: .seconds(10)) { sim in
        error = AveragingMetrics.maxRelativeError(sim, to: network.mean, nodes: 0..<UnevenNetwork.nodeCount)
        return error >= 1e-6
    }
    print("acknowledged: max relative error \(error) at \(sim.now), network \(sim.counters)")
    #expect(error < 1e-6)
    #expect(sim.counters.dropped(.loss) > 0 && sim.counters.duplicated > 0)
    let weight = AveragingMetrics.totalWeight(sim)
    #expect(abs(weight - initialWeight) <= 1e-9 * initialWeight)
}

@Test func plainPushSum_unevenLossyNetwork_endsMeasurablyOffTheMean() {
    let network = UnevenNetwork(seed: 3)
    let sim = network.simulator(recovery: .none, seed: 33)
    sim.run(until: Instant(nanoseconds: 120_000_000_000))
    let errors = (0..<UnevenNetwork.nodeCount).compactMap { i in
        sim.node(i).map { AveragingMetrics.relativeError(of: $0, to: network.mean) }
    }
    let best = errors.min() ?? 0
    print("plain: best node relative error \(best), worst \(errors.max() ?? 0)")
    #expect(errors.count == UnevenNetwork.nodeCount)
    #expect(best > 1e-3)
}
