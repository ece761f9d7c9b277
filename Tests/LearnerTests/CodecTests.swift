import DeterministicRandom
import Testing
@testable import Learner

struct CodecTests {
    static func delta(_ n: Int, seed: UInt64, scale: Double = 0.01) -> [Float] {
        var rng = SplitMix64(seed: seed)
        return (0..<n).map { _ in Float(rng.normal() * scale) }
    }

    @Test func fp32_roundTrip_isExact() throws {
        let x = Self.delta(1000, seed: 1)
        let bytes = Fp32Codec().encode(x)
        #expect(bytes.count == 5 + 4000)
        #expect(try Fp32Codec().decode(bytes, expectedCount: 1000) == x)
    }

    @Test func fp16_roundTrip_withinHalfPrecisionBound() throws {
        let x = Self.delta(5000, seed: 2, scale: 3)
        let bytes = Fp16Codec().encode(x)
        #expect(CodecReport(count: x.count, encodedBytes: bytes.count).ratio > 1.99)
        let y = try Fp16Codec().decode(bytes, expectedCount: x.count)
        for (a, b) in zip(x, y) {
            #expect(abs(a - b) <= max(abs(a) * 0x1p-11, 0x1p-25))
        }
    }

    @Test func int8_roundTrip_withinHalfAScalePerChunk() throws {
        var x = Self.delta(1000, seed: 3)
        x[10] = 5 // an outlier only coarsens its own chunk
        let codec = Int8Codec()
        let bytes = codec.encode(x)
        #expect(bytes.count == 5 + 4 + 4 * 4 + 1000)
        let y = try codec.decode(bytes, expectedCount: x.count)
        for c in 0..<4 {
            let range = (c * 256)..<min(1000, (c + 1) * 256)
            let scale = range.map { abs(x[$0]) }.max()! / 127
            for i in range { #expect(abs(x[i] - y[i]) <= scale / 2 * 1.0001) }
        }
        #expect(CodecReport(count: 1000, encodedBytes: bytes.count).ratio > 3.8)
    }

    @Test func topK_keepsExactlyTheLargestValues() throws {
        let x = Self.delta(1000, seed: 4)
        let codec = TopKCodec(fraction: 0.05)
        let bytes = codec.encode(x)
        #expect(bytes.count == 9 + 8 * 50)
        let y = try codec.decode(bytes, expectedCount: 1000)
        let kept = y.indices.filter { y[$0] != 0 }
        #expect(kept.count == 50)
        let expected = Set(x.indices.sorted { abs(x[$0]) > abs(x[$1]) }.prefix(50))
        #expect(Set(kept) == expected)
        for i in kept { #expect(y[i] == x[i]) }
    }

    /// Many equal magnitudes (as sparse push-sum's priorities have: zeros, and infinities for
    /// its sweep): the k chosen are the largest, ties to the lower index, in ascending order.
    @Test(arguments: [1, 13, 100, 399])
    func largestIndices_withManyTies_takeTheLowerIndices(k: Int) {
        var rng = SplitMix64(seed: UInt64(k))
        let values = (0..<400).map { _ -> Float in
            switch rng.next(upperBound: UInt64(4)) {
            case 0: return 0
            case 1: return .infinity
            case 2: return -2.5
            default: return Float(rng.next(upperBound: UInt64(5)))
            }
        }
        let expected = values.indices.sorted { (abs(values[$0]), -$0) > (abs(values[$1]), -$1) }.prefix(k).sorted()
        #expect(TopKCodec.largestIndices(values, k) == Array(expected))
    }

    @Test(arguments: ["fp16", "int8", "topk:0.01", "topk:0.1"])
    func errorFeedback_sumOfDecoded_tracksSumOfTrueDeltas(spec: String) throws {
        let n = 2000
        var feedback = ErrorFeedback(codec: try Codecs.parse(spec), count: n)
        var trueSum = [Double](repeating: 0, count: n)
        var sentSum = [Double](repeating: 0, count: n)
        var withoutFeedback = [Double](repeating: 0, count: n)
        let plain = try Codecs.parse(spec)
        for round in 0..<50 {
            let d = Self.delta(n, seed: UInt64(100 + round))
            let (bytes, decoded, _) = try feedback.encode(d)
            #expect(try Codecs.decode(bytes, expectedCount: n) == decoded)
            let lossy = try plain.decode(plain.encode(d), expectedCount: n)
            for i in 0..<n {
                trueSum[i] += Double(d[i])
                sentSum[i] += Double(decoded[i])
                withoutFeedback[i] += Double(lossy[i])
            }
        }
        // The gap is exactly the residual still held back: sum(true) − sum(sent) = residual.
        var worstGap = 0.0, gapWithout = 0.0
        for i in 0..<n {
            #expect(abs(trueSum[i] - sentSum[i] - Double(feedback.residual[i])) < 1e-4)
            worstGap += abs(trueSum[i] - sentSum[i])
            gapWithout += abs(trueSum[i] - withoutFeedback[i])
        }
        #expect(worstGap <= gapWithout)
    }

    @Test func decode_hostileBytes_throwInsteadOfTrapping() throws {
        let good = Int8Codec().encode(Self.delta(300, seed: 5))
        // A count far beyond what the caller expects is refused before allocating.
        var huge = Fp32Codec().encode([1, 2, 3])
        huge.replaceSubrange(1..<5, with: [0xFF, 0xFF, 0xFF, 0x7F])
        #expect(throws: LearnerError.self) { try Codecs.decode(huge, expectedCount: 3) }
        #expect(throws: LearnerError.self) { try Codecs.decode([], expectedCount: 0) }
        #expect(throws: LearnerError.self) { try Codecs.decode(Array(good.dropLast()), expectedCount: 300) }
        // NaN smuggled into fp32 and a top-k index out of range.
        var nan = Fp32Codec().encode([1, 2])
        nan.replaceSubrange(5..<9, with: [0, 0, 0xC0, 0x7F])
        #expect(throws: LearnerError.self) { try Codecs.decode(nan, expectedCount: 2) }
        var topk = TopKCodec(fraction: 0.5).encode([1, 0, 3, 0])
        topk[9] = 9
        #expect(throws: LearnerError.self) { try Codecs.decode(topk, expectedCount: 4) }
        // Random mutations of valid encodings: every outcome is a value or a thrown error.
        var rng = SplitMix64(seed: 9)
        let samples = [Fp32Codec().encode(Self.delta(40, seed: 6)), Fp16Codec().encode(Self.delta(40, seed: 6)),
                       Int8Codec(chunk: 16).encode(Self.delta(40, seed: 6)), TopKCodec(fraction: 0.2).encode(Self.delta(40, seed: 6))]
        for _ in 0..<4000 {
            var b = samples[rng.below(samples.count)]
            switch rng.below(3) {
            case 0: b[rng.below(b.count)] = UInt8(truncatingIfNeeded: rng.next())
            case 1: b.removeLast(rng.below(b.count))
            default: b += (0..<rng.below(9)).map { _ in UInt8(truncatingIfNeeded: rng.next()) }
            }
            if let decoded = try? Codecs.decode(b, expectedCount: 40) {
                #expect(decoded.count == 40 && decoded.allSatisfy { $0.isFinite })
            }
        }
    }

    @Test func parse_unknownCodec_isRefused() {
        #expect(throws: LearnerError.self) { try Codecs.parse("zip") }
        #expect(throws: LearnerError.self) { try Codecs.parse("topk:0") }
        #expect(throws: LearnerError.self) { try Codecs.parse("topk:2") }
    }
}

struct TopKSelectionTests {
    /// The radix selection against a sorted reference, on magnitudes that share their top
    /// bits, differ only in their last bits, include signed zeros, subnormals, infinities and
    /// NaN (which counts as infinity).
    @Test(arguments: [1, 2, 999, 5_000, 9_999])
    func largestIndices_agreeWithASortedReference(k: Int) {
        var rng = SplitMix64(seed: UInt64(k) &+ 77)
        let values = (0..<10_000).map { _ -> Float in
            switch rng.next(upperBound: UInt64(8)) {
            case 0: return 0
            case 1: return -0.0
            case 2: return Float(bitPattern: UInt32(rng.next(upperBound: UInt64(1 << 23))))  // subnormal
            case 3: return Float(bitPattern: 0x3F80_0000 | UInt32(rng.next(upperBound: UInt64(1 << 10))))  // near 1, low bits only
            case 4: return rng.next(upperBound: UInt64(50)) == 0 ? .nan : -.infinity
            default: return Float(rng.normal()) * 3
            }
        }
        let magnitude = { (x: Float) -> Float in x.isNaN ? .infinity : abs(x) }
        let expected = values.indices.sorted { (magnitude(values[$0]), -$0) > (magnitude(values[$1]), -$1) }.prefix(k).sorted()
        #expect(TopKCodec.largestIndices(values, k) == Array(expected))
    }

    @Test(arguments: [1, 7, 50, 199, 200])
    func largestIndices_withTies_keepsExactlyKOfTheLargest(k: Int) {
        var rng = SplitMix64(seed: UInt64(k))
        // Few distinct magnitudes, both signs: many ties at the threshold.
        let x = (0..<200).map { _ in Float(rng.below(9) - 4) }
        let chosen = TopKCodec.largestIndices(x, k)
        #expect(chosen.count == k)
        #expect(chosen == chosen.sorted() && Set(chosen).count == k)
        let smallestKept = chosen.map { abs(x[$0]) }.min() ?? .infinity
        let rest = Set(x.indices).subtracting(chosen)
        #expect(rest.allSatisfy { abs(x[$0]) <= smallestKept })
    }
}
