import Crypto
import Gossip
import Testing
@testable import Simulation

/// A node that asks for one piece of work when it starts and reports its result.
private struct Worker: ProtocolNode {
    enum Timer: Hashable, Sendable { case go }
    enum Event: Sendable, Equatable { case done(id: UInt64, value: Int) }
    typealias Message = PushSumAverager.Message

    let peerID: PeerID
    let cost: Double

    mutating func onStart(at now: Instant) -> [Action] {
        [.compute(ComputeRequest(id: 7, cost: cost) { 6 * 7 })]
    }

    mutating func onMessage(_ message: Message, from sender: Sender, at now: Instant) -> [Action] { [] }
    mutating func onTimer(_ timer: Timer, at now: Instant) -> [Action] { [] }

    mutating func onComputed(_ id: UInt64, result: any Sendable, at now: Instant) -> [Action] {
        [.report(.done(id: id, value: result as? Int ?? -1))]
    }
}

/// Work that takes time in virtual time: each node's rate decides when its result comes back.
@Suite struct ComputeTests {
    @Test func work_takesCostOverTheNodesRate_andACrashDiscardsIt() {
        let sim = Simulator<Worker>(nodeCount: 3, seed: 1) { context in Worker(peerID: SimAddress.peer(context.index), cost: 500) }
        // A strong device, a weak one, and one that crashes before its work is done.
        let rates = [1_000.0, 100.0, 1_000.0]
        sim.computeRate = { rates[$0] }
        var done: [(node: Int, event: Worker.Event, at: Instant)] = []
        sim.onEvent = { node, event, at in done.append((node, event, at)) }
        sim.startAll()
        sim.crash(2, at: Instant(nanoseconds: 200_000_000), keepState: true)
        sim.start(2, at: Instant(nanoseconds: 300_000_000))
        sim.run(until: Instant(nanoseconds: 10_000_000_000))
        let byNode = Dictionary(grouping: done, by: \.node)
        #expect(byNode[0]?.map(\.event) == [.done(id: 7, value: 42)])
        #expect(byNode[0]?.first?.at == Instant(nanoseconds: 500_000_000), "500 units at 1,000 a second")
        #expect(byNode[1]?.first?.at == Instant(nanoseconds: 5_000_000_000), "500 units at 100 a second")
        // Node 2's first request died with the crash; the restart asked again at 0.3 s.
        #expect(byNode[2]?.map(\.at) == [Instant(nanoseconds: 800_000_000)])
    }
}
