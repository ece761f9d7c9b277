import Crypto

/// Binary encoding of ``PushSumAverager/Message``, in network byte order like every other
/// message of the project, built on `Crypto`'s ``ByteReader`` and ``ByteWriter``.
///
/// Transfer: tag 1, epoch u64, sequence u64, weight f64 bits u64, count u32, codec u8,
/// payload length u32, payload. Acknowledgement: tag 2, epoch u64, sequence u64.
/// A transfer is one message on the stream transport, whatever its size: chunking and
/// reassembly belong to the stream framing below this layer (see `docs/averaging.md`).
/// Identity-codec payloads (float32, little-endian) decode back to `.floats`, other codecs'
/// to `.bytes`.
public enum AveragingWire {
    static let transferTag: UInt8 = 1
    static let ackTag: UInt8 = 2
    /// The largest vector a transfer may carry: 16 M elements (64 MB of floats) bounds
    /// what a peer can make a node allocate, far above a 7,850-parameter model.
    public static let maxElements = 1 << 24

    /// Encodes `message`.
    public static func encode(_ message: PushSumAverager.Message) -> [UInt8] {
        var w = ByteWriter(capacity: message.wireSize)
        switch message {
        case .ack(let epoch, let sequence):
            w.write(ackTag)
            w.writeUInt64(epoch)
            w.writeUInt64(sequence)
        case .transfer(let t):
            w.write(transferTag)
            w.writeUInt64(t.epoch)
            w.writeUInt64(t.sequence)
            w.writeUInt64(t.weight.bitPattern)
            w.writeUInt32(UInt32(truncatingIfNeeded: t.count))
            w.write(t.codec)
            w.writeUInt32(UInt32(truncatingIfNeeded: t.payload.byteCount))
            switch t.payload {
            case .bytes(let bytes): w.write(bytes: bytes)
            case .floats(let floats): IdentityShareCodec.appendLittleEndian(floats, to: &w)
            }
        }
        return w.bytes
    }

    /// Decodes one message, refusing truncated, oversized or trailing input.
    public static func decode(_ bytes: [UInt8]) throws(AveragingError) -> PushSumAverager.Message {
        do {
            var reader = ByteReader(bytes)
            let message: PushSumAverager.Message
            switch try reader.readUInt8("tag") {
            case ackTag:
                message = .ack(epoch: try reader.readUInt64("epoch"), sequence: try reader.readUInt64("sequence"))
            case transferTag:
                let epoch = try reader.readUInt64("epoch")
                let sequence = try reader.readUInt64("sequence")
                let weight = Double(bitPattern: try reader.readUInt64("weight"))
                let count = Int(try reader.readUInt32("count"))
                let codec = try reader.readUInt8("codec")
                let length = Int(try reader.readUInt32("payload length"))
                guard count <= maxElements else { throw AveragingError.tooLarge(elements: count, limit: maxElements) }
                // An empty vector averages nothing; the signed envelope refuses it too.
                guard count > 0 else { throw WireError.zeroLength(field: "count") }
                let payloadBytes = try reader.readBytes(length, "payload")
                let payload: SharePayload
                if codec == IdentityShareCodec().identifier {
                    payload = .floats(try IdentityShareCodec().decode(.bytes(payloadBytes), count: count))
                } else {
                    payload = .bytes(payloadBytes)
                }
                message = .transfer(.init(epoch: epoch, sequence: sequence, weight: weight, count: count, codec: codec, payload: payload))
            case let tag:
                throw AveragingError.unknownMessageTag(tag)
            }
            try reader.expectEnd()
            return message
        } catch let error as AveragingError {
            throw error
        } catch let error as WireError {
            throw .wire(error)
        } catch {
            throw .wire(.invalidValue(field: "averaging message", reason: "\(error)"))
        }
    }
}
