import Foundation

/// Compresses model deltas for the wire. Every encoding starts with a tag byte and the
/// vector length (u32, little-endian), so any decoder can check the length against what the
/// caller expects *before* allocating, and `Codecs.decode` can pick the decoder from the tag.
public protocol DeltaCodec: Sendable {
    /// `fp32`, `fp16`, `int8` or `topk:FRACTION`: the spelling `Codecs.parse` accepts.
    var name: String { get }
    /// The tag byte its encodings start with (for a wire header's "encoding" field).
    var tag: CodecTag { get }
    /// The encoding of `values`.
    func encode(_ values: [Float]) -> [UInt8]
    /// The values in `bytes`, which must hold exactly `expectedCount` of them; throws (never
    /// traps) on anything malformed, truncated, oversized or non-finite.
    func decode(_ bytes: [UInt8], expectedCount: Int) throws -> [Float]
}

/// The tag byte that opens each encoding.
public enum CodecTag: UInt8, Sendable {
    case fp32 = 0, fp16 = 1, int8 = 2, topK = 3
}

/// Size and compression of one encoded delta.
public struct CodecReport: Sendable, Equatable {
    public let count: Int
    public let encodedBytes: Int
    /// What the values take as raw fp32.
    public var rawBytes: Int { 4 * count }
    /// rawBytes / encodedBytes: how many times smaller the encoding is.
    public var ratio: Double { Double(rawBytes) / Double(max(encodedBytes, 1)) }

    public init(count: Int, encodedBytes: Int) {
        self.count = count
        self.encodedBytes = encodedBytes
    }
}

/// Lookup of codecs by name and by tag.
public enum Codecs {
    /// Tag byte plus u32 count.
    static let headerBytes = 5

    /// `fp32`, `fp16`, `int8` or `topk:FRACTION` (0 < FRACTION ≤ 1).
    public static func parse(_ spec: String) throws -> any DeltaCodec {
        switch spec {
        case "fp32": return Fp32Codec()
        case "fp16": return Fp16Codec()
        case "int8": return Int8Codec()
        default:
            if spec.hasPrefix("topk:"), let f = Double(spec.dropFirst(5)), f > 0, f <= 1 { return TopKCodec(fraction: f) }
            throw LearnerError.invalidArgument("codec must be fp32, fp16, int8 or topk:FRACTION (0 < FRACTION ≤ 1), got '\(spec)'")
        }
    }

    /// Decodes bytes from any codec here, chosen by the tag byte.
    public static func decode(_ bytes: [UInt8], expectedCount: Int) throws -> [Float] {
        guard let first = bytes.first else { throw LearnerError.badEncoding("empty") }
        switch CodecTag(rawValue: first) {
        case .fp32: return try Fp32Codec().decode(bytes, expectedCount: expectedCount)
        case .fp16: return try Fp16Codec().decode(bytes, expectedCount: expectedCount)
        case .int8: return try Int8Codec().decode(bytes, expectedCount: expectedCount)
        case .topK: return try TopKCodec(fraction: 1).decode(bytes, expectedCount: expectedCount)
        case nil: throw LearnerError.badEncoding("unknown codec tag \(first)")
        }
    }

    static func header(_ tag: CodecTag, count: Int, capacity: Int) -> ByteWriter {
        var w = ByteWriter(capacity: capacity)
        w.u8(tag.rawValue)
        w.u32(UInt32(count))
        return w
    }

    /// Checks tag, count and total length before anything is allocated.
    static func openHeader(_ bytes: [UInt8], _ tag: CodecTag, expectedCount: Int) throws -> ByteReader {
        var r = ByteReader(bytes) { LearnerError.badEncoding($0) }
        let t = try r.u8("tag")
        guard t == tag.rawValue else { throw LearnerError.badEncoding("tag \(t), expected \(tag.rawValue) (\(tag))") }
        let count = Int(try r.u32("count"))
        guard count == expectedCount else { throw LearnerError.badEncoding("holds \(count) values, expected \(expectedCount)") }
        return r
    }

    static func requireLength(_ bytes: [UInt8], _ expected: Int) throws {
        guard bytes.count == expected else {
            throw LearnerError.badEncoding("\(bytes.count) bytes, expected \(expected)")
        }
    }

    static func requireFinite(_ values: [Float]) throws {
        if let i = values.firstIndex(where: { !$0.isFinite }) { throw LearnerError.badEncoding("value \(i) is \(values[i])") }
    }
}

/// Raw little-endian fp32: exact, 4 bytes a value.
public struct Fp32Codec: DeltaCodec {
    public init() {}
    public var name: String { "fp32" }
    public var tag: CodecTag { .fp32 }

    public func encode(_ values: [Float]) -> [UInt8] {
        var w = Codecs.header(.fp32, count: values.count, capacity: Codecs.headerBytes + 4 * values.count)
        w.floats(values)
        return w.bytes
    }

    public func decode(_ bytes: [UInt8], expectedCount: Int) throws -> [Float] {
        var r = try Codecs.openHeader(bytes, .fp32, expectedCount: expectedCount)
        try Codecs.requireLength(bytes, Codecs.headerBytes + 4 * expectedCount)
        let values = try r.floats(expectedCount, "values")
        try Codecs.requireFinite(values)
        return values
    }
}

/// IEEE half precision: 2 bytes a value, relative error ≤ 2⁻¹¹ for |x| ≥ 2⁻¹⁴ (absolute
/// ≤ 2⁻²⁵ below); magnitudes beyond 65504 are clamped to it.
public struct Fp16Codec: DeltaCodec {
    public init() {}
    public var name: String { "fp16" }
    public var tag: CodecTag { .fp16 }

    public func encode(_ values: [Float]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Codecs.headerBytes + 2 * values.count)
        let head = Codecs.header(.fp16, count: values.count, capacity: Codecs.headerBytes).bytes
        out.replaceSubrange(0..<Codecs.headerBytes, with: head)
        let limit = Float(Float16.greatestFiniteMagnitude)
        values.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBytes { dst in
                for i in 0..<src.count {
                    let v = min(max(src[i], -limit), limit)
                    dst.storeBytes(of: Float16(v).bitPattern.littleEndian, toByteOffset: Codecs.headerBytes + 2 * i, as: UInt16.self)
                }
            }
        }
        return out
    }

    public func decode(_ bytes: [UInt8], expectedCount: Int) throws -> [Float] {
        _ = try Codecs.openHeader(bytes, .fp16, expectedCount: expectedCount)
        try Codecs.requireLength(bytes, Codecs.headerBytes + 2 * expectedCount)
        var out = [Float](repeating: 0, count: expectedCount)
        bytes.withUnsafeBytes { src in
            out.withUnsafeMutableBufferPointer { dst in
                for i in 0..<dst.count {
                    let bits = UInt16(littleEndian: src.loadUnaligned(fromByteOffset: Codecs.headerBytes + 2 * i, as: UInt16.self))
                    dst[i] = Float(Float16(bitPattern: bits))
                }
            }
        }
        try Codecs.requireFinite(out)
        return out
    }
}

/// Symmetric int8 with one fp32 scale per chunk: scale = max|x| / 127 within the chunk,
/// error ≤ scale / 2 per value.
public struct Int8Codec: DeltaCodec {
    /// Values per scale. 256 keeps the scale overhead at 1.6% while an outlier only coarsens
    /// the 255 values that share its chunk.
    public static let defaultChunk = 256
    /// Largest chunk accepted from the wire (bounds the decoder's work per scale).
    static let maxChunk = 1 << 20
    public let chunk: Int

    public init(chunk: Int = Int8Codec.defaultChunk) { self.chunk = min(max(1, chunk), Self.maxChunk) }
    public var name: String { "int8" }
    public var tag: CodecTag { .int8 }

    static func size(count: Int, chunk: Int) -> Int {
        Codecs.headerBytes + 4 + 4 * ((count + chunk - 1) / chunk) + count
    }

    public func encode(_ values: [Float]) -> [UInt8] {
        let n = values.count
        let chunks = (n + chunk - 1) / chunk
        var out = [UInt8](repeating: 0, count: Self.size(count: n, chunk: chunk))
        var head = Codecs.header(.int8, count: n, capacity: Codecs.headerBytes + 4)
        head.u32(UInt32(chunk))
        out.replaceSubrange(0..<head.bytes.count, with: head.bytes)
        let scalesAt = Codecs.headerBytes + 4, valuesAt = scalesAt + 4 * chunks
        values.withUnsafeBufferPointer { src in
            out.withUnsafeMutableBytes { dst in
                for c in 0..<chunks {
                    let lo = c * chunk, hi = min(n, lo + chunk)
                    var m: Float = 0
                    for i in lo..<hi where abs(src[i]) > m { m = abs(src[i]) }
                    if !m.isFinite { m = Float.greatestFiniteMagnitude }
                    let scale = m / 127
                    dst.storeBytes(of: scale.bitPattern.littleEndian, toByteOffset: scalesAt + 4 * c, as: UInt32.self)
                    let inv: Float = scale > 0 ? 1 / scale : 0
                    for i in lo..<hi {
                        let q = min(max((src[i] * inv).rounded(), -127), 127)
                        dst.storeBytes(of: Int8(q.isNaN ? 0 : q), toByteOffset: valuesAt + i, as: Int8.self)
                    }
                }
            }
        }
        return out
    }

    public func decode(_ bytes: [UInt8], expectedCount: Int) throws -> [Float] {
        var r = try Codecs.openHeader(bytes, .int8, expectedCount: expectedCount)
        let chunk = Int(try r.u32("chunk size"))
        guard chunk >= 1, chunk <= Self.maxChunk else { throw LearnerError.badEncoding("chunk size \(chunk)") }
        try Codecs.requireLength(bytes, Self.size(count: expectedCount, chunk: chunk))
        let chunks = (expectedCount + chunk - 1) / chunk
        let scalesAt = Codecs.headerBytes + 4, valuesAt = scalesAt + 4 * chunks
        var out = [Float](repeating: 0, count: expectedCount)
        var badScale: Float?
        bytes.withUnsafeBytes { src in
            out.withUnsafeMutableBufferPointer { dst in
                for c in 0..<chunks {
                    let scale = Float(bitPattern: UInt32(littleEndian: src.loadUnaligned(fromByteOffset: scalesAt + 4 * c, as: UInt32.self)))
                    guard scale.isFinite, scale >= 0 else {
                        badScale = scale
                        return
                    }
                    for i in (c * chunk)..<min(expectedCount, (c + 1) * chunk) {
                        dst[i] = Float(src.load(fromByteOffset: valuesAt + i, as: Int8.self)) * scale
                    }
                }
            }
        }
        if let badScale { throw LearnerError.badEncoding("chunk scale \(badScale)") }
        try Codecs.requireFinite(out)
        return out
    }
}

/// Top-k sparsification: the k = ⌈fraction · n⌉ values of largest magnitude, exactly, with
/// their indices (8 bytes each); every other value decodes as 0.
public struct TopKCodec: DeltaCodec {
    public let fraction: Double

    public init(fraction: Double) { self.fraction = min(1, max(fraction, .leastNonzeroMagnitude)) }
    public var name: String { "topk:\(fraction)" }
    public var tag: CodecTag { .topK }

    /// How many values are kept out of `count`.
    public func keep(_ count: Int) -> Int { count == 0 ? 0 : min(count, max(1, Int((fraction * Double(count)).rounded(.up)))) }

    public func encode(_ values: [Float]) -> [UInt8] {
        let n = values.count, k = keep(n)
        var w = Codecs.header(.topK, count: n, capacity: Codecs.headerBytes + 4 + 8 * k)
        w.u32(UInt32(k))
        let chosen = Self.largestIndices(values, k)
        for i in chosen { w.u32(UInt32(i)) }
        for i in chosen { w.f32(values[i]) }
        return w.bytes
    }

    /// Indices of the k largest magnitudes, ascending; ties broken by lower index. NaN counts
    /// as infinity.
    public static func largestIndices(_ values: [Float], _ k: Int) -> [Int] {
        guard k < values.count else { return Array(values.indices) }
        guard k > 0 else { return [] }
        return values.withUnsafeBufferPointer { v in
            let (threshold, tiesNeeded) = kthLargestKey(v, k)
            // Every value above the threshold is taken (fewer than k of them); the ties fill the
            // rest, lowest indices first. One pass in index order keeps the result ascending.
            var ties = tiesNeeded
            var chosen: [Int] = []
            chosen.reserveCapacity(k)
            for i in 0..<v.count {
                let key = magnitudeKey(v[i])
                if key > threshold {
                    chosen.append(i)
                } else if key == threshold, ties > 0 {
                    chosen.append(i)
                    ties -= 1
                }
            }
            return chosen
        }
    }

    /// The bits of |x|, which order like the magnitudes themselves (NaN as infinity).
    @inline(__always)
    static func magnitudeKey(_ x: Float) -> UInt32 {
        let bits = x.bitPattern & 0x7FFF_FFFF
        return min(bits, 0x7F80_0000)
    }

    /// The k-th largest magnitude key of `v` (1 ≤ k ≤ count), and how many keys equal to it
    /// the k largest include (the others are above it), by radix selection: a histogram of the
    /// keys' top bits finds the bucket holding it, then the next bits within that bucket, and
    /// so on. Three passes at most, the first over all keys, against quickselect's branchy
    /// partitions of the whole vector.
    static func kthLargestKey(_ v: UnsafeBufferPointer<Float>, _ k: Int) -> (key: UInt32, ties: Int) {
        // Keys are below 2^31: 11, 10 and 10 bits.
        let levels: [(shift: UInt32, width: UInt32)] = [(20, 11), (10, 10), (0, 10)]
        var prefix: UInt32 = 0, prefixMask: UInt32 = 0
        var rank = k  // the wanted key's rank from the top among keys matching the prefix
        var candidates: [UInt32] = []
        for (level, (shift, width)) in levels.enumerated() {
            let buckets = 1 << width
            var counts = [Int](repeating: 0, count: buckets)
            let digitMask = UInt32(buckets - 1)
            if level == 0 {
                for x in v { counts[Int(magnitudeKey(x) >> shift)] += 1 }
            } else {
                for key in candidates { counts[Int((key >> shift) & digitMask)] += 1 }
            }
            var digit = buckets - 1
            while counts[digit] < rank {
                rank -= counts[digit]
                digit -= 1
            }
            prefix |= UInt32(digit) << shift
            prefixMask |= digitMask << shift
            guard shift > 0 else { return (prefix, rank) }
            // The keys of the chosen bucket, for the next bits.
            if level == 0 {
                candidates.reserveCapacity(counts[digit])
                for x in v {
                    let key = magnitudeKey(x)
                    if key & prefixMask == prefix { candidates.append(key) }
                }
            } else {
                candidates = candidates.filter { $0 & prefixMask == prefix }
            }
        }
        return (prefix, rank)
    }

    public func decode(_ bytes: [UInt8], expectedCount: Int) throws -> [Float] {
        var r = try Codecs.openHeader(bytes, .topK, expectedCount: expectedCount)
        let k = Int(try r.u32("kept count"))
        guard k <= expectedCount else { throw LearnerError.badEncoding("keeps \(k) of \(expectedCount) values") }
        try Codecs.requireLength(bytes, Codecs.headerBytes + 4 + 8 * k)
        var out = [Float](repeating: 0, count: expectedCount)
        var previous = -1
        var indices = [Int](repeating: 0, count: k)
        for j in 0..<k {
            let i = Int(try r.u32("index"))
            guard i > previous, i < expectedCount else { throw LearnerError.badEncoding("index \(i) out of order or out of range") }
            indices[j] = i
            previous = i
        }
        for j in 0..<k {
            let v = try r.f32("value")
            guard v.isFinite else { throw LearnerError.badEncoding("value at index \(indices[j]) is \(v)") }
            out[indices[j]] = v
        }
        return out
    }
}

/// Error feedback (Seide et al. 2014; Karimireddy et al. 2019): what compression dropped is
/// kept as a residual and added to the next delta, so nothing is lost for good and the sum of
/// decoded deltas tracks the sum of true deltas to within one residual.
public struct ErrorFeedback: Sendable {
    public let codec: any DeltaCodec
    /// What has been dropped so far and not yet sent.
    public private(set) var residual: [Float]

    public init(codec: any DeltaCodec, count: Int) {
        self.codec = codec
        residual = [Float](repeating: 0, count: count)
    }

    /// Encodes `delta` plus the residual; returns the bytes, what the receiver will decode, and
    /// the size report. Keeps the new residual (compensated − decoded).
    public mutating func encode(_ delta: [Float]) throws -> (bytes: [UInt8], decoded: [Float], report: CodecReport) {
        guard delta.count == residual.count else {
            throw LearnerError.shapeMismatch("error feedback holds \(residual.count) values, delta has \(delta.count)")
        }
        var compensated = delta
        try VectorMath.axpy(1, residual, &compensated)
        let bytes = codec.encode(compensated)
        let decoded = try codec.decode(bytes, expectedCount: delta.count)
        residual = try VectorMath.difference(compensated, decoded)
        return (bytes, decoded, CodecReport(count: delta.count, encodedBytes: bytes.count))
    }
}
