import Testing
import Gossip
@testable import Simulation

@Test func acknowledgedPushSum_halfAndHalfPartitionThenHeal_everyNodeReachesGlobalWeightedMean() {
    let n = 200
    var rng = SplitMix64(seed: 4)
    var graph = Graph(nodeCount: n)
    graph.addCluster(0..<n, extraLinksPerNode: 3, rng: &rng)
    let samples = SampleCounts.pareto(count: n, rng: &rng)
    // The halves hold different data, so each half alone has a different mean.
    let vectors = (0..<n).map { i in (0..<4).map { _ in (i < n / 2 ? 1 : 6) + Float(rng.next(upperBound: UInt32(1000))) / 250 } }
    let mean = AveragingMetrics.weightedMean(vectors, weights: samples)
    var settings = PushSumAverager.Settings()
    settings.tickInterval = .milliseconds(100)
    settings.retransmitInterval = .milliseconds(60)
    let model = LinkModel(loss: 0.1, latency: .milliseconds(5), jitter: .milliseconds(10), duplication: 0.05)
    let sim = Simulator.averaging(
        over: graph, initial: { vectors[$0] }, samples: samples, settings: settings,
        links: LinkPolicy(default: model), seed: 44)
    let heal = Instant(nanoseconds: 60_000_000_000)
    sim.partition(sides: (0..<n).map { $0 < n / 2 ? 0 : 1 }, from: .zero, until: heal)
    sim.startAll()
    sim.run(until: heal)
    let errorAtHeal = AveragingMetrics.maxRelativeError(sim, to: mean, nodes: 0..<n)
    #expect(sim.counters.dropped(.partition) > 1_000)
    #expect(errorAtHeal > 0.1)
    var error = Double.infinity
    sim.run(until: heal + .seconds(1_000), every: .seconds(5)) { sim in
        error = AveragingMetrics.maxRelativeError(sim, to: mean, nodes: 0..<n)
        return error >= 1e-6
    }
    print("partition: error \(errorAtHeal) at heal, \(error) at \(sim.now)")
    #expect(error < 1e-6)
    let total = samples.reduce(0, +)
    #expect(abs(AveragingMetrics.totalWeight(sim) - total) <= 1e-9 * total)
}
