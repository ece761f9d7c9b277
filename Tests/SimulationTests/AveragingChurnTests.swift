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
    // Stands in for the runtime and membership: once a leaver has handed off its mass it
    // lingers a second (acknowledging retransmissions of shares it applied, as
    // `NodeRuntime.leave` does), then stops, and its neighbours learn that it is gone.
    var completed: [Int] = []
    sim.onEvent = { [unowned sim] node, event, now in
        guard event == .handOffComplete else { return }
        completed.append(node)
        sim.crash(node, at: now + .seconds(1), keepState: false)
        for peer in graph.adjacency[node] {
            sim.inject(peer, at: now + .milliseconds(1_500)) { averager, at in averager.onPeerGone(SimAddress.peer(node), at: at) }
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

@Test func acknowledgedPushSum_crashedNodeWithoutState_survivorsReachTheMeanWithoutItsMass() throws {
    // A crash loses the crashed node's mass: its value and weight, and its shares still in
    // flight that no receiver applied. The survivors must reach exactly
    // (V − v_c) / (W − w_c), the mean of what is left, computed here from the inputs and the
    // crashed node's state at the crash.
    let n = 60
    let victim = 17
    var rng = SplitMix64(seed: 21)
    var graph = Graph(nodeCount: n)
    graph.addCluster(0..<n, extraLinksPerNode: 3, rng: &rng)
    let samples = SampleCounts.pareto(count: n, rng: &rng)
    let vectors = (0..<n).map { i in (0..<3).map { _ in (i == victim ? 40 : 1) + Float(rng.next(upperBound: UInt32(1000))) / 250 } }
    var settings = PushSumAverager.Settings()
    settings.tickInterval = .milliseconds(100)
    settings.retransmitInterval = .milliseconds(60)
    let model = LinkModel(loss: 0.1, latency: .milliseconds(5), jitter: .milliseconds(10))
    let sim = Simulator.averaging(over: graph, initial: { vectors[$0] }, samples: samples, settings: settings,
                                  links: LinkPolicy(default: model), seed: 23)
    sim.startAll()
    // Early, while the victim still holds much of its outlying data, and at a moment it has a
    // share in flight (so that part of the accounting is exercised too).
    sim.run(until: Instant(nanoseconds: 400_000_000))
    while sim.node(victim)?.pendingTransfers.isEmpty == true, sim.now < Instant(nanoseconds: 1_000_000_000) {
        sim.run(until: sim.now + .milliseconds(1))
    }
    let crashAt = sim.now
    let crashed = try #require(sim.node(victim))
    let lostValue = crashed.withValue { v, _ in Array(v) }
    let lostWeight = crashed.weight
    let inFlight = crashed.pendingTransfers
    #expect(lostWeight > 0)
    #expect(!inFlight.isEmpty)
    sim.crash(victim, at: crashAt, keepState: false)
    // Stands in for membership: the neighbours learn of the death and take back their shares.
    for peer in graph.adjacency[victim] {
        sim.inject(peer, at: crashAt + .milliseconds(500)) { averager, at in averager.onPeerGone(SimAddress.peer(victim), at: at) }
    }
    let survivors = (0..<n).filter { $0 != victim }
    sim.run(until: crashAt + .seconds(2))
    // The victim's own shares in flight are lost unless a receiver applied them before the crash
    // or from the network afterwards.
    var lost = lostValue.map { $0 }
    var lostW = lostWeight
    for (to, transfer) in inFlight {
        guard let j = sim.index(of: to.endpoint), let receiver = sim.node(j),
              !receiver.hasApplied(from: SimAddress.peer(victim), epoch: transfer.epoch, sequence: transfer.sequence) else { continue }
        let share = try crashed.shareMass(transfer)
        for k in 0..<3 { lost[k] += share[k] }
        lostW += transfer.weight
    }
    let totalValue = (0..<3).map { k in zip(vectors, samples).reduce(0.0) { $0 + Double($1.0[k]) * $1.1 } }
    let totalWeight = samples.reduce(0, +)
    let expected = (0..<3).map { (totalValue[$0] - lost[$0]) / (totalWeight - lostW) }
    let everyonesMean = (0..<3).map { totalValue[$0] / totalWeight }
    var error = Double.infinity
    sim.run(until: Instant(nanoseconds: 300_000_000_000), every: .seconds(5)) { sim in
        error = AveragingMetrics.maxRelativeError(sim, to: expected, nodes: survivors)
        return error >= 1e-6
    }
    print("crash: victim held weight \(lostWeight) and \(inFlight.count) shares in flight; survivors' error \(error) at \(sim.now)")
    #expect(error < 1e-6)
    // The crash moved the mean by far more than the tolerance: a test that ignored the lost
    // mass would not pass.
    #expect(AveragingMetrics.maxRelativeError(sim, to: everyonesMean, nodes: survivors) > 1e-4)
}
