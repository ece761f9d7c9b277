import Crypto
import Testing
@testable import Gossip

/// A synthetic identity for averaging tests (nothing is signed here).
func averagingTestPeer(_ i: Int) -> PeerID {
    var bytes = [UInt8](repeating: 0xA7, count: PeerID.length)
    withUnsafeBytes(of: UInt64(i).bigEndian) { bytes.replaceSubrange(24..<32, with: $0) }
    return PeerID(bytes: bytes)!
}

/// A hand-driven network of averagers: messages wait in `wire` until a test delivers,
/// drops, duplicates or reorders them. Delivery is by address, as a network's is: a node
/// that moves (``move(_:to:)``) is reached at its new endpoint.
private struct Harness {
    typealias Message = PushSumAverager.Message
    var nodes: [PushSumAverager]
    var endpoints: [Endpoint]
    var wire: [(from: Int, to: Int, message: Message)] = []
    var events: [PushSumAverager.Event] = []
    var now = Instant.zero
    /// When each node's timers are due, as its actions scheduled them.
    var due: [Int: [PushSumAverager.Timer: Instant]] = [:]
    /// Σ wᵢ·xᵢ and Σ wᵢ, from the test's inputs (not from the averagers).
    let initialValue: [Double]
    let initialWeight: Double

    static func endpoint(_ i: Int) -> Endpoint { Endpoint(host: "n\(i)", port: 1) }

    init(vectors: [[Float]], weights: [Double], settings: PushSumAverager.Settings = .init()) {
        let n = vectors.count
        endpoints = (0..<n).map(Self.endpoint)
        let addresses = (0..<n).map { PeerAddress(peer: averagingTestPeer($0), endpoint: Self.endpoint($0)) }
        nodes = (0..<n).map { i in
            PushSumAverager(
                peer: averagingTestPeer(i), initial: vectors[i], sampleCount: weights[i],
                neighbours: addresses.filter { $0.peer != averagingTestPeer(i) },
                settings: settings, rng: SplitMix64(seed: UInt64(i + 1)))
        }
        initialValue = (0..<vectors[0].count).map { k in zip(vectors, weights).reduce(0.0) { $0 + Double($1.0[k]) * $1.1 } }
        initialWeight = weights.reduce(0, +)
    }

    func index(_ e: Endpoint) -> Int { endpoints.firstIndex(of: e) ?? -1 }

    /// Node `i` now listens at `endpoint`; its peers learn the new address.
    mutating func move(_ i: Int, to endpoint: Endpoint) {
        endpoints[i] = endpoint
        for j in nodes.indices where j != i {
            nodes[j].neighbours = nodes[j].neighbours.map { $0.peer == averagingTestPeer(i) ? PeerAddress(peer: $0.peer, endpoint: endpoint) : $0 }
        }
    }

    mutating func apply(_ actions: [NodeAction<Message, PushSumAverager.Timer, PushSumAverager.Event>], from i: Int) {
        for action in actions {
            switch action {
            case .send(let m, let to, let via):
                // Sessions reach only the peer they name.
                let j = index(to)
                if case .session(let peer) = via, j >= 0, averagingTestPeer(j) != peer { continue }
                wire.append((i, j, m))
            case .report(let e): events.append(e)
            case .schedule(let t, let at): due[i, default: [:]][t] = at
            case .cancel(let t): due[i]?[t] = nil
            case .compute: Issue.record("the averager never asks for work")
            }
        }
    }

    /// One step of a lossy, reordering network chosen by `draw`: 0–2 a random node's tick, 3 its
    /// retransmission timer, 4 the loss of a random message in flight, above 4 the delivery of
    /// a random one.
    mutating func randomStep(_ draw: UInt64, rng: inout SplitMix64) {
        switch draw {
        case 0, 1, 2: timer(.tick, Int(rng.next(upperBound: UInt64(nodes.count))))
        case 3: timer(.retransmit, Int(rng.next(upperBound: UInt64(nodes.count))))
        case 4 where !wire.isEmpty: wire.remove(at: Int(rng.next(upperBound: UInt64(wire.count))))
        default: if !wire.isEmpty { deliver(Int(rng.next(upperBound: UInt64(wire.count)))) }
        }
    }

    /// Fires node `i`'s `timer`, advancing the clock to when it is due if that is later.
    mutating func timer(_ timer: PushSumAverager.Timer, _ i: Int) {
        now = max(now + .milliseconds(1), due[i]?[timer] ?? now)
        let actions = nodes[i].onTimer(timer, at: now)
        apply(actions, from: i)
    }

    /// Delivers (and removes) the in-flight message at `position`; with `keep`, a copy stays (duplication).
    mutating func deliver(_ position: Int, keep: Bool = false) {
        let (from, to, message) = wire[position]
        if !keep { wire.remove(at: position) }
        now = now + .milliseconds(1)
        let actions = nodes[to].onMessage(message, from: Sender(endpoint: endpoints[from], peer: averagingTestPeer(from)), at: now)
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
            for (to, t) in node.pendingTransfers {
                guard let j = nodes.firstIndex(where: { $0.peerID == to.peer }),
                      !nodes[j].hasApplied(from: averagingTestPeer(i), epoch: t.epoch, sequence: t.sequence),
                      let share = try? node.shareMass(t) else { continue }
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

    /// Retransmits and delivers until nothing is in flight, then checks, without the
    /// averagers' bookkeeping, that the nodes hold exactly the inputs' mass.
    mutating func drainedMassMatchesInputs(tolerance: Double = 1e-12) -> Bool {
        for _ in 0..<100 where nodes.contains(where: { !$0.pendingTransfers.isEmpty }) || !wire.isEmpty {
            for i in nodes.indices { timer(.retransmit, i) }
            while !wire.isEmpty { deliver(0) }
        }
        guard nodes.allSatisfy({ $0.pendingTransfers.isEmpty }) else { return false }
        var value = [Double](repeating: 0, count: initialValue.count)
        var weight = 0.0
        for node in nodes { node.withValue { v, w in for k in 0..<v.count { value[k] += v[k] }; weight += w } }
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
    let actions = h.nodes[0].onPeerGone(averagingTestPeer(1), at: h.now)
    h.apply(actions, from: 0)
    #expect(h.nodes[0].weight == before)
    #expect(h.nodes[0].pendingTransfers.isEmpty)
    #expect(h.nodes[0].neighbours.isEmpty)
    #expect(h.events.contains(.transferReclaimed(from: averagingTestPeer(1), sequence: 1)))
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
    var receiver = PushSumAverager(peer: averagingTestPeer(0), initial: [0], sampleCount: 1, settings: settings, rng: SplitMix64(seed: 1))
    func transfer(_ epoch: UInt64) -> PushSumAverager.Message {
        .transfer(.init(epoch: epoch, sequence: 1, weight: 1, count: 1, codec: 0, payload: .floats([1])))
    }
    let a = Sender(endpoint: Endpoint(host: "a", port: 1), peer: averagingTestPeer(1))
    let b = Sender(endpoint: Endpoint(host: "b", port: 1), peer: averagingTestPeer(2))
    let c = Sender(endpoint: Endpoint(host: "c", port: 1), peer: averagingTestPeer(3))
    _ = receiver.onMessage(transfer(1), from: a, at: .zero)
    _ = receiver.onMessage(transfer(1), from: b, at: .zero + .seconds(1))
    let refused = receiver.onMessage(transfer(1), from: c, at: .zero + .seconds(5))
    #expect(refused.isEmpty)
    #expect(receiver.counters.refused == 1 && receiver.weight == 3)
    let accepted = receiver.onMessage(transfer(1), from: c, at: .zero + .seconds(10))
    #expect(accepted.contains { if case .send(.ack, _, _) = $0 { return true } else { return false } })
    #expect(receiver.weight == 4)
    #expect(!receiver.hasApplied(from: averagingTestPeer(1), epoch: 1, sequence: 1))
    #expect(receiver.hasApplied(from: averagingTestPeer(2), epoch: 1, sequence: 1))
}

@Test func pushSum_restartedSenderWithNewEpoch_isNotMistakenForDuplicates() {
    var receiver = PushSumAverager(peer: averagingTestPeer(0), initial: [0], sampleCount: 1, rng: SplitMix64(seed: 1))
    let a = Sender(endpoint: Endpoint(host: "a", port: 1), peer: averagingTestPeer(1))
    for epoch: UInt64 in [7, 8] {
        let t = PushSumAverager.Transfer(epoch: epoch, sequence: 1, weight: 1, count: 1, codec: 0, payload: .floats([2]))
        _ = receiver.onMessage(.transfer(t), from: a, at: .zero)
    }
    #expect(receiver.counters.applied == 2)
    #expect(receiver.counters.duplicates == 0)
}

@Test func pushSum_senderChangesAddressMidTransfer_isAppliedOnceAndAcked() {
    // v1 keyed senders by address: a retransmission from a new address was a new sender and
    // its share was applied twice.
    var h = Harness(vectors: Array(vectors.prefix(2)), weights: Array(weights.prefix(2)))
    h.timer(.tick, 0)
    h.deliver(0)  // applied at node 1; its ack waits in the wire
    h.wire.removeAll()  // the ack is lost
    h.move(0, to: Endpoint(host: "n0-moved", port: 9))
    h.timer(.retransmit, 0)
    h.deliver(0)  // the retransmission, from the new address
    #expect(h.nodes[1].counters.applied == 1)
    #expect(h.nodes[1].counters.duplicates == 1)
    h.deliver(0)  // its ack reaches node 0 at the new address
    #expect(h.nodes[0].pendingTransfers.isEmpty)
    let drained = h.drainedMassMatchesInputs()
    #expect(drained, "after draining, the nodes hold exactly the inputs' mass")
}

@Test func pushSum_receiverChangesAddressMidTransfer_getsTheShareAtItsNewAddress() {
    var h = Harness(vectors: Array(vectors.prefix(2)), weights: Array(weights.prefix(2)))
    h.timer(.tick, 0)
    h.wire.removeAll()  // lost on the way to the old address
    h.move(1, to: Endpoint(host: "n1-moved", port: 9))
    h.timer(.retransmit, 0)
    #expect(h.wire.count == 1 && h.wire[0].to == 1)
    h.deliver(0)
    h.deliver(0)
    #expect(h.nodes[1].counters.applied == 1)
    #expect(h.nodes[0].pendingTransfers.isEmpty)
    let drained = h.drainedMassMatchesInputs()
    #expect(drained, "after draining, the nodes hold exactly the inputs' mass")
}

@Test func pushSum_messageNotFromASession_isRefusedAndCounted() {
    var receiver = PushSumAverager(peer: averagingTestPeer(0), initial: [0], sampleCount: 1, rng: SplitMix64(seed: 1))
    let t = PushSumAverager.Transfer(epoch: 1, sequence: 1, weight: 1, count: 1, codec: 0, payload: .floats([1]))
    let out = receiver.onMessage(.transfer(t), from: Sender(endpoint: Endpoint(host: "x", port: 1)), at: .zero)
    #expect(out.contains { if case .report(.transferRejected(_, .unauthenticated)) = $0 { return true } else { return false } })
    #expect(receiver.weight == 1 && receiver.counters.rejected == 1)
}

@Test func pushSum_sequenceOlderThanTheDedupWindow_isAckedButNotApplied() {
    var receiver = PushSumAverager(peer: averagingTestPeer(0), initial: [0], sampleCount: 1, rng: SplitMix64(seed: 1))
    let a = Sender(endpoint: Endpoint(host: "a", port: 1), peer: averagingTestPeer(1))
    func transfer(_ sequence: UInt64) -> PushSumAverager.Message {
        .transfer(.init(epoch: 5, sequence: sequence, weight: 1, count: 1, codec: 0, payload: .floats([1])))
    }
    _ = receiver.onMessage(transfer(100), from: a, at: .zero)
    // 64 behind the highest: resolved long ago by the sender's in-flight bound.
    let old = receiver.onMessage(transfer(100 - PushSumAverager.dedupWindow), from: a, at: .zero)
    #expect(old.contains { if case .send(.ack(5, 36), _, _) = $0 { return true } else { return false } })
    #expect(receiver.counters.applied == 1 && receiver.counters.duplicates == 1)
    #expect(receiver.weight == 2)
    // 63 behind is still inside the window, never seen: applied.
    _ = receiver.onMessage(transfer(100 - PushSumAverager.dedupWindow + 1), from: a, at: .zero)
    #expect(receiver.counters.applied == 2 && receiver.weight == 3)
}

@Test func pushSum_manyTransfersInFlightUnderLossAndReordering_conserveMass() {
    var settings = PushSumAverager.Settings()
    settings.maxInFlight = 8
    var h = Harness(vectors: vectors, weights: weights, settings: settings)
    var rng = SplitMix64(seed: 77)
    var maxPending = 0
    for _ in 0..<3000 {
        h.randomStep(rng.next(upperBound: UInt64(8)), rng: &rng)
        maxPending = max(maxPending, h.nodes.map(\.pendingTransfers.count).max() ?? 0)
    }
    #expect(maxPending > 2, "the test must hold more than two transfers in flight")
    #expect(h.conserved())
    let drained = h.drainedMassMatchesInputs()
    #expect(drained, "after draining, the nodes hold exactly the inputs' mass")
}

@Test func pushSum_resumedFromDurableState_continuesWithoutLosingOrRepeatingMass() throws {
    var h = Harness(vectors: Array(vectors.prefix(3)), weights: Array(weights.prefix(3)))
    for _ in 0..<20 {
        h.timer(.tick, Int(h.now.nanoseconds / 1_000_000) % 3)
        if !h.wire.isEmpty { h.deliver(0) }
    }
    h.timer(.tick, 1)  // node 1 has a share in flight now, or already delivered
    // Node 1 crashes and restarts from its saved state: the bytes round-trip exactly.
    let saved = h.nodes[1].durableState
    let restored = try DurableState(decoding: saved.encoded())
    #expect(restored == saved)
    h.nodes[1] = .resuming(restored, rng: SplitMix64(seed: 99))
    #expect(h.nodes[1].durableState == saved)
    h.nodes[1].neighbours = [0, 2].map { PeerAddress(peer: averagingTestPeer($0), endpoint: Harness.endpoint($0)) }
    // Whatever was in flight around the restart is delivered twice: applied once.
    for k in h.wire.indices { h.wire.append(h.wire[k]) }
    #expect(h.conserved())
    let drained = h.drainedMassMatchesInputs()
    #expect(drained, "after the restart, the nodes hold exactly the inputs' mass")
}

/// A state saved before coordinate weights existed (`MPS2`: the same bytes without the flag
/// after the value) is still read; an unknown flag is refused with the field's name.
@Test func durableState_previousFormat_isStillRead_andAnUnknownFlagIsRefused() throws {
    let node = PushSumAverager(peer: averagingTestPeer(0), initial: [1, 2, 3], sampleCount: 3, rng: SplitMix64(seed: 1))
    let current = node.durableState.encoded()
    let flagOffset = 4 + 32 + 8 + 8 + 8 + 8 + 4 + 8 * 3
    #expect(current[flagOffset] == 0, "a dense node saves no coordinate weights")
    var previous = Array("MPS2".utf8) + current[4...]
    previous.remove(at: flagOffset)
    let read = try DurableState(decoding: previous)
    #expect(read == node.durableState && read.coordinateWeights == nil)
    var unknown = current
    unknown[flagOffset] = 2
    #expect(throws: WireError.invalidValue(field: "coordinate weights", reason: "flag 2, expected 0 or 1")) { try DurableState(decoding: unknown) }
}

@Test func durableState_malformedBytes_areRefusedWithTheField() {
    #expect(throws: WireError.self) { try DurableState(decoding: []) }
    #expect(throws: WireError.self) { try DurableState(decoding: Array("MPS2".utf8) + [UInt8](repeating: 0, count: 60)) }
    var bytes = PushSumAverager(peer: averagingTestPeer(0), initial: [1, 2], sampleCount: 3, rng: SplitMix64(seed: 1)).durableState.encoded()
    bytes.append(0)
    #expect(throws: WireError.trailingBytes(count: 1)) { try DurableState(decoding: bytes) }
}

/// Local training interleaved with gossip under loss and reordering: the weight stays the
/// inputs' total to the last bit, the value moves by exactly the updates' `Σ w·change`, and
/// once drained and mixed every node holds the new mean.
@Test func pushSum_localUpdatesUnderLoss_moveTheValueByExactlyTheirWeightedChange() {
    var settings = PushSumAverager.Settings()
    settings.maxInFlight = 4
    var h = Harness(vectors: vectors, weights: weights, settings: settings)
    var rng = SplitMix64(seed: 91)
    var shift = [Double](repeating: 0, count: h.initialValue.count)
    var updates = 0
    for _ in 0..<3000 {
        let draw = rng.next(upperBound: UInt64(10))
        guard draw == 5 else {
            h.randomStep(draw, rng: &rng)
            continue
        }
        do {
            let i = Int(rng.next(upperBound: UInt64(h.nodes.count)))
            let change = (0..<shift.count).map { _ in Float(Int(rng.next(upperBound: UInt64(2001))) - 1000) / 4096 }
            let w = h.nodes[i].weight
            if (try? h.nodes[i].applyLocalUpdate(change)) == true {
                for k in 0..<shift.count { shift[k] += w * Double(change[k]) }
                updates += 1
            }
        }
    }
    #expect(updates > 100)
    for _ in 0..<100 where h.nodes.contains(where: { !$0.pendingTransfers.isEmpty }) || !h.wire.isEmpty {
        for i in h.nodes.indices { h.timer(.retransmit, i) }
        while !h.wire.isEmpty { h.deliver(0) }
    }
    let expected = zip(h.initialValue, shift).map { $0 + $1 }
    let (value, weight) = h.mass()
    #expect(abs(weight - h.initialWeight) <= 1e-12 * h.initialWeight, "training touches no weight")
    let scale = expected.reduce(0) { max($0, abs($1)) }
    for k in 0..<expected.count { #expect(abs(value[k] - expected[k]) <= 1e-9 * scale, "element \(k): \(value[k]) vs \(expected[k])") }
    // Lossless mixing: every estimate reaches the moved mean.
    for _ in 0..<400 {
        for i in h.nodes.indices { h.timer(.tick, i) }
        while !h.wire.isEmpty { h.deliver(0) }
    }
    let mean = expected.map { $0 / h.initialWeight }
    for node in h.nodes {
        let estimate = node.estimate ?? []
        #expect(estimate.count == mean.count && zip(estimate, mean).allSatisfy { abs($0 - $1) <= 1e-6 * max(1, abs($1)) }, "\(estimate) vs \(mean)")
    }
}

@Test func pushSum_localUpdate_refusesWrongShapesAndNonFiniteValues_andSkipsAtWeightZero() throws {
    var h = Harness(vectors: Array(vectors.prefix(2)), weights: Array(weights.prefix(2)))
    let before = h.mass()
    #expect(throws: AveragingError.wrongDimension(expected: 3, got: 2)) { try h.nodes[0].applyLocalUpdate([1, 2]) }
    #expect(throws: AveragingError.nonFinite) { try h.nodes[0].applyLocalUpdate([1, .nan, 0]) }
    #expect(throws: AveragingError.nonFinite) { try h.nodes[0].applyLocalUpdate([0, 0, -.infinity]) }
    #expect(h.mass().value == before.value, "a refused update changes nothing")
    // A node that handed all its weight away (a leave's hand-off) has no estimate to move.
    _ = h.nodes[0].beginLeave(at: h.now)
    #expect(try h.nodes[0].applyLocalUpdate([1, 1, 1]) == false)
    #expect(h.nodes[0].counters.localUpdatesSkipped == 1)
}

/// A codec that stands for any other than the identity codec (only its identifier matters).
private struct OtherShareCodec: ShareCodec {
    var identifier: UInt8 { 0x12 }
    func encode(_ share: [Float]) -> (payload: SharePayload, decoded: [Float]) { (.floats(share), share) }
    func decode(_ payload: SharePayload, count: Int) throws(AveragingError) -> [Float] { try IdentityShareCodec().decode(payload, count: count) }
}

@Test func durableState_namesTheCodecOfTransfersInFlight_thatAnotherCodecWouldStrand() {
    var h = Harness(vectors: Array(vectors.prefix(2)), weights: Array(weights.prefix(2)))
    #expect(h.nodes[0].durableState.incompatibility(with: OtherShareCodec()) == nil, "nothing in flight: any codec may resume")
    h.timer(.tick, 0)
    let saved = h.nodes[0].durableState
    #expect(saved.inFlight.count == 1)
    #expect(saved.incompatibility(with: IdentityShareCodec()) == nil)
    #expect(saved.incompatibility(with: OtherShareCodec())?.contains("codec \(IdentityShareCodec().identifier)") == true)
}
