import Crypto

/// A whole model sent to a neighbour by the learning algorithms that exchange copies rather
/// than push-sum mass (gossip learning, D-PSGD). A lost copy loses nothing: the sender keeps
/// its model, so nothing is acknowledged.
public struct ModelCopy: Sendable, Equatable {
    /// Training rounds behind the model (gossip learning merges by it).
    public var age: UInt64
    /// Copies its author sent before this one (each author's copies are numbered).
    public var sequence: UInt64
    /// The sender's number of neighbours (D-PSGD's Metropolis–Hastings weights need it).
    public var degree: UInt32
    /// Parameters in the model.
    public var count: Int
    /// The share codec that produced `payload`.
    public var codec: UInt8
    public var payload: SharePayload

    public init(age: UInt64, sequence: UInt64, degree: UInt32, count: Int, codec: UInt8, payload: SharePayload) {
        self.age = age
        self.sequence = sequence
        self.degree = degree
        self.count = count
        self.codec = codec
        self.payload = payload
    }

    /// Bytes of the envelope's fixed part and metadata around the payload: what a copy costs
    /// on a session beyond its parameters (type, header length, header of rank 1 with
    /// 5 metadata bytes, signature).
    public static let envelopeOverhead = 1 + 4 + (1 + 1 + 32 + 32 + 32 + 8 + 8 + 1 + 1 + 4 + 8 + 32 + 2 + ModelCopyEnvelope.metadataLength) + 64

    /// Bytes of this copy on a session.
    public var wireSize: Int { Self.envelopeOverhead + payload.byteCount }
}

/// Model copies on the wire: a ``SignedDelta`` envelope of kind ``DeltaKind/modelSnapshot``,
/// authored by the sender and addressed to its one recipient, over their session. Fields:
/// `round` = the model's age, `sequence` = the copy's number, `shape` = `[count]`,
/// `metadata` = degree (u32 LE) ‖ codec (u8), `encoding` float32 for plain floats and
/// `0x80 | codec` otherwise, as for push-sum shares (`docs/wire.md`, section 7).
public enum ModelCopyEnvelope {
    /// Bytes of the signed metadata: degree and codec.
    static let metadataLength = 4 + 1

    /// Why a model copy was refused.
    public enum Failure: Error, Sendable, Equatable, CustomStringConvertible {
        case envelope(DeltaError)
        case payload(AveragingError)
        case badMetadata

        public var description: String {
            switch self {
            case .envelope(let e): return "model copy refused: \(e)"
            case .payload(let e): return "model copy refused: \(e)"
            case .badMetadata: return "model copy metadata is not degree and codec (5 bytes) with a shape of one dimension"
            }
        }
    }

    /// True if session bytes hold a model copy's envelope (its header names the kind).
    static func isModelCopy(_ bytes: [UInt8]) -> Bool {
        // Envelope type, u32 header length, header version, then the kind.
        bytes.count > 6 && bytes[0] == SignedDelta.headType && bytes[6] == DeltaKind.modelSnapshot.rawValue
    }

    /// Encodes `copy` for `recipient`, signed by `identity` for the network `networkID`.
    public static func encode(_ copy: ModelCopy, identity: Identity, networkID: [UInt8], to recipient: PeerID) throws(DeltaError) -> [UInt8] {
        var metadata: [UInt8] = []
        metadata.reserveCapacity(metadataLength)
        withUnsafeBytes(of: copy.degree.littleEndian) { metadata.append(contentsOf: $0) }
        metadata.append(copy.codec)
        return try AveragingEnvelope.seal(copy.payload, count: copy.count, codec: copy.codec, kind: .modelSnapshot, round: copy.age,
                                          sequence: copy.sequence, metadata: metadata, identity: identity, networkID: networkID, to: recipient)
    }

    /// Decodes a copy that arrived from the authenticated peer `sender` at `localPeer`: a valid
    /// envelope for a network in `keyring`, signed by `sender` and addressed to `localPeer`.
    public static func decode(_ bytes: [UInt8], keyring: NetworkKeyring, from sender: PeerID, localPeer: PeerID) throws(Failure) -> ModelCopy {
        let opened: (header: DeltaHeader, payload: [UInt8])
        do {
            opened = try SignedDelta.open(bytes, keyring: keyring,
                                          expecting: DeltaExpectation(kind: .modelSnapshot, author: .peer(sender), localPeer: localPeer))
        } catch {
            throw .envelope(error)
        }
        let header = opened.header
        guard header.metadata.count == metadataLength, header.shape.count == 1 else { throw .badMetadata }
        var degree: UInt32 = 0
        for i in 0..<4 { degree |= UInt32(header.metadata[i]) << (8 * i) }
        let codec = header.metadata[4]
        let count = Int(header.shape[0])
        let payload: SharePayload
        do { payload = try AveragingEnvelope.payload(opened.payload, count: count, codec: codec) } catch { throw .payload(error) }
        return ModelCopy(age: header.round, sequence: header.sequence, degree: degree, count: count, codec: codec, payload: payload)
    }
}
