import Gossip
import Learner

/// A learner codec (fp16, int8, top-k) as the averager's share codec.
///
/// The averager subtracts from its value exactly the share the receiver will decode, not the
/// share it meant to send: what the codec rounds away or leaves out stays in the sender's value
/// and leaves with a later share (error feedback). Compression thus never breaks the averaging
/// invariant: the total weight and value, counting transfers in flight, stay exact under any
/// codec (docs/averaging.md). `fp32` is the identity codec.
public struct CompressedShareCodec: ShareCodec {
    /// The learner codec that writes the payload.
    public let codec: any DeltaCodec

    public init(_ codec: any DeltaCodec) { self.codec = codec }

    /// The share codec for `--compress SPEC`: `fp32` (no compression), `fp16`, `int8` or
    /// `topk:FRACTION`, the spellings `Codecs.parse` knows.
    public static func named(_ spec: String) throws -> any ShareCodec {
        let codec = try Codecs.parse(spec)
        return codec.tag == .fp32 ? IdentityShareCodec() : CompressedShareCodec(codec)
    }

    /// On the wire: 16 plus the learner codec's tag, apart from the identity codec's 0.
    public var identifier: UInt8 { 0x10 | codec.tag.rawValue }

    /// Top-k is sparse push-sum: a transfer carries the k coordinates whose estimates moved
    /// most since this node last sent them, each with a weight of its own (``SparseShare``).
    /// Compressing whole values instead would move all of a share's weight with a tenth of its
    /// value, and the estimates would swing instead of converging.
    public var sparseSelection: SparseSelection? {
        guard let topK = codec as? TopKCodec else { return nil }
        return SparseSelection(count: topK.keep, largest: TopKCodec.largestIndices)
    }

    public func encode(_ share: [Float]) -> (payload: SharePayload, decoded: [Float]) {
        let bytes = codec.encode(share)
        if let decoded = try? codec.decode(bytes, expectedCount: share.count) { return (.bytes(bytes), decoded) }
        // A share the codec cannot represent (fp16 beyond ±65,504) moves nothing this time:
        // zeros go out and the whole share stays in the sender's value.
        let zeros = [Float](repeating: 0, count: share.count)
        return (.bytes(codec.encode(zeros)), zeros)
    }

    public func decode(_ payload: SharePayload, count: Int) throws(AveragingError) -> [Float] {
        guard case .bytes(let bytes) = payload else { throw .badPayload("expected \(codec.name) bytes, got raw floats") }
        do {
            return try codec.decode(bytes, expectedCount: count)
        } catch {
            throw .badPayload("\(codec.name): \(error)")
        }
    }
}
