/// What a signed envelope carries. The kind is inside the signed header, so a signature made
/// for one kind never verifies as another.
public struct DeltaKind: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// A model delta (difference to a previous model).
    public static let modelDelta = DeltaKind(rawValue: 1)
    /// A push-sum share (value and weight sent to a neighbour).
    public static let pushSumShare = DeltaKind(rawValue: 2)
    /// A full model snapshot (for a joining peer).
    public static let modelSnapshot = DeltaKind(rawValue: 3)

    /// True for kinds that must name their recipient: a push-sum share moves mass to one
    /// peer, so delivered anywhere else it would create mass.
    public var requiresRecipient: Bool { self == .pushSumShare }

    public var description: String {
        switch self {
        case .modelDelta: return "model-delta"
        case .pushSumShare: return "push-sum-share"
        case .modelSnapshot: return "model-snapshot"
        default: return "kind-\(rawValue)"
        }
    }
}

/// How the payload encodes the tensor. Fixed-width encodings let the header's declared
/// length be checked against the shape before anything is read.
public struct DeltaEncoding: RawRepresentable, Hashable, Sendable, CustomStringConvertible {
    public let rawValue: UInt8
    public init(rawValue: UInt8) { self.rawValue = rawValue }

    /// Little-endian IEEE 754 binary32, 4 bytes per element.
    public static let float32 = DeltaEncoding(rawValue: 1)
    /// Little-endian IEEE 754 binary16, 2 bytes per element.
    public static let float16 = DeltaEncoding(rawValue: 2)
    /// One signed byte per element (scale in the metadata).
    public static let int8 = DeltaEncoding(rawValue: 3)
    /// Sparse top-k (indices and values); length depends on k, not on the shape.
    public static let topK = DeltaEncoding(rawValue: 4)

    /// Bytes per element for fixed-width encodings; nil for variable-length ones.
    public var bytesPerElement: Int? {
        switch self {
        case .float32: return 4
        case .float16: return 2
        case .int8: return 1
        default: return nil
        }
    }

    public var description: String {
        switch self {
        case .float32: return "f32"
        case .float16: return "f16"
        case .int8: return "i8"
        case .topK: return "topk"
        default: return "encoding-\(rawValue)"
        }
    }
}

/// Bounds checked on every envelope before any allocation.
public struct DeltaLimits: Sendable, Hashable {
    /// Largest payload. 128 MiB holds a 32-million-parameter model in float32, far above what
    /// edge peers exchange, while refusing absurd declarations (4 GiB) outright.
    public var maxPayloadLength: Int = 128 << 20
    /// Most tensor dimensions (rank). 8 covers every layer shape in use.
    public var maxRank: Int = 8
    /// Largest signed metadata (for example a push-sum weight or a quantisation scale).
    public var maxMetadataLength: Int = 1_024

    public init() {}

    /// Largest encoded header these limits allow.
    public var maxHeaderLength: Int { DeltaHeader.fixedLength + 4 * maxRank + maxMetadataLength }
}

/// The signed header of a model delta. Everything that gives a delta its meaning is here,
/// including the BLAKE2b-256 of the payload, so the header is verified before the payload is read.
public struct DeltaHeader: Equatable, Sendable {
    /// Header format version.
    public static let version: UInt8 = 2
    /// Bytes of the header without dimensions and metadata.
    public static let fixedLength = 1 + 1 + 32 + 32 + 32 + 8 + 8 + 1 + 1 + 8 + 32 + 2

    public var kind: DeltaKind
    /// ``NetworkKey/id`` of the network the delta belongs to.
    public var networkID: [UInt8]
    public var author: PeerID
    /// The one peer this delta is for, or nil for any member (encoded as 32 zero bytes).
    public var recipient: PeerID?
    public var round: UInt64
    /// Per-author sequence number: receivers drop any (author, sequence) seen before.
    public var sequence: UInt64
    public var encoding: DeltaEncoding
    /// Tensor dimensions, outermost first; each ≥ 1.
    public var shape: [UInt32]
    public var payloadLength: UInt64
    /// BLAKE2b-256 of the payload.
    public var payloadHash: [UInt8]
    /// Kind-specific signed data (≤ ``DeltaLimits/maxMetadataLength``).
    public var metadata: [UInt8]

    public init(kind: DeltaKind, networkID: [UInt8], author: PeerID, recipient: PeerID?, round: UInt64, sequence: UInt64,
                encoding: DeltaEncoding, shape: [UInt32], payloadLength: UInt64, payloadHash: [UInt8], metadata: [UInt8] = []) {
        self.kind = kind
        self.networkID = networkID
        self.author = author
        self.recipient = recipient
        self.round = round
        self.sequence = sequence
        self.encoding = encoding
        self.shape = shape
        self.payloadLength = payloadLength
        self.payloadHash = payloadHash
        self.metadata = metadata
    }

    /// Encoded header (the bytes that are signed, after the domain prefix):
    /// `version ‖ kind ‖ networkID(32) ‖ author(32) ‖ recipient(32) ‖ round(u64) ‖ sequence(u64) ‖
    /// encoding ‖ rank ‖ dims(u32 × rank) ‖ payloadLength(u64) ‖ payloadHash(32) ‖ metadataLength(u16) ‖ metadata`.
    /// Refuses, before anything is signed, a header its receivers would refuse (see ``validate(limits:)``).
    public func encode(limits: DeltaLimits = .init()) throws(WireError) -> [UInt8] {
        try validate(limits: limits)
        return uncheckedEncoding()
    }

    /// The encoding of a header that passed ``validate(limits:)`` (tests use it to build
    /// headers a receiver must refuse).
    func uncheckedEncoding() -> [UInt8] {
        var w = ByteWriter(capacity: Self.fixedLength + 4 * shape.count + metadata.count)
        w.write(Self.version)
        w.write(kind.rawValue)
        w.write(bytes: networkID)
        w.write(bytes: author.bytes)
        w.write(bytes: recipient?.bytes ?? Self.anyRecipient)
        w.writeUInt64(round)
        w.writeUInt64(sequence)
        w.write(encoding.rawValue)
        w.write(UInt8(truncatingIfNeeded: shape.count))
        for d in shape { w.writeUInt32(d) }
        w.writeUInt64(payloadLength)
        w.write(bytes: payloadHash)
        w.writeUInt16(UInt16(truncatingIfNeeded: metadata.count))
        w.write(bytes: metadata)
        return w.bytes
    }

    /// The recipient field of a delta for any member.
    static let anyRecipient = [UInt8](repeating: 0, count: PeerID.length)

    /// The checks every header passes, on the way out (before signing) and on the way in:
    /// field lengths, rank 1...``DeltaLimits/maxRank``, no zero dimension, a payload of
    /// 1...``DeltaLimits/maxPayloadLength`` bytes that matches the shape for fixed-width
    /// encodings, bounded metadata, and a recipient for kinds that need one.
    public func validate(limits: DeltaLimits) throws(WireError) {
        guard networkID.count == 32 else { throw .invalidValue(field: "network id", reason: "\(networkID.count) bytes, expected 32") }
        guard payloadHash.count == 32 else { throw .invalidValue(field: "payload hash", reason: "\(payloadHash.count) bytes, expected 32") }
        guard !shape.isEmpty else { throw .zeroLength(field: "shape") }
        let maxRank = min(limits.maxRank, Int(UInt8.max))
        guard shape.count <= maxRank else { throw .lengthTooLarge(field: "shape rank", declared: UInt64(shape.count), maximum: maxRank) }
        guard !shape.contains(0) else { throw .zeroLength(field: "dimension") }
        guard payloadLength > 0 else { throw .zeroLength(field: "payload") }
        guard payloadLength <= UInt64(limits.maxPayloadLength) else {
            throw .lengthTooLarge(field: "payload", declared: payloadLength, maximum: limits.maxPayloadLength)
        }
        if let width = encoding.bytesPerElement {
            var expected: UInt64 = UInt64(width)
            for d in shape {
                let (p, overflow) = expected.multipliedReportingOverflow(by: UInt64(d))
                guard !overflow else { throw .invalidValue(field: "shape", reason: "element count overflows") }
                expected = p
            }
            guard expected == payloadLength else {
                throw .invalidValue(field: "payload length", reason: "\(payloadLength) bytes do not match shape \(shape) in \(encoding) (\(expected) bytes)")
            }
        }
        let maxMetadata = min(limits.maxMetadataLength, Int(UInt16.max))
        guard metadata.count <= maxMetadata else {
            throw .lengthTooLarge(field: "metadata", declared: UInt64(metadata.count), maximum: maxMetadata)
        }
        if kind.requiresRecipient && recipient == nil {
            throw .invalidValue(field: "recipient", reason: "a \(kind) must name the one peer it is for")
        }
    }

    /// Decodes and checks a header against `limits`: total, never traps, allocates nothing
    /// beyond the bounded fields.
    public static func decode(_ bytes: [UInt8], limits: DeltaLimits) throws(WireError) -> DeltaHeader {
        var r = ByteReader(bytes)
        let v = try r.readUInt8("delta version")
        guard v == version else { throw .unsupportedVersion(v) }
        let kind = DeltaKind(rawValue: try r.readUInt8("delta kind"))
        let networkID = try r.readBytes(32, "network id")
        guard let author = PeerID(bytes: try r.readSlice(32, "author")) else { throw .invalidValue(field: "author", reason: "length") }
        let recipientBytes = try r.readSlice(32, "recipient")
        let recipient = recipientBytes.elementsEqual(anyRecipient) ? nil : PeerID(bytes: recipientBytes)
        let round = try r.readUInt64("round")
        let sequence = try r.readUInt64("sequence")
        let encoding = DeltaEncoding(rawValue: try r.readUInt8("encoding"))
        let rank = Int(try r.readUInt8("rank"))
        guard rank > 0 else { throw .zeroLength(field: "shape") }
        // Bounded before the dimensions are read.
        guard rank <= limits.maxRank else { throw .lengthTooLarge(field: "shape rank", declared: UInt64(rank), maximum: limits.maxRank) }
        var shape: [UInt32] = []
        shape.reserveCapacity(rank)
        for _ in 0..<rank { shape.append(try r.readUInt32("dimension")) }
        let payloadLength = try r.readUInt64("payload length")
        let payloadHash = try r.readBytes(32, "payload hash")
        let metadataLength = Int(try r.readUInt16("metadata length"))
        guard metadataLength <= limits.maxMetadataLength else {
            throw .lengthTooLarge(field: "metadata", declared: UInt64(metadataLength), maximum: limits.maxMetadataLength)
        }
        let metadata = try r.readBytes(metadataLength, "metadata")
        try r.expectEnd()
        let header = DeltaHeader(kind: kind, networkID: networkID, author: author, recipient: recipient, round: round, sequence: sequence,
                                 encoding: encoding, shape: shape, payloadLength: payloadLength, payloadHash: payloadHash, metadata: metadata)
        try header.validate(limits: limits)
        return header
    }
}

/// Why an envelope was refused.
public enum DeltaError: Error, Equatable, Sendable, CustomStringConvertible {
    case malformed(WireError)
    /// The author's key is not a valid Ed25519 point (small-order or non-canonical).
    case invalidAuthorKey
    /// The signature does not verify for the author over this header.
    case badSignature
    /// The envelope names a network this node does not accept.
    case wrongNetwork
    /// The kind is not the one the caller expected.
    case unexpectedKind(DeltaKind)
    /// The payload's BLAKE2b-256 differs from the signed hash.
    case payloadMismatch
    /// A payload chunk arrived out of place.
    case chunkOutOfOrder(expectedOffset: UInt64, actual: UInt64)
    /// Signed by someone other than the peer it had to come from.
    case wrongAuthor(expected: PeerID, actual: PeerID)
    /// Addressed to another peer.
    case wrongRecipient(PeerID)
    /// This author's sequence number of this kind was accepted before (a replay or a relay).
    case replayed(sequence: UInt64)
    /// The sequence ledger is full and this author is new to it.
    case ledgerFull(Int)
    /// The sequence ledger could not be written (the delta was not accepted).
    case ledger(String)

    public var description: String {
        switch self {
        case let .malformed(e): return "delta: \(e)"
        case .invalidAuthorKey: return "delta: author key is not a valid Ed25519 key"
        case .badSignature: return "delta: signature does not verify"
        case .wrongNetwork: return "delta: belongs to another network"
        case let .unexpectedKind(k): return "delta: unexpected kind \(k)"
        case .payloadMismatch: return "delta: payload does not match the signed hash"
        case let .chunkOutOfOrder(e, a): return "delta: chunk at offset \(a), expected \(e)"
        case let .wrongAuthor(e, a): return "delta: signed by \(a.fingerprint), expected \(e.fingerprint)"
        case let .wrongRecipient(r): return "delta: addressed to \(r.fingerprint), not to this peer"
        case let .replayed(seq): return "delta: sequence \(seq) of this author was accepted before (replayed or relayed again)"
        case let .ledgerFull(n): return "delta: the sequence ledger holds its maximum of \(n) authors; refusing a new one"
        case let .ledger(e): return "delta: sequence ledger: \(e)"
        }
    }
}

/// What a receiver requires of a delta before it accepts it.
public struct DeltaExpectation: Sendable {
    /// Who must have signed it.
    public enum Author: Sendable, Equatable {
        /// Exactly this peer: the authenticated peer of the session it came over, for
        /// messages that change per-peer state.
        case peer(PeerID)
        /// Any member: content that is relayed (a model release or snapshot).
        case anyMember
    }

    /// The kind required, or nil for any.
    public var kind: DeltaKind?
    public var author: Author
    /// This peer: a delta addressed to anyone else is refused.
    public var localPeer: PeerID

    public init(kind: DeltaKind?, author: Author, localPeer: PeerID) {
        self.kind = kind
        self.author = author
        self.localPeer = localPeer
    }
}

/// Signed envelopes for model deltas.
///
/// Wire form: `'D'(0x44) ‖ headerLength(u32) ‖ header ‖ signature(64) ‖ payload(payloadLength)`.
/// The signature is Ed25519 over `"murmuration/delta/v1" ‖ 0x00 ‖ headerLength(u32) ‖ header` (``SignatureDomain/delta``). Over a stream the
/// payload may instead follow as ``DeltaChunk`` frames.
public enum SignedDelta {
    /// Message type byte of an envelope head.
    public static let headType: UInt8 = 0x44
    /// The header for `payload`, authored by `identity` (hash and length computed here).
    public static func makeHeader(kind: DeltaKind, networkID: [UInt8], recipient: PeerID?, round: UInt64, sequence: UInt64,
                                  encoding: DeltaEncoding, shape: [UInt32], metadata: [UInt8] = [],
                                  payload: UnsafeRawBufferPointer, identity: Identity) -> DeltaHeader {
        DeltaHeader(kind: kind, networkID: networkID, author: identity.peerID, recipient: recipient, round: round, sequence: sequence,
                    encoding: encoding, shape: shape, payloadLength: UInt64(payload.count),
                    payloadHash: Blake2b.hash256(raw: payload), metadata: metadata)
    }

    /// Head of an envelope (type, header, signature), without the payload. Refuses, before
    /// signing, a header that is not `identity`'s or that its receivers would refuse.
    public static func sealHead(_ header: DeltaHeader, identity: Identity, limits: DeltaLimits = .init()) throws(DeltaError) -> [UInt8] {
        guard header.author == identity.peerID else { throw .wrongAuthor(expected: identity.peerID, actual: header.author) }
        let encoded: [UInt8]
        do { encoded = try header.encode(limits: limits) } catch { throw .malformed(error) }
        let signature = identity.sign(encoded, domain: .delta)
        var w = ByteWriter(capacity: 1 + 4 + encoded.count + Identity.signatureLength)
        w.write(headType)
        w.writeUInt32(UInt32(encoded.count))
        w.write(bytes: encoded)
        w.write(bytes: signature)
        return w.bytes
    }

    /// A complete envelope: hash the payload, check and sign the header, append the payload.
    public static func seal(kind: DeltaKind, networkID: [UInt8], recipient: PeerID?, round: UInt64, sequence: UInt64,
                            encoding: DeltaEncoding, shape: [UInt32], metadata: [UInt8] = [],
                            payload: UnsafeRawBufferPointer, identity: Identity, limits: DeltaLimits = .init()) throws(DeltaError) -> [UInt8] {
        let header = makeHeader(kind: kind, networkID: networkID, recipient: recipient, round: round, sequence: sequence, encoding: encoding,
                                shape: shape, metadata: metadata, payload: payload, identity: identity)
        var out = try sealHead(header, identity: identity, limits: limits)
        out.append(contentsOf: payload.assumingMemoryBound(to: UInt8.self))
        return out
    }

    /// A verified header and where the payload starts.
    public struct VerifiedHead: Sendable {
        public let header: DeltaHeader
        /// Bytes of the head; the payload (if any) follows.
        public let headLength: Int
    }

    /// Verifies the head at the start of `bytes` without touching the payload: limits, shape,
    /// network (always: the keyring is required), kind, recipient, author key, the expected
    /// author and the signature. `bytes` may hold only the head.
    public static func openHead(_ bytes: [UInt8], keyring: NetworkKeyring, expecting expectation: DeltaExpectation,
                                limits: DeltaLimits = .init()) throws(DeltaError) -> VerifiedHead {
        var r = ByteReader(bytes)
        let header: DeltaHeader
        let encoded: [UInt8]
        let signature: [UInt8]
        do throws(WireError) {
            let type = try r.readUInt8("envelope type")
            guard type == headType else { throw .unexpectedType(expected: headType, actual: type) }
            let n = try r.readUInt32("header length")
            guard n >= DeltaHeader.fixedLength else { throw .invalidValue(field: "header length", reason: "shorter than \(DeltaHeader.fixedLength)") }
            guard Int(n) <= limits.maxHeaderLength else {
                throw .lengthTooLarge(field: "header", declared: UInt64(n), maximum: limits.maxHeaderLength)
            }
            encoded = try r.readBytes(Int(n), "header")
            signature = try r.readBytes(Identity.signatureLength, "signature")
            header = try DeltaHeader.decode(encoded, limits: limits)
        } catch {
            throw .malformed(error)
        }
        if let kind = expectation.kind, header.kind != kind { throw .unexpectedKind(header.kind) }
        guard keyring.accepts(networkID: header.networkID) else { throw .wrongNetwork }
        if let recipient = header.recipient, recipient != expectation.localPeer { throw .wrongRecipient(recipient) }
        if case .peer(let expected) = expectation.author, header.author != expected {
            throw .wrongAuthor(expected: expected, actual: header.author)
        }
        guard header.author.isValidPublicKey else { throw .invalidAuthorKey }
        guard header.author.verify(signature: signature, message: encoded, domain: .delta) else { throw .badSignature }
        return VerifiedHead(header: header, headLength: r.offset)
    }

    /// Verifies a complete envelope and returns the header and payload. With a `ledger`,
    /// the delta is accepted only once per (author, kind, sequence), after everything else verified.
    public static func open(_ bytes: [UInt8], keyring: NetworkKeyring, expecting expectation: DeltaExpectation,
                            ledger: DeltaSequenceLedger? = nil, limits: DeltaLimits = .init()) throws(DeltaError) -> (header: DeltaHeader, payload: [UInt8]) {
        let head = try openHead(bytes, keyring: keyring, expecting: expectation, limits: limits)
        let available = bytes.count - head.headLength
        guard UInt64(available) == head.header.payloadLength else {
            if UInt64(available) < head.header.payloadLength {
                throw .malformed(.truncated(field: "payload", needed: Int(head.header.payloadLength), available: available))
            }
            throw .malformed(.trailingBytes(count: available - Int(head.header.payloadLength)))
        }
        let digest = bytes.withUnsafeBytes { b in Blake2b.hash256(raw: UnsafeRawBufferPointer(rebasing: b[head.headLength...])) }
        guard digest == head.header.payloadHash else { throw .payloadMismatch }
        try ledger?.admit(head.header)
        return (head.header, Array(bytes[head.headLength...]))
    }
}

/// A piece of a delta payload sent after its head over a stream:
/// `'C'(0x43) ‖ offset(u64) ‖ length(u32) ‖ bytes`.
public struct DeltaChunk: Equatable, Sendable {
    public static let type: UInt8 = 0x43
    /// Largest chunk. 256 KiB fits one secure-channel frame with room to spare and keeps
    /// per-connection buffers small.
    public static let maxLength = 256 << 10

    public var offset: UInt64
    public var bytes: [UInt8]

    public init(offset: UInt64, bytes: [UInt8]) {
        self.offset = offset
        self.bytes = bytes
    }

    public func encode() -> [UInt8] {
        var w = ByteWriter(capacity: 13 + bytes.count)
        w.write(Self.type)
        w.writeUInt64(offset)
        w.writeLengthPrefixed(bytes)
        return w.bytes
    }

    /// Bytes before a chunk's data: type, offset, length.
    public static let headerLength = 1 + 8 + 4

    /// Writes a chunk of `bytes` at `offset` into `out`, which must be exactly
    /// `headerLength + bytes.count` bytes (use with ``SecureChannelSender/seal(length:fill:)``).
    public static func encode(offset: UInt64, bytes: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) throws(WireError) {
        guard bytes.count > 0, bytes.count <= maxLength else {
            throw .invalidValue(field: "chunk", reason: "\(bytes.count) bytes, expected 1...\(maxLength)")
        }
        guard out.count == headerLength + bytes.count else {
            throw .invalidValue(field: "chunk buffer", reason: "\(out.count) bytes for a chunk of \(headerLength + bytes.count)")
        }
        var w = ByteWriter(capacity: headerLength)
        w.write(type)
        w.writeUInt64(offset)
        w.writeUInt32(UInt32(bytes.count))
        w.bytes.withUnsafeBytes { out.copyMemory(from: $0) }
        if let base = bytes.baseAddress, let dst = out.baseAddress { (dst + headerLength).copyMemory(from: base, byteCount: bytes.count) }
    }

    /// The one chunk parser: checks type and declared length (against ``maxLength``, before
    /// anything is allocated) and that `data` holds exactly that many bytes.
    private static func parse(_ data: UnsafeRawBufferPointer) throws(WireError) -> (offset: UInt64, bytes: UnsafeRawBufferPointer) {
        guard data.count >= headerLength else { throw .truncated(field: "chunk header", needed: headerLength, available: data.count) }
        var r = ByteReader(UnsafeRawBufferPointer(rebasing: data.prefix(headerLength)))
        let t = try r.readUInt8("chunk type")
        guard t == type else { throw .unexpectedType(expected: type, actual: t) }
        let offset = try r.readUInt64("chunk offset")
        let n = Int(try r.readUInt32("chunk length"))
        guard n > 0 else { throw .zeroLength(field: "chunk") }
        guard n <= maxLength else { throw .lengthTooLarge(field: "chunk", declared: UInt64(n), maximum: maxLength) }
        guard data.count == headerLength + n else {
            throw data.count < headerLength + n ? .truncated(field: "chunk", needed: n, available: data.count - headerLength)
                                                : .trailingBytes(count: data.count - headerLength - n)
        }
        return (offset, UnsafeRawBufferPointer(rebasing: data[headerLength...]))
    }

    /// Decodes a chunk without copying its data: `body` gets the offset and a view of the bytes.
    public static func withDecoded<R>(_ data: UnsafeRawBufferPointer, _ body: (UInt64, UnsafeRawBufferPointer) throws -> R) throws -> R {
        let chunk = try parse(data)
        return try body(chunk.offset, chunk.bytes)
    }

    /// Total decoder into an owned chunk (same checks as ``withDecoded(_:_:)``).
    public static func decode(_ data: [UInt8]) throws(WireError) -> DeltaChunk {
        let parsed = data.withUnsafeBytes { raw in
            Result { () throws(WireError) in
                let chunk = try parse(raw)
                return DeltaChunk(offset: chunk.offset, bytes: Array(chunk.bytes))
            }
        }
        return try parsed.get()
    }

    /// Splits a payload into chunks.
    public static func split(_ payload: UnsafeRawBufferPointer, chunkLength: Int = maxLength) -> [DeltaChunk] {
        let step = max(1, min(chunkLength, maxLength))
        return stride(from: 0, to: payload.count, by: step).map { start in
            DeltaChunk(offset: UInt64(start), bytes: Array(UnsafeRawBufferPointer(rebasing: payload[start..<min(payload.count, start + step)])))
        }
    }
}

/// Receives a payload chunk by chunk after a verified head, hashing as it goes.
/// One owner; ``finish()`` once.
public final class DeltaAssembler {
    public let header: DeltaHeader
    private var payload: [UInt8]
    private var hasher = Blake2b.Hasher()
    private var finished = false

    /// Starts from a verified head; reserves the (already bounded) payload length.
    public init(head: SignedDelta.VerifiedHead) {
        header = head.header
        payload = []
        payload.reserveCapacity(Int(head.header.payloadLength))
    }

    /// Bytes received so far.
    public var received: Int { payload.count }
    /// True once every declared byte arrived.
    public var isComplete: Bool { UInt64(payload.count) == header.payloadLength }

    /// Adds the next chunk; chunks must arrive in order and not exceed the declared length.
    public func add(_ chunk: DeltaChunk) throws(DeltaError) {
        let result: Result<Void, DeltaError> = chunk.bytes.withUnsafeBytes { b in
            Result { () throws(DeltaError) in try add(offset: chunk.offset, bytes: b) }
        }
        try result.get()
    }

    /// Adds the next chunk's bytes (for example a view from ``DeltaChunk/withDecoded(_:_:)``).
    public func add(offset: UInt64, bytes: UnsafeRawBufferPointer) throws(DeltaError) {
        guard !finished else { throw .malformed(.trailingBytes(count: bytes.count)) }
        guard offset == UInt64(payload.count) else {
            throw .chunkOutOfOrder(expectedOffset: UInt64(payload.count), actual: offset)
        }
        guard UInt64(payload.count) + UInt64(bytes.count) <= header.payloadLength else {
            throw .malformed(.trailingBytes(count: payload.count + bytes.count - Int(header.payloadLength)))
        }
        hasher.update(bytes)
        // Append as typed bytes: one memcpy (a raw buffer would be appended byte by byte).
        payload.append(contentsOf: bytes.assumingMemoryBound(to: UInt8.self))
    }

    /// The payload, once complete and matching the signed hash. With a `ledger`, the delta
    /// is accepted only once per (author, kind, sequence).
    public func finish(ledger: DeltaSequenceLedger? = nil) throws(DeltaError) -> (header: DeltaHeader, payload: [UInt8]) {
        guard !finished, isComplete else {
            throw .malformed(.truncated(field: "payload", needed: Int(header.payloadLength), available: payload.count))
        }
        finished = true
        // finalize() fails only if called twice, which `finished` rules out; either way nothing unverified passes.
        guard let digest = try? hasher.finalize(), digest == header.payloadHash else { throw .payloadMismatch }
        try ledger?.admit(header)
        return (header, payload)
    }
}
