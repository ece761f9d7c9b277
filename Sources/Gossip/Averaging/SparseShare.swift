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
        var bitmap = [UInt8](repeating: 0, count: (dimension + 7) / 8)
        for i in indices { bitmap[i >> 3] |= 1 << UInt8(i & 7) }
        var w = ByteWriter(capacity: Self.byteCount(carrying: indices.count, of: dimension))
        w.write(bytes: bitmap)
        for v in values { w.writeUInt32(v.bitPattern) }
        for x in weights { w.writeUInt32(x.bitPattern) }
        return w.bytes
    }

    /// Reads a share of a `dimension`-element vector, refusing a wrong length, stray bitmap
    /// bits, non-finite values and weights that are not positive and finite.
    public init(decoding bytes: [UInt8], dimension: Int) throws(AveragingError) {
        let bitmapBytes = (dimension + 7) / 8
        guard bytes.count >= bitmapBytes else { throw .badPayload("sparse share of \(bytes.count) bytes, shorter than its \(bitmapBytes)-byte bitmap") }
        var indices: [Int] = []
        for byte in 0..<bitmapBytes where bytes[byte] != 0 {
            for bit in 0..<8 where bytes[byte] & (1 << UInt8(bit)) != 0 {
                let i = byte * 8 + bit
                guard i < dimension else { throw .badPayload("sparse share marks coordinate \(i) of \(dimension)") }
                indices.append(i)
            }
        }
        let expected = Self.byteCount(carrying: indices.count, of: dimension)
        guard bytes.count == expected else {
            throw .badPayload("sparse share carrying \(indices.count) coordinates has \(bytes.count) bytes, expected \(expected)")
        }
        var r = ByteReader(bytes[bitmapBytes...])
        var values: [Float] = []
        var weights: [Float] = []
        values.reserveCapacity(indices.count)
        weights.reserveCapacity(indices.count)
        do {
            for _ in indices { values.append(Float(bitPattern: try r.readUInt32("value share"))) }
            for _ in indices { weights.append(Float(bitPattern: try r.readUInt32("weight share"))) }
        } catch {
            throw .wire(error)
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
