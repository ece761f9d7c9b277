import Crypto

/// Which artefact of a release a chunk belongs to.
public enum ReleasePart: UInt8, Sendable, Hashable, Comparable {
    case file = 0, delta = 1
    public static func < (a: ReleasePart, b: ReleasePart) -> Bool { a.rawValue < b.rawValue }
}

/// The messages of model distribution. They travel over the authenticated session of the
/// peer they are for (``SecureWire``); manifests and rollback notices carry their
/// publisher's signature, chunks are checked against the manifest's hashes.
public enum ReleaseMessage: Sendable, Equatable {
    /// What the sender holds: one entry per release (complete or not), and every rollback
    /// notice it keeps. `reply` marks the answer to a summary, which is not answered again.
    case summary(held: [Held], rollbacks: [RollbackNotice], reply: Bool)
    /// Asks for a release's manifest.
    case manifestRequest(ReleaseKey)
    case manifest(ReleaseManifest)
    /// Asks for one chunk of an artefact.
    case chunkRequest(ReleaseKey, ReleasePart, index: Int)
    case chunk(ReleaseKey, ReleasePart, index: Int, bytes: [UInt8])

    /// One release a peer holds.
    public struct Held: Sendable, Equatable {
        public var key: ReleaseKey
        /// Whether it holds every chunk (and so serves them).
        public var complete: Bool

        public init(key: ReleaseKey, complete: Bool) {
            self.key = key
            self.complete = complete
        }
    }

    /// Most entries of a summary, and most rollback notices in it.
    public static let maxHeld = 256
    public static let maxRollbacks = 256

    enum Kind: UInt8 { case summary = 1, manifestRequest = 2, manifest = 3, chunkRequest = 4, chunk = 5 }

    /// Encoding: u8 kind, then (big-endian) — summary: u8 reply · u16 count · count × (key · u8
    /// complete) · u16 count · count × rollback notice (u32 length · notice); manifest
    /// request: key; manifest: the manifest; chunk request: key · u8 part · u32 index; chunk:
    /// key · u8 part · u32 index · u32 length · bytes. A key is name (u16 length · UTF-8) · u64 version.
    public var encoded: [UInt8] {
        var w = ByteWriter(capacity: wireSize)
        switch self {
        case let .summary(held, rollbacks, reply):
            w.write(Kind.summary.rawValue)
            w.write(UInt8(reply ? 1 : 0))
            w.writeUInt16(UInt16(truncatingIfNeeded: held.count))
            for h in held {
                Self.write(h.key, &w)
                w.write(UInt8(h.complete ? 1 : 0))
            }
            w.writeUInt16(UInt16(truncatingIfNeeded: rollbacks.count))
            for r in rollbacks { w.writeLengthPrefixed(r.encoded) }
        case let .manifestRequest(key):
            w.write(Kind.manifestRequest.rawValue)
            Self.write(key, &w)
        case let .manifest(m):
            w.write(Kind.manifest.rawValue)
            w.write(bytes: m.encoded)
        case let .chunkRequest(key, part, index):
            w.write(Kind.chunkRequest.rawValue)
            Self.write(key, &w)
            w.write(part.rawValue)
            w.writeUInt32(UInt32(truncatingIfNeeded: index))
        case let .chunk(key, part, index, bytes):
            w.write(Kind.chunk.rawValue)
            Self.write(key, &w)
            w.write(part.rawValue)
            w.writeUInt32(UInt32(truncatingIfNeeded: index))
            w.writeLengthPrefixed(bytes)
        }
        return w.bytes
    }

    /// Bytes of the encoding.
    public var wireSize: Int {
        switch self {
        case let .summary(held, rollbacks, _): return 6 + held.reduce(0) { $0 + 11 + $1.key.name.utf8.count } + rollbacks.count * 180
        case let .manifestRequest(key): return 11 + key.name.utf8.count
        case let .manifest(m): return 1 + 260 + 32 * (m.file.chunkHashes.count + (m.delta?.artefact.chunkHashes.count ?? 0))
        case let .chunkRequest(key, _, _): return 16 + key.name.utf8.count
        case let .chunk(key, _, _, bytes): return 20 + key.name.utf8.count + bytes.count
        }
    }

    /// Parses a message; every count and length is bounded before anything is allocated.
    public init(decoding bytes: [UInt8]) throws(WireError) {
        var r = ByteReader(bytes)
        let kind = try r.readUInt8("release message kind")
        switch Kind(rawValue: kind) {
        case .summary:
            let reply = try Self.readFlag(&r, "reply")
            let count = Int(try r.readUInt16("held count"))
            guard count <= Self.maxHeld else { throw .lengthTooLarge(field: "held releases", declared: UInt64(count), maximum: Self.maxHeld) }
            var held: [Held] = []
            for _ in 0..<count {
                let key = try Self.readKey(&r)
                held.append(Held(key: key, complete: try Self.readFlag(&r, "complete")))
            }
            let rollbackCount = Int(try r.readUInt16("rollback count"))
            guard rollbackCount <= Self.maxRollbacks else {
                throw .lengthTooLarge(field: "rollback notices", declared: UInt64(rollbackCount), maximum: Self.maxRollbacks)
            }
            var rollbacks: [RollbackNotice] = []
            for _ in 0..<rollbackCount { rollbacks.append(try RollbackNotice(decoding: try r.readLengthPrefixed(maximum: 512, "rollback notice"))) }
            self = .summary(held: held, rollbacks: rollbacks, reply: reply)
        case .manifestRequest:
            self = .manifestRequest(try Self.readKey(&r))
        case .manifest:
            self = .manifest(try ReleaseManifest(reading: &r))
        case .chunkRequest:
            let key = try Self.readKey(&r)
            let part = try Self.readPart(&r)
            self = .chunkRequest(key, part, index: Int(try r.readUInt32("chunk index")))
        case .chunk:
            let key = try Self.readKey(&r)
            let part = try Self.readPart(&r)
            let index = Int(try r.readUInt32("chunk index"))
            self = .chunk(key, part, index: index, bytes: try r.readLengthPrefixed(maximum: ReleaseManifest.chunkSizes.upperBound, allowEmpty: false, "chunk"))
        case nil:
            throw .invalidValue(field: "release message kind", reason: "unknown kind \(kind)")
        }
        try r.expectEnd()
    }

    private static func write(_ key: ReleaseKey, _ w: inout ByteWriter) { key.write(to: &w) }

    private static func readKey(_ r: inout ByteReader) throws(WireError) -> ReleaseKey { try ReleaseKey(reading: &r) }

    /// A byte that is 0 or 1, nothing else: the encoding stays canonical.
    private static func readFlag(_ r: inout ByteReader, _ field: String) throws(WireError) -> Bool {
        switch try r.readUInt8(field) {
        case 0: return false
        case 1: return true
        case let other: throw .invalidValue(field: field, reason: "\(other), expected 0 or 1")
        }
    }

    private static func readPart(_ r: inout ByteReader) throws(WireError) -> ReleasePart {
        let raw = try r.readUInt8("part")
        guard let part = ReleasePart(rawValue: raw) else { throw .invalidValue(field: "part", reason: "\(raw), expected 0 (file) or 1 (delta)") }
        return part
    }
}
