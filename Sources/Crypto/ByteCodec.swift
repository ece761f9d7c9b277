/// Errors from decoding untrusted bytes. Decoders built on ``ByteReader`` never trap:
/// every failure is one of these.
public enum WireError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The input ended before a field was complete.
    case truncated(field: String, needed: Int, available: Int)
    /// A declared length exceeds the configured maximum; nothing was allocated.
    case lengthTooLarge(field: String, declared: UInt64, maximum: Int)
    /// A length or count that must be positive was zero.
    case zeroLength(field: String)
    /// A field held a value the format does not allow.
    case invalidValue(field: String, reason: String)
    /// The message carries a version this code does not speak.
    case unsupportedVersion(UInt8)
    /// The message type byte is not the one expected here.
    case unexpectedType(expected: UInt8, actual: UInt8)
    /// Bytes were left over after a complete message.
    case trailingBytes(count: Int)

    public var description: String {
        switch self {
        case let .truncated(field, needed, available): return "truncated \(field): needs \(needed) bytes, \(available) left"
        case let .lengthTooLarge(field, declared, maximum): return "\(field) declares \(declared) bytes, maximum is \(maximum)"
        case let .zeroLength(field): return "\(field) must not be empty"
        case let .invalidValue(field, reason): return "invalid \(field): \(reason)"
        case let .unsupportedVersion(v): return "unsupported wire version \(v)"
        case let .unexpectedType(expected, actual): return "expected message type \(expected), got \(actual)"
        case let .trailingBytes(count): return "\(count) unexpected bytes after the message"
        }
    }
}

/// Reads big-endian integers and bounded byte strings from untrusted input.
///
/// Every read checks the remaining length first and throws ``WireError`` instead of trapping;
/// every variable-length read takes a maximum that is checked before anything is allocated.
public struct ByteReader {
    /// The whole input.
    public let bytes: [UInt8]
    /// Index of the next unread byte.
    public private(set) var offset: Int

    /// A reader over `bytes`, starting at the beginning.
    public init(_ bytes: [UInt8]) {
        self.bytes = bytes
        self.offset = 0
    }

    /// A reader over a slice or other collection (copied once).
    public init(_ bytes: some Collection<UInt8>) {
        self.init(bytes.withContiguousStorageIfAvailable { Array($0) } ?? Array(bytes))
    }

    /// Bytes not yet read.
    public var remaining: Int { bytes.count - offset }
    /// True when every byte has been read.
    public var isAtEnd: Bool { offset == bytes.count }

    private mutating func need(_ n: Int, _ field: String) throws(WireError) {
        guard n >= 0, n <= remaining else { throw .truncated(field: field, needed: n, available: remaining) }
    }

    /// One byte.
    public mutating func readUInt8(_ field: String = "u8") throws(WireError) -> UInt8 {
        try need(1, field)
        defer { offset += 1 }
        return bytes[offset]
    }

    /// A big-endian unsigned integer of `T`'s width.
    public mutating func readInteger<T: FixedWidthInteger & UnsignedInteger>(_ type: T.Type = T.self, _ field: String = "integer") throws(WireError) -> T {
        let width = T.bitWidth / 8
        try need(width, field)
        var v: T = 0
        for i in 0..<width { v = v << 8 | T(bytes[offset + i]) }
        offset += width
        return v
    }

    /// Big-endian `UInt16`.
    public mutating func readUInt16(_ field: String = "u16") throws(WireError) -> UInt16 { try readInteger(UInt16.self, field) }
    /// Big-endian `UInt32`.
    public mutating func readUInt32(_ field: String = "u32") throws(WireError) -> UInt32 { try readInteger(UInt32.self, field) }
    /// Big-endian `UInt64`.
    public mutating func readUInt64(_ field: String = "u64") throws(WireError) -> UInt64 { try readInteger(UInt64.self, field) }

    /// Exactly `count` bytes.
    public mutating func readBytes(_ count: Int, _ field: String = "bytes") throws(WireError) -> [UInt8] {
        try need(count, field)
        defer { offset += count }
        return Array(bytes[offset..<offset + count])
    }

    /// Exactly `count` bytes as a slice of the input, without copying.
    public mutating func readSlice(_ count: Int, _ field: String = "bytes") throws(WireError) -> ArraySlice<UInt8> {
        try need(count, field)
        defer { offset += count }
        return bytes[offset..<offset + count]
    }

    /// A byte string preceded by a big-endian `UInt32` length, which must be ≤ `maximum`
    /// (checked before allocating) and, unless `allowEmpty`, non-zero.
    public mutating func readLengthPrefixed(maximum: Int, allowEmpty: Bool = true, _ field: String = "bytes") throws(WireError) -> [UInt8] {
        let n = try readUInt32(field + " length")
        guard UInt64(n) <= UInt64(max(0, maximum)) else { throw .lengthTooLarge(field: field, declared: UInt64(n), maximum: maximum) }
        if n == 0 && !allowEmpty { throw .zeroLength(field: field) }
        return try readBytes(Int(n), field)
    }

    /// A UTF-8 string preceded by a `UInt16` length (≤ `maximum`).
    public mutating func readString(maximum: Int, _ field: String = "string") throws(WireError) -> String {
        let n = try readUInt16(field + " length")
        guard Int(n) <= maximum else { throw .lengthTooLarge(field: field, declared: UInt64(n), maximum: maximum) }
        let raw = try readSlice(Int(n), field)
        guard let s = String(validating: raw, as: UTF8.self) else { throw .invalidValue(field: field, reason: "not UTF-8") }
        return s
    }

    /// Skips `count` bytes.
    public mutating func skip(_ count: Int, _ field: String = "bytes") throws(WireError) {
        try need(count, field)
        offset += count
    }

    /// Throws unless every byte has been read.
    public func expectEnd() throws(WireError) {
        guard isAtEnd else { throw .trailingBytes(count: remaining) }
    }
}

/// Appends big-endian integers and byte strings to a growing buffer.
public struct ByteWriter {
    /// The bytes written so far.
    public private(set) var bytes: [UInt8]

    /// An empty writer with room for `capacity` bytes.
    public init(capacity: Int = 64) {
        bytes = []
        bytes.reserveCapacity(capacity)
    }

    /// Number of bytes written.
    public var count: Int { bytes.count }

    /// One byte.
    public mutating func write(_ v: UInt8) { bytes.append(v) }

    /// A big-endian unsigned integer.
    public mutating func write<T: FixedWidthInteger & UnsignedInteger>(_ v: T) {
        let width = T.bitWidth / 8
        for i in stride(from: width - 1, through: 0, by: -1) { bytes.append(UInt8(truncatingIfNeeded: v >> (8 * i))) }
    }

    /// Big-endian `UInt16`.
    public mutating func writeUInt16(_ v: UInt16) { write(v) }
    /// Big-endian `UInt32`.
    public mutating func writeUInt32(_ v: UInt32) { write(v) }
    /// Big-endian `UInt64`.
    public mutating func writeUInt64(_ v: UInt64) { write(v) }

    /// Raw bytes, no length.
    public mutating func write(bytes more: some Collection<UInt8>) { appendFast(more) }

    /// Appends with one `memcpy` when `more` is contiguous (arrays, slices, buffers): a generic
    /// element-by-element append across module boundaries is an order of magnitude slower.
    private mutating func appendFast(_ more: some Collection<UInt8>) {
        let done: Void? = more.withContiguousStorageIfAvailable { bytes.append(contentsOf: $0) }
        if done == nil { bytes.append(contentsOf: more) }
    }

    /// Raw bytes from memory, no length.
    public mutating func write(raw more: UnsafeRawBufferPointer) { bytes.append(contentsOf: more.assumingMemoryBound(to: UInt8.self)) }

    /// A big-endian `UInt32` length followed by the bytes. The caller keeps `more` below 4 GiB
    /// (every caller bounds its fields far lower).
    public mutating func writeLengthPrefixed(_ more: some Collection<UInt8>) {
        write(UInt32(truncatingIfNeeded: more.count))
        appendFast(more)
    }

    /// A `UInt16` length followed by the UTF-8 bytes (the caller keeps it below 64 KiB).
    public mutating func writeString(_ s: String) {
        let utf8 = Array(s.utf8)
        write(UInt16(truncatingIfNeeded: utf8.count))
        bytes.append(contentsOf: utf8)
    }

    /// Overwrites a big-endian `UInt32` at `offset` (for lengths known only after writing the body).
    public mutating func patchUInt32(_ v: UInt32, at offset: Int) {
        for i in 0..<4 { bytes[offset + i] = UInt8(truncatingIfNeeded: v >> (8 * (3 - i))) }
    }
}
