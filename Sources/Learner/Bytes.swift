#if _endian(big)
#error("Model files and encoded deltas are little-endian; this code copies floats as they lie in memory.")
#endif

/// Appends little-endian fields to a byte buffer.
struct ByteWriter {
    var bytes: [UInt8] = []

    init(capacity: Int = 0) { bytes.reserveCapacity(capacity) }

    mutating func u8(_ v: UInt8) { bytes.append(v) }
    mutating func u16(_ v: UInt16) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u32(_ v: UInt32) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func u64(_ v: UInt64) { withUnsafeBytes(of: v.littleEndian) { bytes.append(contentsOf: $0) } }
    mutating func f32(_ v: Float) { u32(v.bitPattern) }
    mutating func raw(_ v: [UInt8]) { bytes.append(contentsOf: v) }
    /// Appends a whole float array in one copy.
    mutating func floats(_ v: [Float]) { v.withUnsafeBytes { bytes.append(contentsOf: $0) } }

    /// A sparse layer's bitmap: bit i % 8 of byte i / 8 set when `isStored(values[i])`.
    mutating func bitmap<C: Collection>(_ values: C, isStored: (C.Element) -> Bool) {
        var bits = [UInt8](repeating: 0, count: (values.count + 7) / 8)
        for (i, v) in values.enumerated() where isStored(v) { bits[i >> 3] |= 1 << (i & 7) }
        raw(bits)
    }
}

/// Reads little-endian fields from untrusted bytes; every read is bounds-checked and a short
/// buffer throws instead of trapping.
struct ByteReader {
    let bytes: [UInt8]
    private(set) var offset = 0
    /// Builds the error for a failed read, given what was being read.
    let fail: (String) -> LearnerError

    init(_ bytes: [UInt8], fail: @escaping (String) -> LearnerError) {
        self.bytes = bytes
        self.fail = fail
    }

    var remaining: Int { bytes.count - offset }

    private mutating func take(_ n: Int, _ what: String) throws -> ArraySlice<UInt8> {
        guard n >= 0, n <= remaining else { throw fail("truncated while reading \(what) at byte \(offset) (\(n) bytes needed, \(remaining) left)") }
        defer { offset += n }
        return bytes[offset..<(offset + n)]
    }

    private mutating func integer<T: FixedWidthInteger>(_: T.Type, _ what: String) throws -> T {
        let s = try take(MemoryLayout<T>.size, what)
        var v: T = 0
        for (i, b) in s.enumerated() { v |= T(b) << (8 * i) }
        return v
    }

    mutating func u8(_ what: String) throws -> UInt8 { try integer(UInt8.self, what) }
    mutating func u16(_ what: String) throws -> UInt16 { try integer(UInt16.self, what) }
    mutating func u32(_ what: String) throws -> UInt32 { try integer(UInt32.self, what) }
    mutating func u64(_ what: String) throws -> UInt64 { try integer(UInt64.self, what) }
    mutating func f32(_ what: String) throws -> Float { Float(bitPattern: try u32(what)) }
    mutating func raw(_ n: Int, _ what: String) throws -> ArraySlice<UInt8> { try take(n, what) }

    /// `count` floats in one copy; the caller has bounded `count` before calling.
    mutating func floats(_ count: Int, _ what: String) throws -> [Float] {
        let (size, overflow) = count.multipliedReportingOverflow(by: 4)
        guard !overflow else { throw fail("\(what): count \(count) is too large") }
        let s = try take(size, what)
        var out = [Float](repeating: 0, count: count)
        out.withUnsafeMutableBytes { dst in s.withUnsafeBytes { dst.copyMemory(from: $0) } }
        return out
    }
}
