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
    public static let version: UInt8 = 1
    /// Bytes of the header without dimensions and metadata.
    public static let fixedLength = 1 + 1 + 32 + 32 + 8 + 8 + 1 + 1 + 8 + 32 + 2

    public var kind: DeltaKind
    /// ``NetworkKey/id`` of the network the delta belongs to.
    public var networkID: [UInt8]
    public var author: PeerID
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

    public init(kind: DeltaKind, networkID: [UInt8], author: PeerID, round: UInt64, sequence: UInt64,
                encoding: DeltaEncoding, shape: [UInt32], payloadLength: UInt64, payloadHash: [UInt8], metadata: [UInt8] = []) {
        self.kind = kind
        self.networkID = networkID
        self.author = author
        self.round = round
        self.sequence = sequence
        self.encoding = encoding
        self.shape = shape
        self.payloadLength = payloadLength
        self.payloadHash = payloadHash
        self.metadata = metadata
    }

    /// Encoded header (the bytes that are signed, after the domain prefix):
    /// `version ‖ kind ‖ networkID(32) ‖ author(32) ‖ round(u64) ‖ sequence(u64) ‖ encoding ‖ rank ‖
    /// dims(u32 × rank) ‖ payloadLength(u64) ‖ payloadHash(32) ‖ metadataLength(u16) ‖ metadata`.
    public func encode() -> [UInt8] {
        var w = ByteWriter(capacity: Self.fixedLength + 4 * shape.count + metadata.count)
        w.write(Self.version)
        w.write(kind.rawValue)
        w.write(bytes: networkID)
        w.write(bytes: author.bytes)
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

    /// Decodes and checks a header against `limits`: total, never traps, allocates nothing
    /// beyond the bounded fields.
    public static func decode(_ bytes: [UInt8], limits: DeltaLimits) throws(WireError) -> DeltaHeader {
        var r = ByteReader(bytes)
        let v = try r.readUInt8("delta version")
        guard v == version else { throw .unsupportedVersion(v) }
        let kind = DeltaKind(rawValue: try r.readUInt8("delta kind"))
        let networkID = try r.readBytes(32, "network id")
        guard let author = PeerID(bytes: try r.readSlice(32, "author")) else { throw .invalidValue(field: "author", reason: "length") }
        let round = try r.readUInt64("round")
        let sequence = try r.readUInt64("sequence")
        let encoding = DeltaEncoding(rawValue: try r.readUInt8("encoding"))
        let rank = Int(try r.readUInt8("rank"))
        guard rank > 0 else { throw .zeroLength(field: "shape") }
        guard rank <= limits.maxRank else { throw .lengthTooLarge(field: "shape rank", declared: UInt64(rank), maximum: limits.maxRank) }
        var shape: [UInt32] = []
        shape.reserveCapacity(rank)
        for _ in 0..<rank {
            let d = try r.readUInt32("dimension")
            guard d > 0 else { throw .zeroLength(field: "dimension") }
            shape.append(d)
        }
        let payloadLength = try r.readUInt64("payload length")
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
        let payloadHash = try r.readBytes(32, "payload hash")
        let metadataLength = Int(try r.readUInt16("metadata length"))
        guard metadataLength <= limits.maxMetadataLength else {
            throw .lengthTooLarge(field: "metadata", declared: UInt64(metadataLength), maximum: limits.maxMetadataLength)
        }
        let metadata = try r.readBytes(metadataLength, "metadata")
        try r.expectEnd()
        return DeltaHeader(kind: kind, networkID: networkID, author: author, round: round, sequence: sequence,
                           encoding: encoding, shape: shape, payloadLength: payloadLength, payloadHash: payloadHash, metadata: metadata)
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

    public var description: String {
        switch self {
        case let .malformed(e): return "delta: \(e)"
        case .invalidAuthorKey: return "delta: author key is not a valid Ed25519 key"
        case .badSignature: return "delta: signature does not verify"
        case .wrongNetwork: return "delta: belongs to another network"
        case let .unexpectedKind(k): return "delta: unexpected kind \(k)"
        case .payloadMismatch: return "delta: payload does not match the signed hash"
        case let .chunkOutOfOrder(e, a): return "delta: chunk at offset \(a), expected \(e)"
        }
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
    public static func makeHeader(kind: DeltaKind, networkID: [UInt8], round: UInt64, sequence: UInt64,
                                  encoding: DeltaEncoding, shape: [UInt32], metadata: [UInt8] = [],
                                  payload: UnsafeRawBufferPointer, identity: Identity) -> DeltaHeader {
        DeltaHeader(kind: kind, networkID: networkID, author: identity.peerID, round: round, sequence: sequence,
                    encoding: encoding, shape: shape, payloadLength: UInt64(payload.count),
                    payloadHash: Blake2b.hash256(raw: payload), metadata: metadata)
    }

    /// Head of an envelope (type, header, signature), without the payload.
    public static func sealHead(_ header: DeltaHeader, identity: Identity) -> [UInt8] {
        let encoded = header.encode()
        let signature = identity.sign(encoded, domain: .delta)
        var w = ByteWriter(capacity: 1 + 4 + encoded.count + Identity.signatureLength)
        w.write(headType)
        w.writeUInt32(UInt32(encoded.count))
        w.write(bytes: encoded)
        w.write(bytes: signature)
        return w.bytes
    }

    /// A complete envelope: hash the payload, sign the header, append the payload.
    public static func seal(kind: DeltaKind, networkID: [UInt8], round: UInt64, sequence: UInt64,
                            encoding: DeltaEncoding, shape: [UInt32], metadata: [UInt8] = [],
                            payload: UnsafeRawBufferPointer, identity: Identity) -> [UInt8] {
        let header = makeHeader(kind: kind, networkID: networkID, round: round, sequence: sequence, encoding: encoding,
                                shape: shape, metadata: metadata, payload: payload, identity: identity)
        var out = sealHead(header, identity: identity)
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
    /// network, author key and signature. `bytes` may hold only the head.
    public static func openHead(_ bytes: [UInt8], keyring: NetworkKeyring?, expectedKind: DeltaKind? = nil,
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
        if let expectedKind, header.kind != expectedKind { throw .unexpectedKind(header.kind) }
        if let keyring, !keyring.accepts(networkID: header.networkID) { throw .wrongNetwork }
        guard header.author.isValidPublicKey else { throw .invalidAuthorKey }
        guard header.author.verify(signature: signature, message: encoded, domain: .delta) else { throw .badSignature }
        return VerifiedHead(header: header, headLength: r.offset)
    }

    /// Verifies a complete envelope and returns the header and payload.
    public static func open(_ bytes: [UInt8], keyring: NetworkKeyring?, expectedKind: DeltaKind? = nil,
                            limits: DeltaLimits = .init()) throws(DeltaError) -> (header: DeltaHeader, payload: [UInt8]) {
        let head = try openHead(bytes, keyring: keyring, expectedKind: expectedKind, limits: limits)
        let available = bytes.count - head.headLength
        guard UInt64(available) == head.header.payloadLength else {
            if UInt64(available) < head.header.payloadLength {
                throw .malformed(.truncated(field: "payload", needed: Int(head.header.payloadLength), available: available))
            }
            throw .malformed(.trailingBytes(count: available - Int(head.header.payloadLength)))
        }
        let digest = bytes.withUnsafeBytes { b in Blake2b.hash256(raw: UnsafeRawBufferPointer(rebasing: b[head.headLength...])) }
        guard digest == head.header.payloadHash else { throw .payloadMismatch }
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

    /// Writes a chunk of `bytes` at `offset` into `out` (exactly `headerLength + bytes.count` bytes),
    /// for use with ``SecureChannelSender/seal(length:fill:)``.
    public static func encode(offset: UInt64, bytes: UnsafeRawBufferPointer, into out: UnsafeMutableRawBufferPointer) {
        var w = ByteWriter(capacity: headerLength)
        w.write(type)
        w.writeUInt64(offset)
        w.writeUInt32(UInt32(truncatingIfNeeded: bytes.count))
        w.bytes.withUnsafeBytes { out.copyMemory(from: $0) }
        if let base = bytes.baseAddress, let dst = out.baseAddress { (dst + headerLength).copyMemory(from: base, byteCount: bytes.count) }
    }

    /// Decodes a chunk without copying its data: `body` gets the offset and a view of the bytes.
    public static func withDecoded<R>(_ data: UnsafeRawBufferPointer, _ body: (UInt64, UnsafeRawBufferPointer) throws -> R) throws -> R {
        guard data.count >= headerLength else { throw WireError.truncated(field: "chunk header", needed: headerLength, available: data.count) }
        guard data[0] == type else { throw WireError.unexpectedType(expected: type, actual: data[0]) }
        var offset: UInt64 = 0
        for i in 1...8 { offset = offset << 8 | UInt64(data[i]) }
        var n = 0
        for i in 9...12 { n = n << 8 | Int(data[i]) }
        guard n > 0 else { throw WireError.zeroLength(field: "chunk") }
        guard n <= maxLength else { throw WireError.lengthTooLarge(field: "chunk", declared: UInt64(n), maximum: maxLength) }
        guard data.count == headerLength + n else {
            throw data.count < headerLength + n ? WireError.truncated(field: "chunk", needed: n, available: data.count - headerLength)
                                                : WireError.trailingBytes(count: data.count - headerLength - n)
        }
        return try body(offset, UnsafeRawBufferPointer(rebasing: data[headerLength...]))
    }

    /// Total decoder; the length is checked against ``maxLength`` before allocating.
    public static func decode(_ data: [UInt8]) throws(WireError) -> DeltaChunk {
        var r = ByteReader(data)
        let t = try r.readUInt8("chunk type")
        guard t == type else { throw .unexpectedType(expected: type, actual: t) }
        let offset = try r.readUInt64("chunk offset")
        let bytes = try r.readLengthPrefixed(maximum: maxLength, allowEmpty: false, "chunk")
        try r.expectEnd()
        return DeltaChunk(offset: offset, bytes: bytes)
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

    /// The payload, once complete and matching the signed hash.
    public func finish() throws(DeltaError) -> (header: DeltaHeader, payload: [UInt8]) {
        guard !finished, isComplete else {
            throw .malformed(.truncated(field: "payload", needed: Int(header.payloadLength), available: payload.count))
        }
        finished = true
        let digest = hasher.finalize()
        guard digest == header.payloadHash else { throw .payloadMismatch }
        return (header, payload)
    }
}
