import Crypto
import Foundation
import Gossip
import Testing
@testable import Simulation

/// Issue 3, test 2: crashed nodes are declared dead by every watcher within the configured
/// bound; with 10 % random loss no live node is declared dead in 10 minutes.
struct FailureTests {
    /// Nodes start 10 ms apart through node 0, then run `warmUp` before faults are injected.
    func network(_ world: OverlayWorld, nodes: Int, seed: UInt64, loss: Double) -> Simulator<GossipNode> {
        let link = LinkModel(loss: loss, latency: .milliseconds(2), jitter: .milliseconds(3))
        let sim = world.simulator(nodeCount: nodes, seed: seed, links: LinkPolicy(default: link))
        for i in 0..<nodes { sim.start(i, at: .zero + .milliseconds(10) * i) }
        return sim
    }

    struct Watch {
        var crashed: Int
        var at: Instant
        /// Watcher index → the detection bound it must meet.
        var watchers: [Int: Duration]
    }

    /// The bound docs/membership.md promises for the LAN profile in a network of `n` nodes,
    /// from the documented values, not the code's: the longest suspicion,
    /// 6 × 4 × max(1, log10 n) × 1 s, plus 5 probe intervals of 1 s.
    static func documentedDetectionBound(nodes n: Int) -> Duration {
        .nanoseconds(Int64((6 * 4 * max(1, log10(Double(n))) * 1 + 5) * 1e9))
    }

    /// Crashes `victims` one after another, recording who watched each at its crash.
    func crashAndWatch(_ sim: Simulator<GossipNode>, _ world: OverlayWorld, victims: [Int], from start: Instant, spacing: Duration) -> [Watch] {
        var watches: [Watch] = []
        for (k, victim) in victims.enumerated() {
            let at = start + spacing * k
            sim.run(until: at)
            let id = world.identity(victim).peerID
            var watchers: [Int: Duration] = [:]
            for i in 0..<sim.nodeCount where i != victim && sim.isUp(i) && !victims.contains(i) {
                guard let node = sim.node(i), let m = node.membership.members[id], m.status != .dead else { continue }
                watchers[i] = Self.documentedDetectionBound(nodes: sim.nodeCount)
            }
            world.crash(sim, victim, at: at)
            watches.append(Watch(crashed: victim, at: at, watchers: watchers))
        }
        return watches
    }

    func deathTimes(_ sim: Simulator<GossipNode>) -> () -> [PeerID: [Int: Instant]] {
        final class Box: @unchecked Sendable { var deaths: [PeerID: [Int: Instant]] = [:] }
        let box = Box()
        sim.onEvent = { node, event, at in
            if case .membership(.dead(let peer)) = event, box.deaths[peer]?[node] == nil {
                box.deaths[peer, default: [:]][node] = at
            }
        }
        return { box.deaths }
    }

    @Test func failure_crashedNodes_declaredDeadByEveryWatcherWithinBound() {
        let world = OverlayWorld()
        let sim = network(world, nodes: 500, seed: 3, loss: 0)
        let deaths = deathTimes(sim)
        let victims = [17, 123, 250, 377, 499]
        let watches = crashAndWatch(sim, world, victims: victims, from: .zero + .seconds(40), spacing: .seconds(3))
        sim.run(until: sim.now + .seconds(90))
        var worst = Duration.zero, worstBound = Duration.zero, checked = 0
        for w in watches {
            let id = world.identity(w.crashed).peerID
            #expect(w.watchers.count >= 10, "node \(w.crashed) was watched by \(w.watchers.count)")
            for (watcher, bound) in w.watchers.sorted(by: { $0.key < $1.key }) {
                guard let at = deaths()[id]?[watcher] else {
                    Issue.record("watcher \(watcher) never declared node \(w.crashed) dead")
                    continue
                }
                let took = at - w.at
                checked += 1
                if took > worst { worst = took; worstBound = bound }
                #expect(took <= bound, "watcher \(watcher) took \(took) for node \(w.crashed), bound \(bound)")
            }
        }
        let live = (0..<sim.nodeCount).filter { !victims.contains($0) }.map { world.identity($0).peerID }
        let falseDeaths = live.reduce(0) { $0 + (deaths()[$1]?.count ?? 0) }
        print("crash detection: \(checked) watcher checks, slowest \(worst) (bound \(worstBound)), false deaths \(falseDeaths)")
        #expect(falseDeaths == 0)
    }

    @Test func failure_tenPercentLossForTenMinutes_noLiveNodeDeclaredDead() {
        let world = OverlayWorld()
        let sim = network(world, nodes: 200, seed: 4, loss: 0.1)
        let deaths = deathTimes(sim)
        final class Count: @unchecked Sendable { var suspicions = 0, refutations = 0 }
        let count = Count()
        let record = sim.onEvent
        sim.onEvent = { node, event, at in
            record?(node, event, at)
            if case .membership(.suspect) = event { count.suspicions += 1 }
            if case .membership(.refuted) = event { count.refutations += 1 }
        }
        // Two crashes in the middle show that detection still works under this loss.
        let victims = [50, 150]
        let watches = crashAndWatch(sim, world, victims: victims, from: .zero + .seconds(300), spacing: .seconds(5))
        sim.run(until: .zero + .seconds(600))
        let live = (0..<sim.nodeCount).filter { !victims.contains($0) }.map { world.identity($0).peerID }
        let falseDeaths = live.reduce(0) { $0 + (deaths()[$1]?.count ?? 0) }
        var missed = 0
        for w in watches {
            let id = world.identity(w.crashed).peerID
            #expect(w.watchers.count >= 10, "node \(w.crashed) was watched by \(w.watchers.count)")
            for (watcher, bound) in w.watchers {
                guard let at = deaths()[id]?[watcher], at - w.at <= bound else { missed += 1; continue }
            }
        }
        print("10% loss, 200 nodes, 600 s: suspicions \(count.suspicions), refutations \(count.refutations), false deaths \(falseDeaths), missed detections \(missed), messages \(sim.counters.sent)")
        #expect(falseDeaths == 0)
        #expect(missed == 0)
        #expect(count.refutations > 0)  // the loss did raise suspicions, and they were refuted
    }
}
