/// A running 64-bit FNV-1a hash of every message event (delivered or dropped) of a run:
/// two runs with equal hashes saw the same events at the same virtual times.
public struct TraceHash: Sendable, Hashable, CustomStringConvertible {
    /// FNV-1a 64-bit offset basis and prime (Fowler, Noll, Vo).
    static let offsetBasis: UInt64 = 0xCBF2_9CE4_8422_2325
    static let prime: UInt64 = 0x0000_0100_0000_01B3

    public private(set) var value: UInt64 = offsetBasis

    public init() {}

    /// Mixes the eight bytes of `word`, least significant first.
    public mutating func mix(_ word: UInt64) {
        var h = value
        var w = word
        for _ in 0..<8 {
            h = (h ^ (w & 0xFF)) &* Self.prime
            w >>= 8
        }
        value = h
    }

    /// Mixes one message event: when, between whom, what happened (`kind`: delivered or the
    /// drop reason), its size and the message's ``TraceIdentified/traceWord``.
    mutating func mixEvent(time: Int64, from: Int, to: Int, kind: UInt8, size: Int, message: UInt64) {
        mix(UInt64(bitPattern: time))
        mix(UInt64(UInt32(truncatingIfNeeded: from)) << 32 | UInt64(UInt32(truncatingIfNeeded: to)))
        mix(UInt64(kind) << 56 | UInt64(UInt32(truncatingIfNeeded: size)))
        mix(message)
    }

    public var description: String {
        let hex = String(value, radix: 16)
        return String(repeating: "0", count: 16 - hex.count) + hex
    }
}
