import Crypto

/// How the share of a push-sum transfer travels: the hook for compression codecs.
///
/// Mass stays exact whatever the codec loses, because the sender subtracts from its own
/// value exactly the share the receiver will decode (``ShareCodec/encode(_:)`` returns it),
/// not the share it intended to send. What a lossy codec leaves out stays at the sender
/// and goes out with a later transfer (error feedback for free).

/// The encoded share carried by a transfer.
public enum SharePayload: Sendable, Equatable {
    /// Uncompressed 32-bit floats (the identity codec); shared with the sender's in-flight record.
    case floats([Float])
    /// Codec-specific bytes.
    case bytes([UInt8])

    /// Bytes this payload occupies on the wire.
    public var byteCount: Int {
        switch self {
        case .floats(let values): return values.count * MemoryLayout<Float>.size
        case .bytes(let bytes): return bytes.count
        }
    }
}

/// A compression codec for shares. Implementations live with the learner (fp16, int8, top-k).
public protocol ShareCodec: Sendable {
    /// Identifies the codec on the wire; a receiver rejects shares from a codec it does not run.
    var identifier: UInt8 { get }
    /// Encodes `share`; returns the payload and the exact share the receiver will decode from it.
    func encode(_ share: [Float]) -> (payload: SharePayload, decoded: [Float])
    /// Decodes a payload of `count` elements.
    func decode(_ payload: SharePayload, count: Int) throws(AveragingError) -> [Float]
    /// True if `encode(share).decoded` is always `share` itself: the sender may then take
    /// the share out of its value in the same pass that computes it.
    var decodesExactly: Bool { get }
    /// For a sparse codec, how a transfer chooses the coordinates it carries (sparse push-sum:
    /// each coordinate then has a weight of its own, see ``SparseShare``); nil for a dense
    /// codec, whose transfers carry every coordinate at the one weight of the node.
    var sparseSelection: SparseSelection? { get }
}

extension ShareCodec {
    public var decodesExactly: Bool { false }
    public var sparseSelection: SparseSelection? { nil }
}

/// How a sparse codec picks the coordinates of a transfer (top-k: the largest priorities).
public struct SparseSelection: Sendable {
    /// Coordinates carried by one transfer of a vector of this many elements (at least 1).
    public let count: @Sendable (_ dimension: Int) -> Int
    /// Indices, ascending, of the `k` largest of `priorities` (ties to the lower index).
    public let largest: @Sendable (_ priorities: [Float], _ k: Int) -> [Int]

    public init(count: @escaping @Sendable (Int) -> Int, largest: @escaping @Sendable ([Float], Int) -> [Int]) {
        self.count = count
        self.largest = largest
    }
}

/// Sends shares as plain 32-bit floats.
public struct IdentityShareCodec: ShareCodec {
    public init() {}

    public var identifier: UInt8 { 0 }

    public var decodesExactly: Bool { true }

    public func encode(_ share: [Float]) -> (payload: SharePayload, decoded: [Float]) {
        (.floats(share), share)
    }

    /// Appends `floats` as little-endian float32 values, the identity codec's payload bytes.
    static func appendLittleEndian(_ floats: [Float], to writer: inout ByteWriter) {
        #if _endian(little)
        floats.withUnsafeBytes { writer.write(bytes: $0) }
        #else
        for x in floats { withUnsafeBytes(of: x.bitPattern.littleEndian) { writer.write(bytes: $0) } }
        #endif
    }

    public func decode(_ payload: SharePayload, count: Int) throws(AveragingError) -> [Float] {
        switch payload {
        case .floats(let values):
            guard values.count == count else {
                throw .wrongDimension(expected: count, got: values.count)
            }
            return values
        case .bytes(let bytes):
            guard bytes.count == count * MemoryLayout<Float>.size else {
                throw .wrongDimension(expected: count, got: bytes.count / MemoryLayout<Float>.size)
            }
            return [Float](unsafeUninitializedCapacity: count) { buffer, initialized in
                bytes.withUnsafeBytes { raw in
                    for i in 0..<count {
                        buffer[i] = Float(bitPattern: UInt32(littleEndian: raw.loadUnaligned(fromByteOffset: i * 4, as: UInt32.self)))
                    }
                }
                initialized = count
            }
        }
    }
}

/// Why a transfer or a wire message was refused.
public enum AveragingError: Error, Sendable, Equatable, CustomStringConvertible {
    case wrongDimension(expected: Int, got: Int)
    case nonFinite
    case negativeWeight
    case unknownCodec(UInt8)
    case unknownMessageTag(UInt8)
    case tooLarge(elements: Int, limit: Int)
    /// The message's bytes are malformed (truncated, trailing bytes, bad field).
    case wire(WireError)
    /// A transfer or acknowledgement that did not arrive over an authenticated session.
    case unauthenticated
    /// The share's payload does not decode with its codec (the codec's own reason).
    case badPayload(String)

    public var description: String {
        switch self {
        case .wrongDimension(let e, let g): return "share has \(g) elements, this node averages \(e)"
        case .nonFinite: return "share contains NaN or infinity"
        case .negativeWeight: return "share carries a negative or non-finite weight"
        case .unknownCodec(let c): return "share uses codec \(c), which this node does not run"
        case .unknownMessageTag(let t): return "unknown averaging message tag \(t)"
        case .tooLarge(let n, let l): return "share of \(n) elements exceeds the limit of \(l)"
        case .wire(let error): return "malformed averaging message: \(error)"
        case .unauthenticated: return "averaging message did not arrive over an authenticated session"
        case .badPayload(let reason): return "share payload does not decode: \(reason)"
        }
    }
}
