import Testing
import Gossip
@testable import Simulation

@Test func acknowledgedPushSum_gracefulLeavesDuringMixing_survivorsReachTheMeanOfEveryNodesData() {
    let n = 120
    let leavers = [5, 40, 77]
    var rng = SplitMix64(seed: 8)
    var graph = Graph(nodeCount: n)
    graph.addCluster(0..<n, extraLinksPerNode: 3, rng: &rng)
    let samples = SampleCounts.pareto(count: n, rng: &rng)
    // The leavers hold outlying data, so losing their mass would show.
    let vectors = (0..<n).map { i in (0..<3).map { _ in (leavers.contains(i) ? 50 : 1) + Float(rng.next(upperBound: UInt32(1000))) / 250 } }
    let mean = AveragingMetrics.weightedMean(vectors, weights: samples)
    var settings = PushSumAverager.Settings()
    settings.tickInterval = .milliseconds(100)
    settings.retransmitInterval = .milliseconds(60)
    let model = LinkModel(loss: 0.1, latency: .milliseconds(5), jitter: .milliseconds(10), duplication: 0.05)
    let sim = Simulator.averaging(
        over: graph, initial: { vectors[$0] }, samples: samples, settings: settings,
        links: LinkPolicy(default: model), seed: 81)
    // Stands in for membership: once a leaver has handed off its mass it stops, and its
    // neighbours learn that it is gone.
    var completed: [Int] = []
    sim.onEvent = { [unowned sim] node, event, now in
        guard event == .handOffComplete else { return }
        completed.append(node)
        sim.crash(node, at: now, keepState: false)
        for peer in graph.adjacency[node] {
            sim.inject(peer, at: now + .milliseconds(500)) { averager, at in averager.onPeerGone(SimAddress.peer(node), at: at) }
        }
    }
    sim.startAll()
    for (k, leaver) in leavers.enumerated() {
        sim.inject(leaver, at: Instant(nanoseconds: Int64(2 + k) * 1_000_000_000)) { averager, at in averager.beginLeave(at: at) }
    }
    let survivors = (0..<n).filter { !leavers.contains($0) }
    var error = Double.infinity
    sim.run(until: Instant(nanoseconds: 600_000_000_000), every: .seconds(5)) { sim in
        error = AveragingMetrics.maxRelativeError(sim, to: mean, nodes: survivors)
        return error >= 1e-6 || completed.count < leavers.count
    }
    print("leave: \(completed.count) left, error \(error) at \(sim.now)")
    #expect(completed.sorted() == leavers)
    #expect(leavers.allSatisfy { !sim.isUp($0) })
    #expect(error < 1e-6)
    let total = samples.reduce(0, +)
    #expect(abs(AveragingMetrics.totalWeight(sim) - total) <= 1e-9 * total)
}
