import Crypto
import Gossip
import Testing
@testable import Simulation

/// Issue 3, test 1: a thousand nodes bootstrapped through one node form one overlay with
/// balanced in-degree after 100 shuffle rounds, with and without churn.
struct OverlayTests {
    static let nodeCount = 1_000
    static let joinSpacing = Duration.milliseconds(10)
    static let rounds = 100

    /// Starts node 0, then every other node with node 0 as its only bootstrap address.
    func bootstrapped(_ world: OverlayWorld, seed: UInt64) -> Simulator<GossipNode> {
        let sim = world.simulator(nodeCount: Self.nodeCount, seed: seed, links: LinkPolicy(default: LinkModel(latency: .milliseconds(2), jitter: .milliseconds(3))))
        for i in 0..<Self.nodeCount { sim.start(i, at: .zero + Self.joinSpacing * i) }
        return sim
    }

    @Test func overlay_thousandNodesFromOneBootstrap_connectedWithBalancedInDegree() {
        let world = OverlayWorld()
        let sim = bootstrapped(world, seed: 1)
        let end = Instant.zero + Self.joinSpacing * Self.nodeCount + world.settings.sampling.shuffleInterval * Self.rounds
        sim.run(until: end)
        let shape = OverlayShape(sim)
        print("overlay n=\(shape.live) rounds=\(Self.rounds) in-degree mean \(shape.mean) max \(shape.maximum) min \(shape.inDegree.min() ?? 0) connected \(shape.stronglyConnected) messages \(sim.counters.sent)")
        #expect(shape.live == Self.nodeCount)
        #expect(shape.stronglyConnected)
        #expect(Double(shape.maximum) <= 3 * shape.mean)
        #expect(shape.mean >= Double(world.settings.sampling.viewSize) * 0.9)
    }

    @Test func overlay_thousandNodesWithTwentyPercentChurn_staysConnectedAndBalanced() {
        let world = OverlayWorld()
        let sim = bootstrapped(world, seed: 2)
        let joined = Instant.zero + Self.joinSpacing * Self.nodeCount
        let end = joined + world.settings.sampling.shuffleInterval * Self.rounds
        // 20 % of the nodes (never the bootstrap node) crash at a random time during the
        // rounds and restart 5–20 s later from their persisted peer cache, at the same address.
        var rng = SplitMix64(seed: 77)
        var churners = Array(1..<Self.nodeCount)
        churners.shuffle(using: &rng)
        let churnWindow = (end - joined).nanosecondsClamped - Duration.seconds(5).nanosecondsClamped
        for i in churners.prefix(Self.nodeCount / 5) {
            let crashAt = joined + .nanoseconds(Int64(rng.next(upperBound: UInt64(churnWindow))))
            world.crash(sim, i, at: crashAt)
            sim.start(i, at: crashAt + .seconds(5) + .nanoseconds(Int64(rng.next(upperBound: UInt64(15_000_000_000)))))
        }
        sim.run(until: end)
        let shape = OverlayShape(sim)
        print("overlay+churn live=\(shape.live) in-degree mean \(shape.mean) max \(shape.maximum) min \(shape.inDegree.min() ?? 0) connected \(shape.stronglyConnected) messages \(sim.counters.sent)")
        #expect(shape.live < Self.nodeCount)  // some churners are down at the end
        #expect(shape.stronglyConnected)
        #expect(Double(shape.maximum) <= 3 * shape.mean)
    }
}

/// Peers behind lossy links keep their share of in-degree (Tölgyesi & Jelasity): a partner
/// that does not answer is kept for a few rounds, and a timed-out shuffle is retried at once.
struct OverlayLossyLinkTests {
    static let nodeCount = 400
    static let lossyCount = 40
    static let loss = 0.3

    /// Mean in-degree of the lossy nodes over that of the others, after 100 rounds.
    func inDegreeRatio(compensated: Bool, seed: UInt64) -> (ratio: Double, lossy: Double, others: Double) {
        var settings = OverlaySettings.lan
        if !compensated {
            settings.sampling.maxShuffleFailures = 1  // plain Cyclon: drop a silent partner at once
            settings.sampling.retriesPerRound = 0
        }
        let world = OverlayWorld(settings: settings)
        let clean = LinkModel(latency: .milliseconds(2), jitter: .milliseconds(3))
        var lossy = clean
        lossy.loss = Self.loss
        var policy = LinkPolicy(default: clean, groups: (0..<Self.nodeCount).map { $0 >= Self.nodeCount - Self.lossyCount ? 1 : 0 })
        policy.setModel(lossy, betweenGroups: 0, and: 1)
        policy.setModel(lossy, betweenGroups: 1, and: 1)
        let sim = world.simulator(nodeCount: Self.nodeCount, seed: seed, links: policy)
        for i in 0..<Self.nodeCount { sim.start(i, at: .zero + .milliseconds(10) * i) }
        sim.run(until: .zero + .seconds(104))
        var degree: [PeerID: Int] = [:]
        for i in 0..<Self.nodeCount {
            for e in sim.node(i)!.sampler.view { degree[e.peer, default: 0] += 1 }
        }
        func mean(_ range: Range<Int>) -> Double {
            Double(range.reduce(0) { $0 + degree[world.identity($1).peerID, default: 0] }) / Double(range.count)
        }
        let lossyMean = mean((Self.nodeCount - Self.lossyCount)..<Self.nodeCount)
        let othersMean = mean(0..<(Self.nodeCount - Self.lossyCount))
        return (lossyMean / othersMean, lossyMean, othersMean)
    }

    @Test func overlay_peersBehindLossyLinks_keepTheirInDegree() {
        let plain = inDegreeRatio(compensated: false, seed: 8)
        let compensated = inDegreeRatio(compensated: true, seed: 8)
        print("30% loss on 10% of nodes: in-degree lossy/others plain Cyclon \(plain.lossy)/\(plain.others) = \(plain.ratio), compensated \(compensated.lossy)/\(compensated.others) = \(compensated.ratio)")
        #expect(compensated.ratio > plain.ratio)
        #expect(compensated.ratio >= 0.8)
    }
}

/// After a partition long enough for each side to declare the other dead, the overlay heals:
/// reconnect attempts to departed peers make each side refute the other's tombstones and mix
/// the other side back into the views.
struct OverlayPartitionTests {
    @Test func overlay_afterPartitionHeals_viewsMergeIntoOneOverlay() {
        let n = 300
        let world = OverlayWorld()
        let sim = world.simulator(nodeCount: n, seed: 9, links: LinkPolicy(default: LinkModel(latency: .milliseconds(2), jitter: .milliseconds(3))))
        final class Count: @unchecked Sendable { var deaths = 0 }
        let count = Count()
        sim.onEvent = { _, event, _ in if case .membership(.dead) = event { count.deaths += 1 } }
        for i in 0..<n { sim.start(i, at: .zero + .milliseconds(10) * i) }
        let split = Instant.zero + .seconds(30), heal = split + .seconds(60)
        sim.partition(sides: (0..<n).map { $0 % 2 }, from: split, until: heal)
        sim.run(until: heal)
        let during = OverlayShape(sim)
        let side = Dictionary(uniqueKeysWithValues: (0..<n).map { (world.identity($0).peerID, $0 % 2) })
        let crossLinks = (0..<n).reduce(0) { acc, i in acc + sim.node(i)!.sampler.view.filter { side[$0.peer] != i % 2 }.count }
        var healedAfter: Duration? = nil
        sim.run(until: heal + .seconds(120), every: .seconds(5)) { sim in
            let shape = OverlayShape(sim)
            if shape.stronglyConnected, healedAfter == nil { healedAfter = sim.now - heal }
            return healedAfter == nil
        }
        sim.run(until: heal + .seconds(120))
        let after = OverlayShape(sim)
        print("partition: deaths reported \(count.deaths), connected during \(during.stronglyConnected) (cross-side view entries \(crossLinks)); after heal connected after \(String(describing: healedAfter)), in-degree mean \(after.mean) max \(after.maximum)")
        #expect(!during.stronglyConnected)
        #expect(after.stronglyConnected)
        #expect(Double(after.maximum) <= 3 * after.mean)
    }
}

/// The same protocol with every message through the library's `SecureWire`, as the runtime
/// sends it: datagrams sealed for their recipient and opened by it, transfers signed and
/// checked against the session's peer.
struct OverlayWireTests {
    @Test func overlay_inSecureWireMode_formsAndEveryMessageOpens() throws {
        let world = OverlayWorld()
        let sim = world.simulator(nodeCount: 200, seed: 10, links: LinkPolicy(default: LinkModel(latency: .milliseconds(2), jitter: .milliseconds(3))))
        let key = try NetworkKey(bytes: [UInt8](repeating: 9, count: NetworkKey.length))
        sim.wire = SecureWireMode.gossip(sim, wires: try SecureWireMode.wires(identities: (0..<200).map(world.identity), keyring: NetworkKeyring(current: key)))
        for i in 0..<200 { sim.start(i, at: .zero + .milliseconds(10) * i) }
        sim.run(until: .zero + .seconds(40))
        let shape = OverlayShape(sim)
        print("secure wire mode: 200 nodes, connected \(shape.stronglyConnected), in-degree mean \(shape.mean) max \(shape.maximum), \(sim.counters.sent) messages, \(sim.counters.bytesSent / max(1, sim.counters.sent)) bytes each on average, rejected \(sim.counters.dropped(.rejected))")
        #expect(shape.stronglyConnected)
        #expect(shape.live == 200)
        #expect(sim.counters.dropped(.rejected) == 0)
        #expect(sim.counters.delivered > 0)
    }

    @Test func averaging_inSecureWireModeUnderLoss_convergesToTheExactWeightedMean() throws {
        let n = 40
        let world = OverlayWorld(settings: .local)
        let vectors = (0..<n).map { i in [Float(i), Float(i % 7) - 3, 1] }
        let samples = (0..<n).map { Double(1 + $0 % 5) }
        world.averaging = { (vectors[$0], samples[$0]) }
        let sim = world.simulator(nodeCount: n, seed: 12, links: LinkPolicy(default: LinkModel(loss: 0.1, latency: .milliseconds(2), jitter: .milliseconds(3))))
        let key = try NetworkKey(bytes: [UInt8](repeating: 9, count: NetworkKey.length))
        sim.wire = SecureWireMode.gossip(sim, wires: try SecureWireMode.wires(identities: (0..<n).map(world.identity), keyring: NetworkKeyring(current: key)))
        for i in 0..<n { sim.start(i, at: .zero + .milliseconds(10) * i) }
        // The mean from the inputs, not from the averagers.
        let mean = (0..<3).map { k in zip(vectors, samples).reduce(0.0) { $0 + Double($1.0[k]) * $1.1 } / samples.reduce(0, +) }
        var worst = Double.infinity
        sim.run(until: .zero + .seconds(120), every: .seconds(5)) { sim in
            worst = (0..<n).reduce(0.0) { w, i in
                guard let estimate = sim.node(i)?.averager?.estimate else { return .infinity }
                return max(w, (0..<3).reduce(0.0) { max($0, abs(estimate[$1] - mean[$1]) / abs(mean[$1] == 0 ? 1 : mean[$1])) })
            }
            return worst > 1e-6
        }
        let applied = (0..<n).reduce(0) { $0 + (sim.node($1)?.averager?.counters.applied ?? 0) }
        print("secure wire averaging: \(n) nodes, 10% loss, worst relative error \(worst), \(applied) transfers applied, rejected \(sim.counters.dropped(.rejected))")
        #expect(worst <= 1e-6)
        #expect(applied > 10 * n)
        #expect(sim.counters.dropped(.rejected) == 0)
    }
}

/// Memory and traffic per node do not grow with the network: the same measurements at 250
/// and 2,000 nodes, in a steady window after joining.
struct OverlayScalingTests {
    func measure(nodes: Int, seed: UInt64) -> OverlayCost {
        let world = OverlayWorld()
        let sim = world.simulator(nodeCount: nodes, seed: seed, links: LinkPolicy(default: LinkModel(latency: .milliseconds(2), jitter: .milliseconds(3))))
        for i in 0..<nodes { sim.start(i, at: .zero + .milliseconds(5) * i) }
        return OverlayCost.measure(sim, from: .zero + .milliseconds(5) * nodes + .seconds(30), window: .seconds(20))
    }

    @Test func overlay_perNodeTrafficAndState_doNotGrowWithTheNetwork() {
        let small = measure(nodes: 250, seed: 11)
        let large = measure(nodes: 2_000, seed: 11)
        print("per node: 250 nodes \(small), 2000 nodes \(large)")
        #expect(large.messagesPerNodeSecond <= small.messagesPerNodeSecond * 1.2)
        #expect(large.bytesPerNodeSecond <= small.bytesPerNodeSecond * 1.2)
        #expect(large.maxView <= PeerSampler.Settings().viewSize)
        #expect(large.maxWatched <= small.maxWatched + PeerSampler.Settings().viewSize)
    }
}

/// One seed, one run: the trace hash of a churning, lossy overlay is printed so two separate
/// processes (different hash seeds) can be compared; within a process two runs must agree.
struct OverlayDeterminismTests {
    func run(seed: UInt64) -> String {
        let world = OverlayWorld()
        let sim = world.simulator(nodeCount: 150, seed: seed, links: LinkPolicy(default: LinkModel(loss: 0.05, latency: .milliseconds(2), jitter: .milliseconds(3))))
        for i in 0..<150 { sim.start(i, at: .zero + .milliseconds(10) * i) }
        for i in stride(from: 10, to: 150, by: 25) {
            world.crash(sim, i, at: .zero + .seconds(20))
            sim.start(i, at: .zero + .seconds(30))
        }
        sim.run(until: .zero + .seconds(60))
        return "\(sim.traceHash)"
    }

    @Test func overlay_sameSeed_sameTrace() {
        let a = run(seed: 12), b = run(seed: 12)
        print("overlay trace hash: \(a)")
        #expect(a == b)
        #expect(run(seed: 13) != a)
    }
}

/// A node cut off from everyone loses its whole view, re-bootstraps with exponential backoff
/// while cut off, and is back in the overlay soon after the cut heals.
struct OverlayIsolationTests {
    @Test func overlay_cutOffNode_rebootstrapsWithBackoffAndRejoins() {
        let n = 60, lonely = 37
        let world = OverlayWorld()
        let sim = world.simulator(nodeCount: n, seed: 14, links: LinkPolicy(default: LinkModel(latency: .milliseconds(2), jitter: .milliseconds(3))))
        final class Log: @unchecked Sendable { var attempts: [(Instant, Duration)] = []; var rejoined: Instant? = nil }
        let log = Log()
        sim.onEvent = { node, event, at in
            guard node == lonely else { return }
            if case .discovery(.rebootstrapAttempt(_, _, let delay)) = event { log.attempts.append((at, delay)) }
            if case .discovery(.rebootstrapped) = event, at > Instant.zero + .seconds(20) { log.rejoined = at }
        }
        for i in 0..<n { sim.start(i, at: .zero + .milliseconds(10) * i) }
        let cut = Instant.zero + .seconds(20), heal = cut + .seconds(150)
        sim.partition(sides: (0..<n).map { $0 == lonely ? 1 : 0 }, from: cut, until: heal)
        sim.run(until: heal)
        let attemptsWhileCut = log.attempts.filter { $0.0 >= cut && $0.0 < heal }
        #expect(sim.node(lonely)!.sampler.count == 0, "every peer of the cut-off node was declared dead")
        #expect(attemptsWhileCut.count >= 4)
        let delays = attemptsWhileCut.map(\.1)
        // Each delay is 2^k s with ±25 % jitter, capped at 60 s (so at most 75 s).
        #expect(zip(delays, delays.dropFirst()).allSatisfy { $1 > $0 || $1 >= .seconds(45) }, "delays grow to the cap: \(delays)")
        #expect(delays.allSatisfy { $0 <= .seconds(75) })
        sim.run(until: heal + .seconds(90))
        let shape = OverlayShape(sim)
        let id = world.identity(lonely).peerID
        let pointing = (0..<n).filter { sim.node($0)!.sampler.contains(id) }.count
        print("cut-off node: \(attemptsWhileCut.count) attempts while cut, delays \(delays.map { Int($0.seconds) }) s; rejoined \(log.rejoined.map { "\(($0 - heal).seconds) s after the heal" } ?? "never"), in \(pointing) views, overlay connected \(shape.stronglyConnected)")
        #expect(log.rejoined != nil)
        #expect(shape.stronglyConnected)
        #expect(pointing >= 5)
    }
}
