import Testing
@testable import Gossip

/// A hand-driven network of averagers: messages wait in `wire` until a test delivers,
/// drops, duplicates or reorders them.
private struct Harness {
    typealias Message = PushSumAverager.Message
    var nodes: [PushSumAverager]
    var wire: [(from: Int, to: Int, message: Message)] = []
    var events: [PushSumAverager.Event] = []
    var now = Instant.zero
    let initialValue: [Double]
    let initialWeight: Double

    static func endpoint(_ i: Int) -> Endpoint { Endpoint(host: "n\(i)", port: 1) }

    init(vectors: [[Float]], weights: [Double], settings: PushSumAverager.Settings = .init()) {
        let n = vectors.count
        nodes = (0..<n).map { i in
            PushSumAverager(
                initial: vectors[i], sampleCount: weights[i],
                neighbours: (0..<n).filter { $0 != i }.map(Harness.endpoint),
                settings: settings, rng: SplitMix64(seed: UInt64(i + 1)))
        }
        initialValue = nodes.reduce(into: [Double](repeating: 0, count: vectors[0].count)) { sum, node in
            node.withValue { v, _ in for k in 0..<v.count { sum[k] += v[k] } }
        }
        initialWeight = weights.reduce(0, +)
    }

    func index(_ e: Endpoint) -> Int { nodes.indices.first { Self.endpoint($0) == e } ?? -1 }

    mutating func apply(_ actions: [NodeAction<Message, PushSumAverager.Timer, PushSumAverager.Event>], from i: Int) {
        for action in actions {
            switch action {
            case .send(let m, let to, _): wire.append((i, index(to), m))
            case .report(let e): events.append(e)
            case .schedule, .cancel: break
            }
        }
    }

    mutating func timer(_ timer: PushSumAverager.Timer, _ i: Int) {
        now = now + .milliseconds(1)
        let actions = nodes[i].onTimer(timer, at: now)
        apply(actions, from: i)
    }

    /// Delivers (and removes) the in-flight message at `position`; with `keep`, a copy stays (duplication).
    mutating func deliver(_ position: Int, keep: Bool = false) {
        let (from, to, message) = wire[position]
        if !keep { wire.remove(at: position) }
        now = now + .milliseconds(1)
        let actions = nodes[to].onMessage(message, from: Self.endpoint(from), at: now)
        apply(actions, from: to)
    }

    /// Σ values + Σ shares in flight not yet applied by their receiver, per element, and the same for weights.
    func mass() -> (value: [Double], weight: Double) {
        var value = [Double](repeating: 0, count: initialValue.count)
        var weight = 0.0
        for (i, node) in nodes.enumerated() {
            node.withValue { v, w in
                for k in 0..<v.count { value[k] += v[k] }
                weight += w
            }
            for (to, t) in node.pendingTransfers
            where !nodes[index(to)].hasApplied(from: Self.endpoint(i), epoch: t.epoch, sequence: t.sequence) {
                guard let share = try? node.shareMass(t) else { continue }
                for k in 0..<share.count { value[k] += share[k] }
                weight += t.weight
            }
        }
        return (value, weight)
    }

    func conserved(tolerance: Double = 1e-12) -> Bool {
        let (value, weight) = mass()
        let scale = initialValue.reduce(0) { max($0, abs($1)) }
        return abs(weight - initialWeight) <= tolerance * initialWeight
            && zip(value, initialValue).allSatisfy { abs($0 - $1) <= tolerance * scale }
    }
}

private let vectors: [[Float]] = [[1, 10, -3], [4, 0, 2.5], [7, -5, 1], [2, 2, 2]]
private let weights: [Double] = [1, 3, 100, 7]

@Test func pushSum_lostTransfer_isRetransmittedAndAppliedOnce() {
    var h = Harness(vectors: Array(vectors.prefix(2)), weights: Array(weights.prefix(2)))
    h.timer(.tick, 0)
    #expect(h.wire.count == 1)
    h.wire.removeAll()  // lost
    #expect(h.conserved())
    #expect(h.nodes[0].pendingTransfers.count == 1)
    h.timer(.retransmit, 0)
    #expect(h.wire.count == 1)
    h.deliver(0)  // applied, ack sent
    #expect(h.nodes[1].counters.applied == 1)
    h.deliver(0)  // ack
    #expect(h.nodes[0].pendingTransfers.isEmpty)
    #expect(h.nodes[0].counters.acked == 1)
    #expect(h.conserved())
}

@Test func pushSum_duplicatedTransfer_isAppliedOnceAndAlwaysAcked() {
    var h = Harness(vectors: Array(vectors.prefix(2)), weights: Array(weights.prefix(2)))
    h.timer(.tick, 0)
    h.deliver(0, keep: true)
    h.deliver(0)
    #expect(h.nodes[1].counters.applied == 1)
    #expect(h.nodes[1].counters.duplicates == 1)
    #expect(h.wire.filter { if case .ack = $0.message { return true } else { return false } }.count == 2)
    #expect(h.conserved())
}

@Test func pushSum_lostAck_retransmissionIsAckedButNotReapplied() {
    var h = Harness(vectors: Array(vectors.prefix(2)), weights: Array(weights.prefix(2)))
    h.timer(.tick, 0)
    h.deliver(0)
    h.wire.removeAll()  // ack lost
    #expect(h.conserved())
    h.timer(.retransmit, 0)
    h.deliver(0)
    h.deliver(0)
    #expect(h.nodes[1].counters.applied == 1)
    #expect(h.nodes[0].pendingTransfers.isEmpty)
    #expect(h.conserved())
}

@Test func pushSum_reorderedTransfers_areEachAppliedOnce() {
    var settings = PushSumAverager.Settings()
    settings.maxInFlight = 2
    var h = Harness(vectors: Array(vectors.prefix(2)), weights: Array(weights.prefix(2)), settings: settings)
    h.timer(.tick, 0)
    h.timer(.tick, 0)
    #expect(h.wire.count == 2)
    h.deliver(1)  // the second transfer overtakes the first; wire: [first, ack of second]
    h.deliver(1)  // ack of the second
    h.deliver(0, keep: true)  // the first transfer, late; wire: [first, ack of first]
    h.deliver(0)  // and a duplicate of it
    #expect(h.nodes[1].counters.applied == 2)
    #expect(h.nodes[1].counters.duplicates == 1)
    #expect(h.conserved())
}

@Test func pushSum_tickWithTransferInFlight_skipsSending() {
    var h = Harness(vectors: Array(vectors.prefix(2)), weights: Array(weights.prefix(2)))
    h.timer(.tick, 0)
    h.timer(.tick, 0)
    #expect(h.wire.count == 1)
    #expect(h.nodes[0].counters.skippedTicks == 1)
}

@Test func pushSum_peerGone_reclaimsTheShareInFlight() {
    var h = Harness(vectors: Array(vectors.prefix(2)), weights: Array(weights.prefix(2)))
    let before = h.nodes[0].weight
    h.timer(.tick, 0)
    h.wire.removeAll()
    #expect(h.nodes[0].weight == before / 2)
    let actions = h.nodes[0].onPeerGone(Harness.endpoint(1), at: h.now)
    h.apply(actions, from: 0)
    #expect(h.nodes[0].weight == before)
    #expect(h.nodes[0].pendingTransfers.isEmpty)
    #expect(h.nodes[0].neighbours.isEmpty)
    #expect(h.events.contains(.transferReclaimed(from: Harness.endpoint(1), sequence: 1)))
    #expect(h.conserved(tolerance: 1e-15))
}

@Test func plainPushSum_lostTransfer_losesItsMass() {
    var settings = PushSumAverager.Settings()
    settings.lossRecovery = .none
    var h = Harness(vectors: Array(vectors.prefix(2)), weights: Array(weights.prefix(2)), settings: settings)
    h.timer(.tick, 0)
    #expect(h.nodes[0].pendingTransfers.isEmpty)
    h.wire.removeAll()
    #expect(!h.conserved())
    #expect(abs(h.mass().weight - (h.initialWeight - weights[0] / 2)) < 1e-12)
}

@Test func pushSum_nonFiniteOverflowingOrWrongDimensionShare_isRejectedWithoutAck() {
    var h = Harness(vectors: Array(vectors.prefix(2)), weights: Array(weights.prefix(2)))
    let bad: [PushSumAverager.Transfer] = [
        .init(epoch: 1, sequence: 1, weight: 1, count: 3, codec: 0, payload: .floats([1, .nan, 2])),
        .init(epoch: 1, sequence: 2, weight: 1, count: 3, codec: 0, payload: .floats([1, .infinity, 2])),
        .init(epoch: 1, sequence: 3, weight: 1, count: 2, codec: 0, payload: .floats([1, 2])),
        .init(epoch: 1, sequence: 4, weight: -1, count: 3, codec: 0, payload: .floats([1, 2, 3])),
        .init(epoch: 1, sequence: 5, weight: 1, count: 3, codec: 9, payload: .floats([1, 2, 3])),
        // Finite floats whose mass (times the weight's power-of-two scale) overflows a Double.
        .init(epoch: 1, sequence: 6, weight: 0x1p1000, count: 3, codec: 0, payload: .floats([1, .greatestFiniteMagnitude, 2])),
    ]
    for t in bad { h.wire.append((0, 1, .transfer(t))) }
    while !h.wire.isEmpty { h.deliver(0) }
    #expect(h.nodes[1].counters.rejected == bad.count)
    #expect(h.nodes[1].counters.applied == 0)
    #expect(h.wire.isEmpty)
    #expect(h.conserved(tolerance: 0))
}

@Test func pushSum_gracefulLeave_handsEveryBitOfMassToAPeer() {
    var h = Harness(vectors: Array(vectors.prefix(2)), weights: Array(weights.prefix(2)))
    let actions = h.nodes[0].beginLeave(at: h.now)
    h.apply(actions, from: 0)
    var steps = 0
    while !h.wire.isEmpty, steps < 20 {
        h.deliver(0)
        steps += 1
    }
    #expect(h.events.contains(.handOffComplete))
    h.nodes[0].withValue { v, w in
        #expect(w == 0)
        #expect(v.allSatisfy { $0 == 0 })
    }
    #expect(h.conserved(tolerance: 1e-15))
}

@Test func pushSum_randomLossDuplicationReordering_conservesMassAtEveryStepAndConverges() {
    var h = Harness(vectors: vectors, weights: weights)
    var rng = SplitMix64(seed: 2024)
    for _ in 0..<4000 {
        let n = h.nodes.count
        switch rng.next(upperBound: UInt64(10)) {
        case 0, 1: h.timer(.tick, Int(rng.next(upperBound: UInt64(n))))
        case 2: h.timer(.retransmit, Int(rng.next(upperBound: UInt64(n))))
        case 3 where !h.wire.isEmpty: h.wire.remove(at: Int(rng.next(upperBound: UInt64(h.wire.count))))  // loss
        case 4 where !h.wire.isEmpty: h.deliver(Int(rng.next(upperBound: UInt64(h.wire.count))), keep: true)  // duplicate
        default: if !h.wire.isEmpty { h.deliver(Int(rng.next(upperBound: UInt64(h.wire.count)))) }  // any order
        }
        #expect(h.conserved(), "mass changed")
    }
    // Drain without faults, then keep mixing until every estimate is the weighted mean.
    for _ in 0..<3000 {
        for i in 0..<h.nodes.count { h.timer(.retransmit, i) }
        while !h.wire.isEmpty { h.deliver(0) }
        for i in 0..<h.nodes.count { h.timer(.tick, i) }
        while !h.wire.isEmpty { h.deliver(0) }
    }
    let mean = (0..<3).map { k in h.initialValue[k] / h.initialWeight }
    for node in h.nodes {
        let estimate = node.estimate ?? []
        #expect(estimate.count == 3)
        for k in 0..<min(3, estimate.count) { #expect(abs(estimate[k] - mean[k]) <= 1e-6 * abs(mean[k]) + 1e-9) }
    }
    #expect(h.conserved())
}

@Test func pushSum_senderTableFull_refusesNewSenderUntilTheOldestHasBeenSilentLongEnough() {
    var settings = PushSumAverager.Settings()
    settings.maxTrackedSenders = 2
    settings.senderRetention = .seconds(10)
    var receiver = PushSumAverager(initial: [0], sampleCount: 1, settings: settings, rng: SplitMix64(seed: 1))
    func transfer(_ epoch: UInt64) -> PushSumAverager.Message {
        .transfer(.init(epoch: epoch, sequence: 1, weight: 1, count: 1, codec: 0, payload: .floats([1])))
    }
    let a = Endpoint(host: "a", port: 1), b = Endpoint(host: "b", port: 1), c = Endpoint(host: "c", port: 1)
    _ = receiver.onMessage(transfer(1), from: a, at: .zero)
    _ = receiver.onMessage(transfer(1), from: b, at: .zero + .seconds(1))
    let refused = receiver.onMessage(transfer(1), from: c, at: .zero + .seconds(5))
    #expect(refused.isEmpty)
    #expect(receiver.counters.refused == 1 && receiver.weight == 3)
    let accepted = receiver.onMessage(transfer(1), from: c, at: .zero + .seconds(10))
    #expect(accepted.contains { if case .send(.ack, _, _) = $0 { return true } else { return false } })
    #expect(receiver.weight == 4)
    #expect(!receiver.hasApplied(from: a, epoch: 1, sequence: 1))
    #expect(receiver.hasApplied(from: b, epoch: 1, sequence: 1))
}

@Test func pushSum_restartedSenderWithNewEpoch_isNotMistakenForDuplicates() {
    var receiver = PushSumAverager(initial: [0], sampleCount: 1, rng: SplitMix64(seed: 1))
    let a = Endpoint(host: "a", port: 1)
    for epoch: UInt64 in [7, 8] {
        let t = PushSumAverager.Transfer(epoch: epoch, sequence: 1, weight: 1, count: 1, codec: 0, payload: .floats([2]))
        _ = receiver.onMessage(.transfer(t), from: a, at: .zero)
    }
    #expect(receiver.counters.applied == 2)
    #expect(receiver.counters.duplicates == 0)
}
