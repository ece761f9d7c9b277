import Crypto

/// Signed averaging messages: a transfer travels as a ``SignedDelta`` envelope of kind
/// ``DeltaKind/pushSumShare`` authored by the sender and addressed to its one recipient, so
/// every share is attributable and adds mass at one node only; an
/// acknowledgement is the plain ``AveragingWire`` encoding (it moves no mass, and the datagram
/// sealing around every message already authenticates it as coming from the network).
///
/// Envelope fields of a transfer: `round` = the sender's epoch, `sequence` = the transfer's
/// sequence, `shape` = `[count]`, `metadata` = weight (f64 bits, u64 LE) ‖ codec (u8),
/// `encoding` = float32 for the identity codec, `0x80 | codec` for others.
public enum AveragingEnvelope {
    /// Bytes of the signed metadata: weight and codec.
    static let metadataLength = 8 + 1
    /// Marks a codec-defined encoding in the envelope's encoding byte.
    static let codecEncodingFlag: UInt8 = 0x80

    /// Why a signed averaging message was refused.
    public enum Failure: Error, Sendable, Equatable, CustomStringConvertible {
        case envelope(DeltaError)
        case message(AveragingError)
        /// A transfer arrived in the unsigned encoding.
        case unsignedTransfer
        case badMetadata

        public var description: String {
            switch self {
            case .envelope(let e): return "averaging envelope refused: \(e)"
            case .message(let e): return "averaging message refused: \(e)"
            case .unsignedTransfer: return "averaging transfer is not signed"
            case .badMetadata: return "averaging envelope metadata is not weight and codec (9 bytes)"
            }
        }
    }

    /// Encodes `message` for `recipient`, signing transfers with `identity` for the network `networkID`.
    public static func encode(_ message: PushSumAverager.Message, identity: Identity, networkID: [UInt8],
                              to recipient: PeerID) throws(DeltaError) -> [UInt8] {
        guard case .transfer(let t) = message else { return AveragingWire.encode(message) }
        var metadata: [UInt8] = []
        metadata.reserveCapacity(metadataLength)
        withUnsafeBytes(of: t.weight.bitPattern.littleEndian) { metadata.append(contentsOf: $0) }
        metadata.append(t.codec)
        let encoding = t.codec == IdentityShareCodec().identifier
            ? DeltaEncoding.float32 : DeltaEncoding(rawValue: codecEncodingFlag | t.codec)
        let shape = [UInt32(clamping: t.count)]
        guard t.count <= Int(UInt32.max) else { throw .malformed(.lengthTooLarge(field: "count", declared: UInt64(t.count), maximum: Int(UInt32.max))) }
        func sealed(_ raw: UnsafeRawBufferPointer) -> Result<[UInt8], DeltaError> {
            Result { () throws(DeltaError) in
                try SignedDelta.seal(kind: .pushSumShare, networkID: networkID, recipient: recipient, round: t.epoch, sequence: t.sequence,
                                     encoding: encoding, shape: shape, metadata: metadata, payload: raw, identity: identity)
            }
        }
        switch t.payload {
        case .floats(let floats): return try floats.withUnsafeBytes(sealed).get()
        case .bytes(let bytes): return try bytes.withUnsafeBytes(sealed).get()
        }
    }

    /// Decodes a message that arrived from the authenticated peer `sender` at `localPeer`; a
    /// transfer must be a valid envelope for a network in `keyring`, signed by `sender` and
    /// addressed to `localPeer`.
    public static func decode(_ bytes: [UInt8], keyring: NetworkKeyring, from sender: PeerID,
                              localPeer: PeerID) throws(Failure) -> PushSumAverager.Message {
        guard bytes.first == SignedDelta.headType else {
            let message: PushSumAverager.Message
            do { message = try AveragingWire.decode(bytes) } catch { throw .message(error) }
            guard case .ack = message else { throw .unsignedTransfer }
            return message
        }
        let opened: (header: DeltaHeader, payload: [UInt8])
        do {
            opened = try SignedDelta.open(bytes, keyring: keyring,
                                          expecting: DeltaExpectation(kind: .pushSumShare, author: .peer(sender), localPeer: localPeer))
        } catch {
            throw .envelope(error)
        }
        let header = opened.header
        guard header.metadata.count == metadataLength, header.shape.count == 1 else { throw .badMetadata }
        var bits: UInt64 = 0
        for i in 0..<8 { bits |= UInt64(header.metadata[i]) << (8 * i) }
        let codec = header.metadata[8]
        let count = Int(header.shape[0])
        guard count <= AveragingWire.maxElements else {
            throw .message(.tooLarge(elements: count, limit: AveragingWire.maxElements))
        }
        let payload: SharePayload
        if codec == IdentityShareCodec().identifier {
            do {
                payload = .floats(try IdentityShareCodec().decode(.bytes(opened.payload), count: count))
            } catch {
                throw .message(error)
            }
        } else {
            payload = .bytes(opened.payload)
        }
        let transfer = PushSumAverager.Transfer(
            epoch: header.round, sequence: header.sequence, weight: Double(bitPattern: bits),
            count: count, codec: codec, payload: payload)
        return .transfer(transfer)
    }
}
