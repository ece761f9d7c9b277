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
        return try seal(t.payload, count: t.count, codec: t.codec, kind: .pushSumShare, round: t.epoch, sequence: t.sequence,
                        metadata: metadata, identity: identity, networkID: networkID, to: recipient)
    }

    /// Signs a codec's payload of `count` elements for `recipient`: shape `[count]`, encoding
    /// float32 for the identity codec and `0x80 | codec` for the others.
    static func seal(_ payload: SharePayload, count: Int, codec: UInt8, kind: DeltaKind, round: UInt64, sequence: UInt64, metadata: [UInt8],
                     identity: Identity, networkID: [UInt8], to recipient: PeerID) throws(DeltaError) -> [UInt8] {
        let encoding = codec == IdentityShareCodec().identifier ? DeltaEncoding.float32 : DeltaEncoding(rawValue: codecEncodingFlag | codec)
        guard count <= Int(UInt32.max) else { throw .malformed(.lengthTooLarge(field: "count", declared: UInt64(count), maximum: Int(UInt32.max))) }
        let shape = [UInt32(clamping: count)]
        func sealed(_ raw: UnsafeRawBufferPointer) -> Result<[UInt8], DeltaError> {
            Result { () throws(DeltaError) in
                try SignedDelta.seal(kind: kind, networkID: networkID, recipient: recipient, round: round, sequence: sequence,
                                     encoding: encoding, shape: shape, metadata: metadata, payload: raw, identity: identity)
            }
        }
        switch payload {
        case .floats(let floats): return try floats.withUnsafeBytes(sealed).get()
        case .bytes(let bytes): return try bytes.withUnsafeBytes(sealed).get()
        }
    }

    /// The payload of an opened envelope of `count` elements by `codec`: plain floats for the
    /// identity codec (checked here), the codec's bytes otherwise (checked when decoded).
    static func payload(_ bytes: [UInt8], count: Int, codec: UInt8) throws(AveragingError) -> SharePayload {
        guard count <= AveragingWire.maxElements else { throw .tooLarge(elements: count, limit: AveragingWire.maxElements) }
        guard codec == IdentityShareCodec().identifier else { return .bytes(bytes) }
        return .floats(try IdentityShareCodec().decode(.bytes(bytes), count: count))
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
        let payload: SharePayload
        do { payload = try Self.payload(opened.payload, count: count, codec: codec) } catch { throw .message(error) }
        let transfer = PushSumAverager.Transfer(
            epoch: header.round, sequence: header.sequence, weight: Double(bitPattern: bits),
            count: count, codec: codec, payload: payload)
        return .transfer(transfer)
    }
}
