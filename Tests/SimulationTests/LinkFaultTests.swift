import Crypto
import Testing
import Gossip
@testable import Simulation

@Test func partition_crossSideMessages_areDroppedUntilHealed() {
    let sim = Simulator<Prober>(nodeCount: 2, seed: 1) { Prober(index: $0.index, count: 300, interval: .milliseconds(10)) }
    sim.partition(sides: [0, 1], from: Instant(nanoseconds: 1_000_000_000), until: Instant(nanoseconds: 2_000_000_000))
    sim.startAll()
    sim.run(until: Instant(nanoseconds: 10_000_000_000))
    let received = sim.node(1)?.received.map(\.sequence) ?? []
    #expect(sim.counters.dropped(.partition) == 100)
    #expect(received.count == 200)
    #expect(!received.contains(150) && received.contains(99) && received.contains(200))
}

@Test func crash_messagesToDownNode_areDroppedAndRestartWithoutStateIsANewIncarnation() {
    var incarnations: [Int] = []
    let sim = Simulator<Prober>(nodeCount: 2, seed: 1) { context in
        if context.index == 1 { incarnations.append(context.incarnation) }
        return Prober(index: context.index, count: 300, interval: .milliseconds(10))
    }
    sim.startAll()
    sim.crash(1, at: Instant(nanoseconds: 995_000_000), keepState: false)
    sim.start(1, at: Instant(nanoseconds: 1_995_000_000))
    sim.run(until: Instant(nanoseconds: 10_000_000_000))
    #expect(incarnations == [0, 1])
    #expect(sim.counters.dropped(.nodeDown) == 100)
    // The restarted node lost what it had received before the crash.
    // Probes sent from 990 ms to 1,980 ms arrive while it is down (10 ms latency).
    #expect(sim.node(1)?.received.first?.sequence == 199)
    #expect(sim.node(1)?.received.count == 101)
}

@Test func crash_keepingState_restartResumesWithTheOldState() {
    let sim = Simulator<Prober>(nodeCount: 2, seed: 1) { Prober(index: $0.index, count: 300, interval: .milliseconds(10)) }
    sim.startAll()
    sim.crash(1, at: Instant(nanoseconds: 995_000_000), keepState: true)
    sim.start(1, at: Instant(nanoseconds: 1_995_000_000))
    sim.run(until: Instant(nanoseconds: 10_000_000_000))
    #expect(sim.node(1)?.received.count == 200)
    #expect(sim.node(1)?.received.first?.sequence == 0)
}

@Test func topology_pairsWithoutLink_cannotTalk() {
    let sim = Simulator<Prober>(nodeCount: 3, seed: 1, topology: .undirected([(0, 2)])) {
        Prober(index: $0.index, count: 10)
    }
    sim.startAll()
    sim.run(until: Instant(nanoseconds: 1_000_000_000))
    #expect(sim.counters.dropped(.noLink) == 10)
    #expect(sim.node(1)?.received.isEmpty == true)
}

@Test func groupAndPairOverrides_chooseTheMostSpecificModel() {
    var policy = LinkPolicy(default: LinkModel(latency: .milliseconds(1)), groups: [0, 0, 1])
    policy.setModel(LinkModel(latency: .milliseconds(50)), betweenGroups: 0, and: 1)
    policy.setModel(LinkModel(latency: .milliseconds(7)), from: 2, to: 0)
    #expect(policy.model(from: 0, to: 1).latency == .milliseconds(1))
    #expect(policy.model(from: 0, to: 2).latency == .milliseconds(50))
    #expect(policy.model(from: 2, to: 1).latency == .milliseconds(50))
    #expect(policy.model(from: 2, to: 0).latency == .milliseconds(7))
}

@Test func timers_rescheduleReplacesAndCancelForgets() {
    struct Ticker: ProtocolNode {
        enum Timer: Hashable, Sendable { case a, b }
        typealias Message = Probe
        typealias Event = Int
        var fired: [(Timer, Int64)] = []
        var peerID: PeerID { SimAddress.peer(0) }
        mutating func onStart(at now: Instant) -> [Action] {
            [.schedule(.a, at: now + .seconds(1)), .schedule(.a, at: now + .seconds(2)),
             .schedule(.b, at: now + .seconds(1)), .cancel(.b)]
        }
        mutating func onTimer(_ timer: Timer, at now: Instant) -> [Action] {
            fired.append((timer, now.nanoseconds))
            return [.report(1)]
        }
        mutating func onMessage(_ message: Probe, from sender: Sender, at now: Instant) -> [Action] { [] }
    }
    var reports = 0
    let sim = Simulator<Ticker>(nodeCount: 1, seed: 1) { _ in Ticker() }
    sim.onEvent = { _, _, _ in reports += 1 }
    sim.startAll()
    sim.run(until: Instant(nanoseconds: 5_000_000_000))
    #expect(sim.node(0)?.fired.count == 1)
    #expect(sim.node(0)?.fired.first?.0 == .a && sim.node(0)?.fired.first?.1 == 2_000_000_000)
    #expect(reports == 1)
}
