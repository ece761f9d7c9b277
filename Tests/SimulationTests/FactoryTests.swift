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

/// A destination is found from the digits of `sim-i`; anything not spelled exactly like a node's
/// endpoint (another port or host, leading zeros, an index past the last node) is no node.
@Test func simulator_indexOfEndpoint_readsTheDigits_andRefusesOtherSpellings() {
    for i in [0, 7, 10, 99, 12_345, 999_999] { #expect(SimAddress.index(of: SimAddress.endpoint(i)) == i) }
    for host in ["sim-", "sim", "sim-1a", "sin-1", "sim--1", "sim-99999999999999999999", "127.0.0.1", "sim-011", "sim-00", "sim-0x1", "sim-1 "] {
        #expect(SimAddress.index(of: Endpoint(host: host, port: SimAddress.port)) == nil, "\(host)")
    }
    #expect(SimAddress.index(of: Endpoint(host: "sim-1", port: SimAddress.port + 1)) == nil)
    let sim = Simulator<PushSumAverager>(nodeCount: 12, seed: 1) { context in
        PushSumAverager(peer: SimAddress.peer(context.index), initial: [1], sampleCount: 1, rng: SplitMix64(seed: context.seed))
    }
    #expect(sim.index(of: SimAddress.endpoint(11)) == 11)
    #expect(sim.index(of: SimAddress.endpoint(12)) == nil)
    #expect(sim.index(of: Endpoint(host: "sim-011", port: SimAddress.port)) == nil)
    #expect(sim.index(of: Endpoint(host: "sim-00", port: SimAddress.port)) == nil)
}
