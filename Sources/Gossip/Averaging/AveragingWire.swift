/// Binary encoding of ``PushSumAverager/Message`` (little-endian).
///
/// Transfer: tag 1, epoch u64, sequence u64, weight f64, count u32, codec u8,
/// payload length u32, payload. Acknowledgement: tag 2, epoch u64, sequence u64.
/// A transfer is one message on the stream transport, whatever its size: chunking and
/// reassembly belong to the stream framing below this layer (see `docs/averaging.md`).
/// Identity-codec payloads decode back to `.floats`, other codecs' to `.bytes`.
public enum AveragingWire {
    static let transferTag: UInt8 = 1
    static let ackTag: UInt8 = 2
    /// The largest vector a transfer may carry: 16 M elements (64 MB of floats) bounds
    /// what a peer can make a node allocate, far above a 7,850-parameter model.
    public static let maxElements = 1 << 24

    /// Encodes `message`.
    public static func encode(_ message: PushSumAverager.Message) -> [UInt8] {
        var out: [UInt8] = []
        out.reserveCapacity(message.wireSize)
        switch message {
        case .ack(let epoch, let sequence):
            out.append(ackTag)
            append(epoch, to: &out)
            append(sequence, to: &out)
        case .transfer(let t):
            out.append(transferTag)
            append(t.epoch, to: &out)
            append(t.sequence, to: &out)
            append(t.weight.bitPattern, to: &out)
            append(UInt32(truncatingIfNeeded: t.count), to: &out)
            out.append(t.codec)
            append(UInt32(truncatingIfNeeded: t.payload.byteCount), to: &out)
            switch t.payload {
            case .bytes(let bytes): out.append(contentsOf: bytes)
            case .floats(let floats):
                let start = out.count
                out.append(contentsOf: repeatElement(0, count: floats.count * 4))
                out.withUnsafeMutableBytes { raw in
                    floats.withUnsafeBufferPointer { f in
                        for i in 0..<f.count {
                            raw.storeBytes(of: f[i].bitPattern.littleEndian, toByteOffset: start + i * 4, as: UInt32.self)
                        }
                    }
                }
            }
        }
        return out
    }

    /// Decodes one message, refusing truncated, oversized or trailing input.
    public static func decode(_ bytes: [UInt8]) throws(AveragingError) -> PushSumAverager.Message {
        var reader = Reader(bytes: bytes)
        let tag = try reader.u8()
        let message: PushSumAverager.Message
        switch tag {
        case ackTag:
            message = .ack(epoch: try reader.u64(), sequence: try reader.u64())
        case transferTag:
            let epoch = try reader.u64()
            let sequence = try reader.u64()
            let weight = Double(bitPattern: try reader.u64())
            let count = Int(try reader.u32())
            let codec = try reader.u8()
            let length = Int(try reader.u32())
            guard count <= maxElements else { throw .tooLarge(elements: count, limit: maxElements) }
            let payloadBytes = try reader.take(length)
            let payload: SharePayload
            if codec == IdentityShareCodec().identifier {
                payload = .floats(try IdentityShareCodec().decode(.bytes(payloadBytes), count: count))
            } else {
                payload = .bytes(payloadBytes)
            }
            message = .transfer(.init(epoch: epoch, sequence: sequence, weight: weight, count: count, codec: codec, payload: payload))
        default:
            throw .unknownMessageTag(tag)
        }
        guard reader.offset == bytes.count else { throw .trailingBytes(bytes.count - reader.offset) }
        return message
    }

    private static func append<T: FixedWidthInteger>(_ v: T, to out: inout [UInt8]) {
        withUnsafeBytes(of: v.littleEndian) { out.append(contentsOf: $0) }
    }

    private struct Reader {
        let bytes: [UInt8]
        var offset = 0

        mutating func take(_ n: Int) throws(AveragingError) -> [UInt8] {
            guard n >= 0, bytes.count - offset >= n else { throw .truncated(needed: n, available: bytes.count - offset) }
            defer { offset += n }
            return Array(bytes[offset..<offset + n])
        }

        mutating func u8() throws(AveragingError) -> UInt8 { try take(1)[0] }

        mutating func u32() throws(AveragingError) -> UInt32 {
            guard bytes.count - offset >= 4 else { throw .truncated(needed: 4, available: bytes.count - offset) }
            var v: UInt32 = 0
            for i in 0..<4 { v |= UInt32(bytes[offset + i]) << (8 * i) }
            offset += 4
            return v
        }

        mutating func u64() throws(AveragingError) -> UInt64 {
            guard bytes.count - offset >= 8 else { throw .truncated(needed: 8, available: bytes.count - offset) }
            var v: UInt64 = 0
            for i in 0..<8 { v |= UInt64(bytes[offset + i]) << (8 * i) }
            offset += 8
            return v
        }
    }
}
