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
/// past the dimension are zero) ‖ per carried coordinate, ascending, its value share (f32
/// bits) ‖ per carried coordinate its weight share ω (f32 bits, positive and finite). A value
/// share `s` moves the mass `s · 2^⌊log₂ ω⌋` (``PushSumAverager/scale(forWeight:)``), so it has
/// the magnitude of the estimate and sender and receiver agree on the mass to the last bit.
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

    /// Payload bytes of a share of `count` coordinates out of `dimension`.
    public static func byteCount(carrying count: Int, of dimension: Int) -> Int { (dimension + 7) / 8 + 8 * count }

    /// The payload of this share of a `dimension`-element vector.
    public func encoded(dimension: Int) -> [UInt8] {
        let bitmapBytes = (dimension + 7) / 8
        return [UInt8](unsafeUninitializedCapacity: Self.byteCount(carrying: indices.count, of: dimension)) { buffer, initialized in
            let raw = UnsafeMutableRawBufferPointer(buffer)
            raw.initializeMemory(as: UInt8.self, repeating: 0)
            for i in indices { buffer[i >> 3] |= 1 << UInt8(i & 7) }
            var offset = bitmapBytes
            for v in values {
                raw.storeBytes(of: v.bitPattern.bigEndian, toByteOffset: offset, as: UInt32.self)
                offset += 4
            }
            for x in weights {
                raw.storeBytes(of: x.bitPattern.bigEndian, toByteOffset: offset, as: UInt32.self)
                offset += 4
            }
            initialized = buffer.count
        }
    }

    /// Reads a share of a `dimension`-element vector, refusing a wrong length, stray bitmap
    /// bits, non-finite values and weights that are not positive and finite.
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
        let expected = Self.byteCount(carrying: indices.count, of: dimension)
        guard bytes.count == expected else {
            throw .badPayload("sparse share carrying \(indices.count) coordinates has \(bytes.count) bytes, expected \(expected)")
        }
        let count = indices.count
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
            return (floats(from: bitmapBytes), floats(from: bitmapBytes + 4 * count))
        }
        if let bad = values.indices.first(where: { !values[$0].isFinite }) {
            throw .badPayload("sparse share's value at coordinate \(indices[bad]) is \(values[bad])")
        }
        if let bad = weights.indices.first(where: { !(weights[$0].isFinite && weights[$0] > 0) }) {
            throw .badPayload("sparse share's weight at coordinate \(indices[bad]) is \(weights[bad]); weights are positive and finite")
        }
        self.init(indices: indices, values: values, weights: weights)
    }
}
