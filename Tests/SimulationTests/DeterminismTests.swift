import Testing
import Gossip
@testable import Simulation

private func run(seed: UInt64) -> (hash: TraceHash, counters: NetworkCounters, estimates: [[Double]]) {
    let network = UnevenNetwork(seed: 9)
    let sim = network.simulator(recovery: .acknowledged, seed: seed)
    sim.partition(sides: (0..<UnevenNetwork.nodeCount).map { $0 % 2 }, from: Instant(nanoseconds: 2_000_000_000),
                  until: Instant(nanoseconds: 4_000_000_000))
    sim.crash(5, at: Instant(nanoseconds: 3_000_000_000), keepState: false)
    sim.start(5, at: Instant(nanoseconds: 5_000_000_000))
    sim.run(until: Instant(nanoseconds: 8_000_000_000))
    let estimates = (0..<UnevenNetwork.nodeCount).map { sim.node($0)?.estimate ?? [] }
    return (sim.traceHash, sim.counters, estimates)
}

@Test func simulator_sameSeedTwice_givesTheIdenticalTraceAndState() {
    let a = run(seed: 77)
    let b = run(seed: 77)
    #expect(a.hash == b.hash)
    #expect(a.counters == b.counters)
    #expect(a.estimates == b.estimates)
    #expect(a.counters.delivered > 10_000)
}

@Test func simulator_anotherSeed_givesAnotherTrace() {
    let a = run(seed: 77)
    let c = run(seed: 78)
    #expect(a.hash != c.hash)
    #expect(a.estimates != c.estimates)
}
