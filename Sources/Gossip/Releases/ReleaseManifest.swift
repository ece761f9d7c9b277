import Crypto

/// Which release: a model name and a version (higher is newer).
public struct ReleaseKey: Hashable, Comparable, Sendable, CustomStringConvertible {
    public let name: String
    public let version: UInt64

    public init(name: String, version: UInt64) {
        self.name = name
        self.version = version
    }

    public static func < (a: ReleaseKey, b: ReleaseKey) -> Bool { (a.name, a.version) < (b.name, b.version) }
    public var description: String { "\(name) v\(version)" }

    /// Longest model name.
    public static let maxNameBytes = 64

    /// A key as every release encoding writes it: name (u16 length · UTF-8) · u64 version.
    func write(to w: inout ByteWriter) {
        w.writeString(name)
        w.writeUInt64(version)
    }

    /// Reads a key written by ``write(to:)``, refusing a name that cannot name a release.
    init(reading r: inout ByteReader) throws(WireError) {
        let name = try r.readString(maximum: Self.maxNameBytes, "model name")
        if let problem = Self.problem(withName: name) { throw .invalidValue(field: "model name", reason: problem) }
        self.init(name: name, version: try r.readUInt64("version"))
    }

    /// Why `name` cannot name a release, or nil if it can: 1 to 64 of `A-Z a-z 0-9 . _ -`, not
    /// starting with a dot (names become directory names in a peer's data directory).
    public static func problem(withName name: String) -> String? {
        let bytes = Array(name.utf8)
        guard !bytes.isEmpty, bytes.count <= maxNameBytes else { return "a model name has 1 to \(maxNameBytes) characters, got \(bytes.count)" }
        guard bytes.allSatisfy({ b in (b >= 0x30 && b <= 0x39) || (b >= 0x41 && b <= 0x5A) || (b >= 0x61 && b <= 0x7A) || b == 0x2E || b == 0x5F || b == 0x2D }),
              bytes[0] != 0x2E else {
            return "a model name is made of letters, digits, '.', '_' and '-' and does not start with '.', got '\(name)'"
        }
        return nil
    }
}

/// The chunk hashes of one artefact of a release: the model file itself, or its delta
/// against the previous version.
public struct ReleaseArtefact: Sendable, Equatable {
    /// Bytes in all.
    public let size: Int
    /// BLAKE2b-256 of each chunk, in order.
    public let chunkHashes: [[UInt8]]

    /// The artefact of `bytes` cut into chunks of `chunkSize`.
    public init(of bytes: [UInt8], chunkSize: Int) {
        size = bytes.count
        chunkHashes = stride(from: 0, to: bytes.count, by: chunkSize).map { Blake2b.hash256(bytes[$0..<min(bytes.count, $0 + chunkSize)]) }
    }

    init(size: Int, chunkHashes: [[UInt8]]) {
        self.size = size
        self.chunkHashes = chunkHashes
    }

    /// The byte range of chunk `index`.
    public func range(of index: Int, chunkSize: Int) -> Range<Int> { (index * chunkSize)..<min(size, (index + 1) * chunkSize) }
}

/// A release's delta: how to build the model file from the previous version's file.
public struct ReleaseDelta: Sendable, Equatable {
    /// The version the delta applies to, and the BLAKE2b-256 of that version's file.
    public let baseVersion: UInt64
    public let baseHash: [UInt8]
    public let artefact: ReleaseArtefact
}

/// A model release as its publisher signed it: what the model is, the BLAKE2b-256 of its file
/// and of each chunk (so a chunk is checked before it is stored, whoever sent it), an optional
/// delta against the previous version, and the staged rollout.
///
/// Encoding (big-endian; see docs/wire.md, "Releases"): u8 format (1) · name (u16 length ·
/// UTF-8) · u64 version · publisher (32) · description (u16 length · UTF-8) · u64 published at
/// (Unix ms) · u32 chunk size · u8 canary (0–100, per cent) · u32 canary delay (s) · file hash
/// (32) · file artefact · u8 has delta · [u64 base version · base hash (32) · delta artefact] ·
/// signature (64) over everything before it in the `murmuration/release/v1` domain. An
/// artefact is u64 size · 32 × ⌈size / chunk size⌉ chunk hashes.
public struct ReleaseManifest: Sendable, Equatable {
    public let key: ReleaseKey
    public let publisher: PeerID
    /// What the model is (architecture, shape, encoding, normaliser), for listings.
    public let description: String
    /// When the publisher published it (Unix milliseconds; shown, never trusted for ordering).
    public let publishedAt: UInt64
    public let chunkSize: Int
    /// Per cent of peers (by the hash of their ID) that activate at once; the others wait
    /// `canaryDelaySeconds` after they hold the release.
    public let canaryPercent: Int
    public let canaryDelaySeconds: Int
    /// BLAKE2b-256 of the whole model file.
    public let fileHash: [UInt8]
    public let file: ReleaseArtefact
    public let delta: ReleaseDelta?
    public let signature: [UInt8]

    static let format: UInt8 = 1

    /// What a manifest and a rollback notice both start with: u8 format · key · publisher.
    static func writeHead(_ key: ReleaseKey, _ publisher: PeerID, to w: inout ByteWriter) {
        w.write(format)
        key.write(to: &w)
        w.write(bytes: publisher.bytes)
    }

    static func readHead(_ r: inout ByteReader, _ what: String) throws(WireError) -> (ReleaseKey, PeerID) {
        let found = try r.readUInt8("\(what) format")
        guard found == format else { throw .invalidValue(field: "\(what) format", reason: "format \(found); this build reads \(format)") }
        let key = try ReleaseKey(reading: &r)
        guard let publisher = PeerID(bytes: try r.readBytes(PeerID.length, "publisher")) else { throw .invalidValue(field: "publisher", reason: "not a key") }
        return (key, publisher)
    }

    /// Largest model file (and delta) a release may carry.
    public static let maxBytes = 256 << 20
    /// Chunk sizes accepted: 4 KiB to 1 MiB.
    public static let chunkSizes = (4 << 10)...(1 << 20)
    public static let maxDescriptionBytes = 512
    /// Longest canary delay: a week.
    public static let maxCanaryDelaySeconds = 7 * 86_400

    /// Signs a release of `file` by `publisher`, with a delta against `base` if given (its
    /// version and file; the delta bytes are `deltaBytes`).
    public init(key: ReleaseKey, description: String, file: [UInt8], chunkSize: Int, canaryPercent: Int, canaryDelaySeconds: Int,
                publishedAt: UInt64, delta: (baseVersion: UInt64, baseHash: [UInt8], bytes: [UInt8])?, publisher: Identity) throws(WireError) {
        let unsigned = ReleaseManifest(
            key: key, publisher: publisher.peerID, description: description, publishedAt: publishedAt, chunkSize: chunkSize,
            canaryPercent: canaryPercent, canaryDelaySeconds: canaryDelaySeconds, fileHash: Blake2b.hash256(file),
            file: ReleaseArtefact(of: file, chunkSize: chunkSize),
            delta: delta.map { ReleaseDelta(baseVersion: $0.baseVersion, baseHash: $0.baseHash, artefact: ReleaseArtefact(of: $0.bytes, chunkSize: chunkSize)) },
            signature: [])
        try Self.check(unsigned)
        self.init(key: key, publisher: publisher.peerID, description: description, publishedAt: publishedAt, chunkSize: chunkSize,
                  canaryPercent: canaryPercent, canaryDelaySeconds: canaryDelaySeconds, fileHash: unsigned.fileHash, file: unsigned.file,
                  delta: unsigned.delta, signature: publisher.sign(unsigned.signedBody, domain: .release))
    }

    private init(key: ReleaseKey, publisher: PeerID, description: String, publishedAt: UInt64, chunkSize: Int, canaryPercent: Int,
                 canaryDelaySeconds: Int, fileHash: [UInt8], file: ReleaseArtefact, delta: ReleaseDelta?, signature: [UInt8]) {
        self.key = key
        self.publisher = publisher
        self.description = description
        self.publishedAt = publishedAt
        self.chunkSize = chunkSize
        self.canaryPercent = canaryPercent
        self.canaryDelaySeconds = canaryDelaySeconds
        self.fileHash = fileHash
        self.file = file
        self.delta = delta
        self.signature = signature
    }

    /// Whether the publisher's signature holds.
    public var isSigned: Bool { publisher.verify(signature: signature, message: signedBody, domain: .release) }

    /// Whether `peer` is among the canary share that activates at once: the first 8 bytes of
    /// BLAKE2b-256(peer ‖ name ‖ version), as a fraction of 2⁶⁴, below the canary share.
    public func isCanary(_ peer: PeerID) -> Bool {
        guard canaryPercent < 100 else { return true }
        var w = ByteWriter(capacity: 96)
        w.write(bytes: peer.bytes)
        key.write(to: &w)
        let digest = Blake2b.hash256(w.bytes)
        let draw = digest.prefix(8).reduce(UInt64(0)) { $0 << 8 | UInt64($1) }
        return Double(draw) / 18_446_744_073_709_551_616.0 < Double(canaryPercent) / 100
    }

    /// The encoding, signature included.
    public var encoded: [UInt8] {
        var w = ByteWriter(capacity: signedBody.count + 64)
        w.write(bytes: signedBody)
        w.write(bytes: signature)
        return w.bytes
    }

    var signedBody: [UInt8] {
        var w = ByteWriter(capacity: 160 + 32 * (file.chunkHashes.count + (delta?.artefact.chunkHashes.count ?? 0)))
        Self.writeHead(key, publisher, to: &w)
        w.writeString(description)
        w.writeUInt64(publishedAt)
        w.writeUInt32(UInt32(chunkSize))
        w.write(UInt8(canaryPercent))
        w.writeUInt32(UInt32(canaryDelaySeconds))
        w.write(bytes: fileHash)
        Self.write(file, to: &w)
        if let delta {
            w.write(UInt8(1))
            w.writeUInt64(delta.baseVersion)
            w.write(bytes: delta.baseHash)
            Self.write(delta.artefact, to: &w)
        } else {
            w.write(UInt8(0))
        }
        return w.bytes
    }

    private static func write(_ a: ReleaseArtefact, to w: inout ByteWriter) {
        w.writeUInt64(UInt64(a.size))
        for h in a.chunkHashes { w.write(bytes: h) }
    }

    /// Parses a manifest (the signature is checked by the caller, who knows whom it trusts).
    public init(decoding bytes: [UInt8]) throws(WireError) {
        var r = ByteReader(bytes)
        try self.init(reading: &r)
        try r.expectEnd()
    }

    init(reading r: inout ByteReader) throws(WireError) {
        let (key, publisher) = try Self.readHead(&r, "release")
        let description = try r.readString(maximum: Self.maxDescriptionBytes, "description")
        let publishedAt = try r.readUInt64("published at")
        let chunkSize = Int(try r.readUInt32("chunk size"))
        guard Self.chunkSizes.contains(chunkSize) else { throw .invalidValue(field: "chunk size", reason: "\(chunkSize) bytes, outside \(Self.chunkSizes)") }
        let canary = Int(try r.readUInt8("canary share"))
        let delay = Int(try r.readUInt32("canary delay"))
        let fileHash = try r.readBytes(32, "file hash")
        let file = try Self.readArtefact(&r, chunkSize: chunkSize, field: "file")
        var delta: ReleaseDelta?
        switch try r.readUInt8("has delta") {
        case 0: break
        case 1:
            let baseVersion = try r.readUInt64("base version")
            let baseHash = try r.readBytes(32, "base hash")
            delta = ReleaseDelta(baseVersion: baseVersion, baseHash: baseHash, artefact: try Self.readArtefact(&r, chunkSize: chunkSize, field: "delta"))
        case let other: throw .invalidValue(field: "has delta", reason: "\(other), expected 0 or 1")
        }
        let signature = try r.readBytes(Identity.signatureLength, "signature")
        self.init(key: key, publisher: publisher, description: description, publishedAt: publishedAt,
                  chunkSize: chunkSize, canaryPercent: canary, canaryDelaySeconds: delay, fileHash: fileHash, file: file, delta: delta,
                  signature: signature)
        try Self.check(self)
    }

    private static func readArtefact(_ r: inout ByteReader, chunkSize: Int, field: String) throws(WireError) -> ReleaseArtefact {
        let size = try r.readUInt64(field + " size")
        guard size >= 1, size <= UInt64(maxBytes) else { throw .lengthTooLarge(field: field, declared: size, maximum: maxBytes) }
        let chunks = (Int(size) + chunkSize - 1) / chunkSize
        guard r.remaining >= 32 * chunks else { throw .truncated(field: field + " chunk hashes", needed: 32 * chunks, available: r.remaining) }
        var hashes: [[UInt8]] = []
        hashes.reserveCapacity(chunks)
        for _ in 0..<chunks { hashes.append(try r.readBytes(32, field + " chunk hash")) }
        return ReleaseArtefact(size: Int(size), chunkHashes: hashes)
    }

    private static func check(_ m: ReleaseManifest) throws(WireError) {
        if let problem = ReleaseKey.problem(withName: m.key.name) { throw .invalidValue(field: "model name", reason: problem) }
        guard m.key.version >= 1 else { throw .invalidValue(field: "version", reason: "versions count from 1") }
        guard m.description.utf8.count <= maxDescriptionBytes else {
            throw .lengthTooLarge(field: "description", declared: UInt64(m.description.utf8.count), maximum: maxDescriptionBytes)
        }
        guard chunkSizes.contains(m.chunkSize) else { throw .invalidValue(field: "chunk size", reason: "\(m.chunkSize) bytes, outside \(chunkSizes)") }
        guard (0...100).contains(m.canaryPercent) else { throw .invalidValue(field: "canary share", reason: "\(m.canaryPercent) %, expected 0 to 100") }
        guard (0...maxCanaryDelaySeconds).contains(m.canaryDelaySeconds) else {
            throw .invalidValue(field: "canary delay", reason: "\(m.canaryDelaySeconds) s, at most \(maxCanaryDelaySeconds)")
        }
        for a in [m.file] + (m.delta.map { [$0.artefact] } ?? []) {
            guard a.size >= 1, a.size <= maxBytes else { throw .lengthTooLarge(field: "artefact", declared: UInt64(a.size), maximum: maxBytes) }
        }
        if let d = m.delta, d.baseVersion >= m.key.version {
            throw .invalidValue(field: "base version", reason: "a delta applies to an older version, got v\(d.baseVersion) for v\(m.key.version)")
        }
    }
}

/// A publisher's word that a release must not be used: peers that run it go back to the
/// newest earlier version they hold, and none activates it afterwards.
///
/// Encoding: u8 format (1) · name · u64 version · publisher (32) · u64 issued at (Unix ms) ·
/// signature (64) over the rest in the `murmuration/rollback/v1` domain.
public struct RollbackNotice: Sendable, Equatable, Comparable {
    public let key: ReleaseKey
    public let publisher: PeerID
    public let issuedAt: UInt64
    public let signature: [UInt8]

    /// Signs a rollback of `key` by `publisher`.
    public init(key: ReleaseKey, issuedAt: UInt64, publisher: Identity) {
        self.key = key
        self.publisher = publisher.peerID
        self.issuedAt = issuedAt
        signature = publisher.sign(Self.body(key: key, publisher: publisher.peerID, issuedAt: issuedAt), domain: .rollback)
    }

    public static func < (a: RollbackNotice, b: RollbackNotice) -> Bool { (a.key, a.publisher) < (b.key, b.publisher) }

    /// Whether the publisher's signature holds.
    public var isSigned: Bool { publisher.verify(signature: signature, message: signedBody, domain: .rollback) }

    var signedBody: [UInt8] { Self.body(key: key, publisher: publisher, issuedAt: issuedAt) }

    private static func body(key: ReleaseKey, publisher: PeerID, issuedAt: UInt64) -> [UInt8] {
        var w = ByteWriter(capacity: 120)
        ReleaseManifest.writeHead(key, publisher, to: &w)
        w.writeUInt64(issuedAt)
        return w.bytes
    }

    /// The encoding, signature included.
    public var encoded: [UInt8] { signedBody + signature }

    public init(decoding bytes: [UInt8]) throws(WireError) {
        var r = ByteReader(bytes)
        try self.init(reading: &r)
        try r.expectEnd()
    }

    init(reading r: inout ByteReader) throws(WireError) {
        (key, publisher) = try ReleaseManifest.readHead(&r, "rollback")
        issuedAt = try r.readUInt64("issued at")
        signature = try r.readBytes(Identity.signatureLength, "signature")
    }
}
