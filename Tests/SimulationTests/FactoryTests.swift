import Crypto
import Gossip
import Testing
@testable import Simulation

struct RefusedByTest: Error {}

/// A node whose factory throws stays down and is reported; the others run.
@Test func simulator_nodeWhoseFactoryThrows_staysDownAndIsReported() {
    let sim = Simulator<PushSumAverager>(nodeCount: 3, seed: 1) { context in
        guard context.index != 1 else { throw RefusedByTest() }
        return PushSumAverager(peer: SimAddress.peer(context.index), initial: [1], sampleCount: 1,
                               neighbours: [], rng: SplitMix64(seed: context.seed))
    }
    sim.startAll()
    sim.run(until: Instant(nanoseconds: 1_000_000_000))
    #expect(sim.isUp(0) && !sim.isUp(1) && sim.isUp(2))
    #expect(sim.node(1) == nil)
    #expect(sim.refusedNodes.map(\.index) == [1] && sim.refusedNodes.first?.error is RefusedByTest)
}
