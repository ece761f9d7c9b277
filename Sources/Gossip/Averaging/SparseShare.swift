import Crypto

/// The payload of a sparse push-sum transfer: some coordinates of the vector, each with its
/// own weight share (``PushSumAverager`` with a codec that has a ``SparseSelection``).
///
/// Every coordinate is its own push-sum: it has a value `v_c` and a weight `w_c`, and a
/// transfer moves `(m_c, ω_c)` of the coordinates it carries, nothing of the others. The
/// receiver adds exactly what the sender took out, coordinate by coordinate, so the invariant
/// of docs/averaging.md holds for each coordinate under any choice of coordinates, and what a
/// transfer leaves out simply stays with the sender (error feedback without a residual).
///
/// Encoding (big-endian, like the project's other formats): a bitmap of the carried
/// coordinates (`⌈dimension / 8⌉` bytes; coordinate `i` is bit `i % 8` of byte `i / 8`; bits
/// past the dimension are zero), then one of two layouts, told apart by the length:
/// - **coded weights** (`bitmap + 2 + 5k` bytes for `k` coordinates): a base exponent `E` (i16,
///   −126 ≤ E ≤ 112) ‖ per carried coordinate, ascending, its value share (f32 bits) ‖ per
///   carried coordinate one weight code `c`: the weight share `(16 + c & 15) · 2^(E + c >> 4 − 4)`,
///   in [2^E, 2^(E+16)) with 5 significant bits. A sender rounds its weight shares down to codes
///   (``codedWeight(_:base:)``), which push-sum allows: any share of the weight may move, as
///   long as the value moves with it and both ends agree on it to the last bit;
/// - **float weights** (`bitmap + 8k` bytes), for weights no code fits (a hand-off moves each
///   coordinate's whole weight): per carried coordinate its value share (f32 bits) ‖ per carried
///   coordinate its weight share ω (f32 bits, positive and finite).
///
/// A value share `s` moves the mass `s · 2^⌊log₂ ω⌋` (``PushSumAverager/scale(forWeight:)``), so
/// it has the magnitude of the estimate and sender and receiver agree on the mass to the last bit.
public struct SparseShare: Sendable, Equatable {
    /// Coordinates carried, ascending.
    public var indices: [Int]
    /// Value shares, one per carried coordinate.
    public var values: [Float]
    /// Weight shares, one per carried coordinate.
    public var weights: [Float]

    public init(indices: [Int], values: [Float], weights: [Float]) {
        self.indices = indices
        self.values = values
        self.weights = weights
    }

    /// Payload bytes of a share of `count` coordinates out of `dimension`, with coded weights
    /// or with float weights.
    public static func byteCount(carrying count: Int, of dimension: Int, codedWeights: Bool = true) -> Int {
        (dimension + 7) / 8 + (codedWeights ? 2 + 5 * count : 8 * count)
    }

    /// Bounds of a coded share's base exponent: every code is then a normal, finite `Float`.
    static let codeBases = -126...112

    /// The base exponent for a share whose largest weight share is `largest` (positive, normal):
    /// its codes then reach 16 octaves down from the octave of `largest`.
    public static func codeBase(forLargest largest: Float) -> Int {
        min(max(Int(largest.exponent) - 15, codeBases.lowerBound), codeBases.upperBound)
    }

    /// `omega` rounded down to a weight code above `base`, at most 1/16 below it; the largest
    /// code if `omega` is above them all; nil if it is below 2^base or not positive and normal.
    public static func codedWeight(_ omega: Float, base: Int) -> Float? {
        guard omega.isNormal, omega > 0 else { return nil }
        let octave = Int(omega.exponent) - base
        guard octave >= 0 else { return nil }
        guard octave <= 15 else { return weight(ofCode: 0xFF, base: base) }
        let sixteenths = UInt8(((omega.significand - 1) * 16).rounded(.down))
        return weight(ofCode: UInt8(octave << 4) | sixteenths, base: base)
    }

    /// The code of `weight` above `base`, nil if `weight` is not a code.
    static func code(of weight: Float, base: Int) -> UInt8? {
        guard weight.isNormal, weight > 0 else { return nil }
        let octave = Int(weight.exponent) - base
        let sixteenths = (weight.significand - 1) * 16
        guard (0...15).contains(octave), sixteenths == sixteenths.rounded(.down) else { return nil }
        return UInt8(octave << 4) | UInt8(sixteenths)
    }

    /// The weight that `code` stands for above `base`.
    static func weight(ofCode code: UInt8, base: Int) -> Float {
        Float(sign: .plus, exponent: base + Int(code >> 4) - 4, significand: Float(16 + Int(code & 15)))
    }

    /// The codes of the weights above the base of the largest, nil if one of them is no code.
    private func weightCodes() -> (base: Int, codes: [UInt8])? {
        guard let largest = weights.max(), largest.isNormal, largest > 0 else { return nil }
        let base = Self.codeBase(forLargest: largest)
        var codes: [UInt8] = []
        codes.reserveCapacity(weights.count)
        for w in weights {
            guard let code = Self.code(of: w, base: base) else { return nil }
            codes.append(code)
        }
        return (base, codes)
    }

    /// The payload of this share of a `dimension`-element vector: with coded weights when every
    /// weight is a code above the base of the largest, with float weights otherwise.
    public func encoded(dimension: Int) -> [UInt8] {
        let bitmapBytes = (dimension + 7) / 8
        let coded = weightCodes()
        return [UInt8](unsafeUninitializedCapacity: Self.byteCount(carrying: indices.count, of: dimension, codedWeights: coded != nil)) { buffer, initialized in
            let raw = UnsafeMutableRawBufferPointer(buffer)
            raw.initializeMemory(as: UInt8.self, repeating: 0)
            for i in indices { buffer[i >> 3] |= 1 << UInt8(i & 7) }
            var offset = bitmapBytes
            if let coded {
                raw.storeBytes(of: Int16(coded.base).bigEndian, toByteOffset: offset, as: Int16.self)
                offset += 2
            }
            for v in values {
                raw.storeBytes(of: v.bitPattern.bigEndian, toByteOffset: offset, as: UInt32.self)
                offset += 4
            }
            if let coded {
                for code in coded.codes {
                    buffer[offset] = code
                    offset += 1
                }
            } else {
                for x in weights {
                    raw.storeBytes(of: x.bitPattern.bigEndian, toByteOffset: offset, as: UInt32.self)
                    offset += 4
                }
            }
            initialized = buffer.count
        }
    }

    /// Reads a share of a `dimension`-element vector, refusing a wrong length, stray bitmap
    /// bits, non-finite values, weights that are not positive and finite, and any encoding
    /// but the one ``encoded(dimension:)`` gives.
    public init(decoding bytes: [UInt8], dimension: Int) throws(AveragingError) {
        let bitmapBytes = (dimension + 7) / 8
        guard bytes.count >= bitmapBytes else { throw .badPayload("sparse share of \(bytes.count) bytes, shorter than its \(bitmapBytes)-byte bitmap") }
        var indices: [Int] = []
        for byte in 0..<bitmapBytes where bytes[byte] != 0 {
            var bits = bytes[byte]
            while bits != 0 {
                let i = byte * 8 + bits.trailingZeroBitCount
                guard i < dimension else { throw .badPayload("sparse share marks coordinate \(i) of \(dimension)") }
                indices.append(i)
                bits &= bits - 1
            }
        }
        let count = indices.count
        let codedBytes = Self.byteCount(carrying: count, of: dimension), floatBytes = Self.byteCount(carrying: count, of: dimension, codedWeights: false)
        guard bytes.count == codedBytes || bytes.count == floatBytes else {
            throw .badPayload("sparse share carrying \(count) coordinates has \(bytes.count) bytes, expected \(codedBytes) (coded weights) or \(floatBytes)")
        }
        let coded = bytes.count == codedBytes
        let base = coded ? Int(Int16(bitPattern: UInt16(bytes[bitmapBytes]) << 8 | UInt16(bytes[bitmapBytes + 1]))) : 0
        guard !coded || Self.codeBases.contains(base) else {
            throw .badPayload("sparse share's weight codes have base exponent \(base), outside \(Self.codeBases)")
        }
        // Lengths are checked above: the loads stay inside the payload.
        let (values, weights) = bytes.withUnsafeBytes { raw -> ([Float], [Float]) in
            func floats(from start: Int) -> [Float] {
                [Float](unsafeUninitializedCapacity: count) { out, initialized in
                    for j in 0..<count {
                        out[j] = Float(bitPattern: UInt32(bigEndian: raw.loadUnaligned(fromByteOffset: start + 4 * j, as: UInt32.self)))
                    }
                    initialized = count
                }
            }
            guard coded else { return (floats(from: bitmapBytes), floats(from: bitmapBytes + 4 * count)) }
            let codes = bitmapBytes + 2 + 4 * count
            return (floats(from: bitmapBytes + 2), (0..<count).map { Self.weight(ofCode: raw[codes + $0], base: base) })
        }
        if let bad = values.indices.first(where: { !values[$0].isFinite }) {
            throw .badPayload("sparse share's value at coordinate \(indices[bad]) is \(values[bad])")
        }
        if let bad = weights.indices.first(where: { !(weights[$0].isFinite && weights[$0] > 0) }) {
            throw .badPayload("sparse share's weight at coordinate \(indices[bad]) is \(weights[bad]); weights are positive and finite")
        }
        self.init(indices: indices, values: values, weights: weights)
        // One encoding per share: the layout and base that ``encoded(dimension:)`` picks.
        if coded {
            guard let largest = weights.max() else { throw .badPayload("sparse share with coded weights carries no coordinate") }
            let canonical = Self.codeBase(forLargest: largest)
            guard base == canonical else { throw .badPayload("sparse share's weight codes have base exponent \(base); its largest weight's is \(canonical)") }
        } else if count > 0, weightCodes() != nil {
            throw .badPayload("sparse share sends as floats weights that are all codes; they travel coded")
        }
    }
}
