import Crypto
import DeterministicRandom
import Federation
import Learner
import Testing
@testable import Gossip

/// Compressed shares under loss: whatever the codec drops stays with the sender, so the
/// network's total weight and value stay exactly the inputs', and estimates still mix.
@Suite struct CompressedShareCodecTests {
    static let n = 6
    static let dimension = 1_000

    /// Averagers on a complete graph exchanging through a lossy, reordering queue; drained at
    /// the end (retransmissions until nothing is in flight). Returns the nodes.
    static func run(codec spec: String, seed: UInt64, steps: Int, loss: UInt64) throws -> (nodes: [PushSumAverager], inputs: [[Float]], weights: [Double]) {
        let codec = try CompressedShareCodec.named(spec)
        var rng = SplitMix64(seed: seed)
        let peers = (0..<n).compactMap { i in PeerID(bytes: [UInt8](repeating: UInt8(i + 1), count: 32)) }
        try #require(peers.count == n)
        let addresses = peers.enumerated().map { PeerAddress(peer: $1, endpoint: Endpoint(host: "n\($0)", port: 1)) }
        let inputs = (0..<n).map { _ in (0..<dimension).map { _ in Float(Int(rng.next(upperBound: UInt64(2001))) - 1000) / 100 } }
        let weights = (0..<n).map { Double($0 * 7 + 3) }
        var nodes = (0..<n).map { i in
            PushSumAverager(peer: peers[i], initial: inputs[i], sampleCount: weights[i],
                            neighbours: addresses.filter { $0.peer != peers[i] }, codec: codec, rng: SplitMix64(seed: seed &+ UInt64(i)))
        }
        var wire: [(from: Int, to: Int, message: PushSumAverager.Message)] = []
        var now = Instant.zero
        func apply(_ actions: [PushSumAverager.Action], from i: Int) {
            for case .send(let m, let to, _) in actions {
                guard let j = addresses.firstIndex(where: { $0.endpoint == to }) else { continue }
                wire.append((i, j, m))
            }
        }
        func deliver(_ k: Int) {
            let (from, to, m) = wire.remove(at: k)
            now = now + .milliseconds(1)
            apply(nodes[to].onMessage(m, from: Sender(endpoint: addresses[from].endpoint, peer: peers[from]), at: now), from: to)
        }
        for _ in 0..<steps {
            now = now + .milliseconds(1)
            switch rng.next(upperBound: UInt64(4)) {
            case 0:
                let i = Int(rng.next(upperBound: UInt64(n)))
                apply(nodes[i].onTimer(.tick, at: now), from: i)
            case 1:
                let i = Int(rng.next(upperBound: UInt64(n)))
                now = now + .seconds(1)
                apply(nodes[i].onTimer(.retransmit, at: now), from: i)
            default:
                guard !wire.isEmpty else { continue }
                let k = Int(rng.next(upperBound: UInt64(wire.count)))
                if rng.next(upperBound: UInt64(100)) < loss { wire.remove(at: k) } else { deliver(k) }
            }
        }
        for _ in 0..<200 where !wire.isEmpty || nodes.contains(where: { !$0.pendingTransfers.isEmpty }) {
            now = now + .seconds(1)
            for i in nodes.indices { apply(nodes[i].onTimer(.retransmit, at: now), from: i) }
            while !wire.isEmpty { deliver(0) }
        }
        return (nodes, inputs, weights)
    }

    @Test(arguments: ["fp16", "int8", "topk:0.1"])
    func compressedSharesUnderLoss_keepTheTotalExactly(codec: String) throws {
        let (nodes, inputs, weights) = try Self.run(codec: codec, seed: 5, steps: 6_000, loss: 20)
        #expect(nodes.allSatisfy { $0.pendingTransfers.isEmpty })
        #expect(nodes.map(\.counters.applied).reduce(0, +) > 200)
        var value = [Double](repeating: 0, count: Self.dimension)
        var weight = 0.0
        for node in nodes { node.withValue { v, w in for k in 0..<v.count { value[k] += v[k] }; weight += w } }
        let expectedWeight = weights.reduce(0, +)
        #expect(abs(weight - expectedWeight) <= 1e-12 * expectedWeight)
        for k in 0..<Self.dimension {
            let expected = zip(inputs, weights).reduce(0.0) { $0 + Double($1.0[k]) * $1.1 }
            #expect(abs(value[k] - expected) <= 1e-9 * max(1, abs(expected)), "element \(k) with \(codec)")
        }
    }

    @Test(arguments: [("int8", 3.5), ("fp16", 1.9)])
    func compressedShares_areSmallerOnTheWire(codec: String, atLeast factor: Double) throws {
        let share = (0..<Self.dimension).map { Float($0 % 17) - 8.25 }
        let plain = IdentityShareCodec().encode(share).payload.byteCount
        let compressed = try CompressedShareCodec.named(codec).encode(share).payload.byteCount
        #expect(Double(plain) / Double(compressed) >= factor, "\(codec): \(compressed) bytes against \(plain)")
    }

    /// A top-k 10 % transfer carries 100 of 1,000 coordinates, each with its value and its
    /// weight code (5 bytes), behind a 125-byte bitmap and the codes' 2-byte base: 627 bytes
    /// against 4,000, 6.4 times fewer.
    @Test func topKTransfers_areOverSixTimesSmallerOnTheWire() throws {
        let (nodes, _, _) = try Self.run(codec: "topk:0.1", seed: 3, steps: 40, loss: 0)
        var plain = try Self.run(codec: "fp32", seed: 3, steps: 40, loss: 0).nodes[0]
        var sparse = nodes[0]
        let peer = try #require(sparse.neighbours.first)
        sparse.neighbours = [peer]
        plain.neighbours = [peer]
        func sentBytes(_ node: inout PushSumAverager) -> Int {
            node.onTimer(.tick, at: Instant(nanoseconds: 1 << 40)).reduce(0) { sum, action in
                guard case .send(let message, _, _) = action else { return sum }
                return sum + message.wireSize
            }
        }
        let (sparseBytes, plainBytes) = (sentBytes(&sparse), sentBytes(&plain))
        #expect(sparseBytes == PushSumAverager.Message.transferHeaderSize + SparseShare.byteCount(carrying: 100, of: Self.dimension))
        #expect(Double(plainBytes) / Double(sparseBytes) >= 6, "\(sparseBytes) bytes against \(plainBytes)")
    }

    /// Under loss, duplication and reordering, every coordinate's own weight still sums to the
    /// total sample count over the nodes (sparse push-sum is a push-sum per coordinate).
    @Test func topK_everyCoordinatesWeight_sumsToTheSampleCount() throws {
        let (nodes, _, weights) = try Self.run(codec: "topk:0.1", seed: 9, steps: 6_000, loss: 20)
        let total = weights.reduce(0, +)
        #expect(nodes.allSatisfy { $0.isSparse && $0.pendingTransfers.isEmpty })
        for k in 0..<Self.dimension {
            let sum = nodes.reduce(0.0) { $0 + $1.coordinateWeights[k] }
            #expect(abs(sum - total) <= 1e-12 * total, "coordinate \(k): \(sum) against \(total)")
        }
        // Coordinates travelled at their own pace: their weights differ from node to node.
        #expect(Set(nodes[0].coordinateWeights).count > 1)
    }

    /// A joiner holds no weight until it has heard of every coordinate; the sweep that each
    /// transfer carries brings them all within `8 · dimension / k` transfers.
    @Test func topK_joiner_hasAnEstimateOnceEveryCoordinateArrived() throws {
        let codec = try CompressedShareCodec.named("topk:0.1")
        let peers = try (1...2).map { try #require(PeerID(bytes: [UInt8](repeating: $0, count: 32))) }
        let joinerAddress = PeerAddress(peer: peers[1], endpoint: Endpoint(host: "joiner", port: 1))
        let dimension = 160
        var sender = PushSumAverager(peer: peers[0], initial: (0..<dimension).map { Float($0) }, sampleCount: 5,
                                     neighbours: [joinerAddress], codec: codec, rng: SplitMix64(seed: 1))
        var joiner = PushSumAverager(joining: peers[1], dimension: dimension, sampleCount: 3, codec: codec, rng: SplitMix64(seed: 2))
        var transfers = 0
        var now = Instant.zero
        while joiner.estimate == nil, transfers < 1_000 {
            now = now + .milliseconds(200)
            for case .send(let message, _, _) in sender.onTimer(.tick, at: now) {
                transfers += 1
                for case .send(let ack, _, _) in joiner.onMessage(message, from: Sender(endpoint: Endpoint(host: "sender", port: 1), peer: peers[0]), at: now) {
                    _ = sender.onMessage(ack, from: Sender(endpoint: joinerAddress.endpoint, peer: peers[1]), at: now)
                }
            }
        }
        #expect(transfers <= 8 * dimension / 16, "\(transfers) transfers before every coordinate arrived")
        let estimate = try #require(joiner.estimate)
        for k in 0..<dimension { #expect(abs(estimate[k] - Double(k)) <= 1e-5 * max(1, Double(k)), "coordinate \(k)") }
    }

    /// A sparse node's training step is damped where it holds less than its mean weight: the
    /// coordinates a transfer carried away move by `(w_c / w̄)²` of the change, the rest by all
    /// of it, and the weights stay as they were.
    @Test func topK_localUpdate_isDampedWhereTheNodeSentItsWeightAway() throws {
        let codec = try CompressedShareCodec.named("topk:0.1")
        let peers = try (1...2).map { try #require(PeerID(bytes: [UInt8](repeating: $0, count: 32))) }
        var node = PushSumAverager(peer: peers[0], initial: [Float](repeating: 1, count: Self.dimension), sampleCount: 10,
                                   neighbours: [PeerAddress(peer: peers[1], endpoint: Endpoint(host: "peer", port: 1))], codec: codec, rng: SplitMix64(seed: 1))
        #expect(node.onTimer(.tick, at: .zero).contains { if case .send = $0 { true } else { false } })
        let weights = node.coordinateWeights
        let sent = weights.indices.filter { weights[$0] < 10 }
        #expect(sent.count >= 100 && sent.allSatisfy { weights[$0] >= 2.5 && weights[$0] < 3 }, "three quarters of each carried coordinate left")
        let before = try #require(node.estimate)
        #expect(try node.applyLocalUpdate([Float](repeating: 0.5, count: Self.dimension)))
        let after = try #require(node.estimate)
        let mean = weights.reduce(0, +) / Double(Self.dimension)
        for k in 0..<Self.dimension {
            let expected = 0.5 * min(1, (weights[k] / mean) * (weights[k] / mean))
            #expect(abs((after[k] - before[k]) - expected) <= 1e-12, "coordinate \(k) at weight \(weights[k])")
        }
        #expect(node.coordinateWeights == weights)
    }

    /// A sparse node's saved state keeps each coordinate's weight; it resumes exactly, a dense
    /// codec refuses it, and a dense node's state resumes sparse at its one weight.
    @Test func topK_durableState_keepsTheCoordinateWeights() throws {
        let (nodes, _, _) = try Self.run(codec: "topk:0.1", seed: 4, steps: 2_000, loss: 10)
        let saved = nodes[2].durableState
        let decoded = try DurableState(decoding: saved.encoded())
        #expect(decoded == saved)
        #expect(decoded.coordinateWeights == nodes[2].coordinateWeights)
        let topK = try CompressedShareCodec.named("topk:0.1")
        let resumed = PushSumAverager.resuming(decoded, codec: topK, rng: SplitMix64(seed: 1))
        #expect(resumed.estimate == nodes[2].estimate)
        #expect(decoded.incompatibility(with: topK) == nil)
        #expect(decoded.incompatibility(with: IdentityShareCodec())?.contains("weights of their own") == true)
        let dense = try Self.run(codec: "fp32", seed: 4, steps: 500, loss: 10).nodes[1].durableState
        let resumedSparse = PushSumAverager.resuming(dense, codec: topK, rng: SplitMix64(seed: 1))
        #expect(resumedSparse.coordinateWeights == [Double](repeating: dense.weight, count: Self.dimension))
        let denseEstimate = try #require(PushSumAverager.resuming(dense, rng: SplitMix64(seed: 1)).estimate)
        let sparseEstimate = try #require(resumedSparse.estimate)
        #expect(zip(denseEstimate, sparseEstimate).allSatisfy { abs($0 - $1) <= 1e-12 * max(1, abs($0)) })
    }

    /// Weights that are codes go out in a byte each; others (1e-3 is no code) as floats.
    @Test func sparseShares_roundTripInBothLayouts_andMalformedOnesAreRefusedWithTheirReason() throws {
        let share = SparseShare(indices: [0, 3, 9], values: [1.5, -2, 0.25], weights: [4, 0.5, 1e-3])
        let bytes = share.encoded(dimension: 10)
        #expect(bytes.count == 2 + 3 * 8)
        #expect(try SparseShare(decoding: bytes, dimension: 10) == share)
        let coded = SparseShare(indices: [0, 3, 9], values: [1.5, -2, 0.25], weights: [4, 0.5, 0.125])
        #expect(coded.encoded(dimension: 10).count == 2 + 2 + 3 * 5)
        #expect(try SparseShare(decoding: coded.encoded(dimension: 10), dimension: 10) == coded)
        // Base −14 (0xfff2); 3 = 24 · 2^(−14 + 15 − 4) is code 0xf8, 1.5 is 0xe8.
        let documented: [UInt8] = [0x02, 0x02, 0xff, 0xf2, 0x3f, 0, 0, 0, 0xc0, 0, 0, 0, 0xf8, 0xe8]
        #expect(SparseShare(indices: [1, 9], values: [0.5, -2], weights: [3, 1.5]).encoded(dimension: 12) == documented, "docs/wire.md's example")
        func refusal(_ bytes: [UInt8], _ dimension: Int = 10) -> String {
            do {
                _ = try SparseShare(decoding: bytes, dimension: dimension)
                return "accepted"
            } catch { return "\(error)" }
        }
        #expect(refusal(Array(bytes.dropLast())).contains("expected 19 (coded weights) or 26"))
        #expect(refusal(bytes + [0]).contains("expected 19 (coded weights) or 26"))
        var badBase = documented
        badBase[2...3] = [0x7f, 0xff]
        #expect(refusal(badBase, 12).contains("base exponent 32767"))
        badBase = documented
        badBase[12...13] = [0xe8, 0xd8] // 1.5 and 0.75 above base −14: the largest is an octave short
        #expect(refusal(badBase, 12).contains("base exponent -14; its largest weight's is -15"))
        #expect(refusal([0x00, 0x00, 0xff, 0xf2]).contains("carries no coordinate"))
        let floatLayout: [UInt8] = [0x02, 0x02, 0x3f, 0, 0, 0, 0xc0, 0, 0, 0, 0x40, 0x40, 0, 0, 0x3f, 0xc0, 0, 0]
        #expect(refusal(floatLayout, 12).contains("they travel coded"))
        var stray = bytes
        stray[1] |= 0x80 // coordinate 15 of 10
        #expect(refusal(stray).contains("coordinate 15 of 10"))
        #expect(refusal([1]).contains("shorter than its 2-byte bitmap"))
        for (bad, reason) in [(Float.nan, "value"), (Float.infinity, "value")] {
            #expect(refusal(SparseShare(indices: [2], values: [bad], weights: [1]).encoded(dimension: 10)).contains(reason))
        }
        for bad in [Float(0), -1, .infinity, .nan] {
            #expect(refusal(SparseShare(indices: [2], values: [1], weights: [bad]).encoded(dimension: 10)).contains("positive and finite"))
        }
    }

    /// A weight share rounds down to a code, by less than a sixteenth; one too small for the
    /// share's base has none, one above every code gets the largest.
    @Test func weightCodes_roundDownByLessThanASixteenth() throws {
        var rng = SplitMix64(seed: 12)
        for _ in 0..<10_000 {
            let omega = Float(sign: .plus, exponent: Int(rng.next() % 60) - 30, significand: 1 + Float(rng.next() >> 40) / Float(1 << 24))
            let base = SparseShare.codeBase(forLargest: omega)
            let code = try #require(SparseShare.codedWeight(omega, base: base))
            #expect(code <= omega && code > omega * (1 - 1.0 / 16), "\(omega) → \(code)")
            #expect(SparseShare(indices: [0], values: [1], weights: [code]).encoded(dimension: 1).count == 1 + 2 + 5)
        }
        #expect(SparseShare.codedWeight(0.5, base: 0) == nil)
        for unfit in [Float(0), -2, .leastNonzeroMagnitude, .infinity, .nan] {
            #expect(SparseShare.codedWeight(unfit, base: 20) == nil && SparseShare.codedWeight(unfit, base: -20) == nil)
        }
        #expect(SparseShare.codedWeight(1e6, base: 0) == Float(31 * 2048))
    }

    @Test func aPayloadThatDoesNotDecode_isRefusedWithItsReason() throws {
        let codec = try CompressedShareCodec.named("int8")
        #expect(throws: AveragingError.self) { try codec.decode(.bytes([2, 9, 9]), count: 10) }
        #expect(throws: AveragingError.self) { try codec.decode(.floats([1, 2]), count: 2) }
        #expect(try CompressedShareCodec.named("fp32").identifier == IdentityShareCodec().identifier)
        #expect(throws: (any Error).self) { try CompressedShareCodec.named("zip") }
    }

    /// Without loss, estimates mix to the weighted mean up to what the codec rounds away:
    /// exact for fp32; measured max error over the mean's largest element (8.09), 6e-4 for fp16
    /// and 6.5e-3 for int8. Top-k 10 % is sparse push-sum, every coordinate its own push-sum
    /// with fp32 shares: as exact as fp32 once every coordinate has travelled often enough.
    @Test(arguments: [("fp32", 1e-6), ("fp16", 1.5e-3), ("int8", 1.5e-2), ("topk:0.1", 1e-6)])
    func estimatesMixToTheMean_withinTheCodecsResolution(codec: String, tolerance: Double) throws {
        let (nodes, inputs, weights) = try Self.run(codec: codec, seed: 5, steps: 20_000, loss: 0)
        let total = weights.reduce(0, +)
        let mean = (0..<Self.dimension).map { k in zip(inputs, weights).reduce(0.0) { $0 + Double($1.0[k]) * $1.1 } / total }
        let magnitude = mean.map(abs).max() ?? 1
        for (i, node) in nodes.enumerated() {
            let estimate = try #require(node.estimate)
            let error = zip(estimate, mean).map { abs($0 - $1) }.max() ?? .infinity
            #expect(error <= tolerance * magnitude, "node \(i) with \(codec): max error \(error)")
        }
    }
}
