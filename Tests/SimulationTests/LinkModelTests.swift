import Crypto
import Testing
import Gossip
@testable import Simulation

/// A probe message of a chosen size, stamped with its send time.
struct Probe: Sendable, WireSized, TraceIdentified {
    var sequence: Int
    var size: Int
    var sentAt: Int64
    var wireSize: Int { size }
    var traceWord: UInt64 { traceMix(UInt64(sequence)) }
}

/// Node 0 sends `count` probes to node 1, one every `interval`; node 1 records them.
struct Prober: ProtocolNode {
    enum Timer: Hashable, Sendable { case send }
    typealias Message = Probe
    typealias Event = Int

    let index: Int
    let count: Int
    let size: Int
    let interval: Duration
    var peerID: PeerID { SimAddress.peer(index) }
    var sent = 0
    /// (sequence, one-way delay in ns) of every probe received, in arrival order.
    var received: [(sequence: Int, delay: Int64)] = []

    init(index: Int, count: Int, size: Int = 100, interval: Duration = .milliseconds(1)) {
        self.index = index
        self.count = count
        self.size = size
        self.interval = interval
    }

    mutating func onStart(at now: Instant) -> [Action] {
        index == 0 ? [.schedule(.send, at: now)] : []
    }

    mutating func onTimer(_ timer: Timer, at now: Instant) -> [Action] {
        var actions: [Action] = []
        // A zero interval sends the whole burst at once, to exercise queueing.
        repeat {
            actions.append(.send(Probe(sequence: sent, size: size, sentAt: now.nanoseconds), to: SimAddress.endpoint(1), via: .datagram(to: SimAddress.peer(1))))
            sent += 1
        } while interval == .zero && sent < count
        if sent < count { actions.append(.schedule(.send, at: now + interval)) }
        return actions
    }

    mutating func onMessage(_ message: Probe, from sender: Sender, at now: Instant) -> [Action] {
        received.append((message.sequence, now.nanoseconds - message.sentAt))
        return []
    }
}

private func probe(_ model: LinkModel, count: Int, size: Int = 100, interval: Duration = .milliseconds(1), seed: UInt64 = 5) -> Simulator<Prober> {
    let sim = Simulator<Prober>(nodeCount: 2, seed: seed, links: LinkPolicy(default: model)) { context in
        Prober(index: context.index, count: count, size: size, interval: interval)
    }
    sim.startAll()
    sim.run(until: Instant(nanoseconds: Int64(count) * interval.nanosecondsClamped + 10_000_000_000))
    return sim
}

@Test func gilbertElliott_longRun_lossRateMatchesStationaryFormulaAndComesInBursts() {
    let chain = GilbertElliott(goodToBad: 0.05, badToGood: 0.25, lossInGood: 0.01, lossInBad: 0.9)
    let count = 200_000
    let sim = probe(LinkModel(burst: chain), count: count)
    let received = Set(sim.node(1)?.received.map(\.sequence) ?? [])
    let lossRate = 1 - Double(received.count) / Double(count)
    #expect(abs(chain.longRunLoss - 0.158_333) < 1e-5)
    #expect(abs(lossRate - chain.longRunLoss) < 0.01)
    // Mean run of consecutive losses: bursts are longer than independent loss at the same rate gives.
    var runs = 0, lostTotal = 0, inRun = false
    for s in 0..<count {
        let lost = !received.contains(s)
        if lost { lostTotal += 1; if !inRun { runs += 1 } }
        inRun = lost
    }
    let meanRun = Double(lostTotal) / Double(max(runs, 1))
    let independentMeanRun = 1 / (1 - lossRate)
    #expect(meanRun > 2 * independentMeanRun)
}

@Test func independentLossAndDuplication_rates_matchTheModel() {
    let count = 100_000
    let sim = probe(LinkModel(loss: 0.2, duplication: 0.1), count: count)
    let received = sim.node(1)?.received ?? []
    let distinct = Set(received.map(\.sequence)).count
    #expect(abs(Double(distinct) / Double(count) - 0.8) < 0.01)
    #expect(abs(Double(received.count - distinct) / Double(distinct) - 0.1) < 0.01)
    #expect(sim.counters.dropped(.loss) == count - distinct)
}

@Test func jitter_delays_stayWithinLatencyPlusJitterAndReorderOnlyCloseMessages() {
    let model = LinkModel(latency: .milliseconds(10), jitter: .milliseconds(5))
    let close = probe(model, count: 10_000, interval: .milliseconds(1))
    let delays = close.node(1)?.received.map(\.delay) ?? []
    #expect(delays.count == 10_000)
    #expect(delays.allSatisfy { $0 >= 10_000_000 && $0 <= 15_000_000 })
    #expect((delays.min() ?? 0) < 10_250_000 && (delays.max() ?? 0) > 14_750_000)
    let sequences = close.node(1)?.received.map(\.sequence) ?? []
    #expect(zip(sequences, sequences.dropFirst()).contains { $0 > $1 })
    let spaced = probe(model, count: 2_000, interval: .milliseconds(6))
    let ordered = spaced.node(1)?.received.map(\.sequence) ?? []
    #expect(ordered == Array(0..<2_000))
}

@Test func bandwidth_burst_queuesBehindSerialisationDelay() {
    // 125 kB at 1 MB/s takes 125 ms to leave; a burst of four queues.
    let model = LinkModel(latency: .milliseconds(10), bandwidth: 1_000_000)
    let sim = probe(model, count: 4, size: 125_000, interval: .zero)
    let delays = sim.node(1)?.received.map(\.delay) ?? []
    #expect(delays == [135_000_000, 260_000_000, 385_000_000, 510_000_000])
}

@Test func explicitReorder_heldBackMessages_areOvertaken() {
    let sim = probe(LinkModel(latency: .milliseconds(1), reorder: 0.2, reorderDelay: .milliseconds(5)), count: 5_000)
    let sequences = sim.node(1)?.received.map(\.sequence) ?? []
    let inversions = zip(sequences, sequences.dropFirst()).filter { $0 > $1 }.count
    #expect(sequences.count == 5_000)
    #expect(inversions > 500)
}

@Test func exponentialJitter_delays_haveTheMeanAndALongTail() {
    var model = LinkModel(latency: .milliseconds(10), jitter: .milliseconds(5))
    model.jitterShape = .exponential
    let run = probe(model, count: 10_000, interval: .milliseconds(1))
    let extra = (run.node(1)?.received.map(\.delay) ?? []).map { Double($0 - 10_000_000) / 1e6 }
    #expect(extra.count == 10_000 && extra.allSatisfy { $0 >= 0 && $0 <= 100 })
    let mean = extra.reduce(0, +) / Double(max(1, extra.count))
    #expect(abs(mean - 5) < 0.25, "mean extra delay \(mean) ms, expected 5")
    // An exponential law puts e^-3 ≈ 5 % beyond three means; a uniform one puts nothing beyond one.
    let beyond = Double(extra.filter { $0 > 15 }.count) / Double(max(1, extra.count))
    #expect(beyond > 0.03 && beyond < 0.07, "share beyond 15 ms: \(beyond)")
}
