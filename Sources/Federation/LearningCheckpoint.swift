import Crypto
import Learner

/// What a learning peer saves beside its averaging state so that a restart resumes training
/// where it stopped: the training counters and the optimizer's state (its step, which drives
/// the learning-rate schedule, and its momentum). The model itself lives in the averaging
/// state (`v / w`), which is written before every transfer or acknowledgement leaves.
///
/// Encoding (big-endian): `"MLC1" ‖ rounds u64 ‖ steps u64 ‖ optimizer step u64 ‖ count u32 ‖
/// velocity (f32 bits × count) ‖ BLAKE2b-256 of everything before it`. The digest makes a torn
/// or damaged file fail to load, so the previous checkpoint is used instead.
public struct LearningCheckpoint: Equatable, Sendable {
    static let magic = Array("MLC1".utf8)
    /// Bound checked before allocating: the largest model the averager carries.
    static let maxParameters = 1 << 26

    public var rounds: Int
    public var steps: Int
    public var optimizer: SGDState

    public init(rounds: Int, steps: Int, optimizer: SGDState) {
        self.rounds = rounds
        self.steps = steps
        self.optimizer = optimizer
    }

    /// The checkpoint of `node`'s training.
    public init<Base>(of node: LearningNode<Base>) {
        self.init(rounds: node.roundsTrained, steps: node.stepsTrained, optimizer: node.optimizerState)
    }

    public func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: 64 + optimizer.velocity.count * 4)
        w.write(bytes: Self.magic)
        w.writeUInt64(UInt64(max(0, rounds)))
        w.writeUInt64(UInt64(max(0, steps)))
        w.writeUInt64(UInt64(max(0, optimizer.step)))
        w.writeUInt32(UInt32(optimizer.velocity.count))
        for v in optimizer.velocity { w.writeUInt32(v.bitPattern) }
        w.write(bytes: Blake2b.hash256(w.bytes))
        return w.bytes
    }

    /// Reads a checkpoint, refusing a damaged one with a ``WireError`` naming what is wrong.
    public init(decoding bytes: [UInt8]) throws(WireError) {
        guard bytes.count >= Self.magic.count + Blake2b.digest256Length else { throw .truncated(field: "checkpoint", needed: Self.magic.count + Blake2b.digest256Length, available: bytes.count) }
        let body = Array(bytes.dropLast(Blake2b.digest256Length))
        guard Blake2b.hash256(body) == Array(bytes.suffix(Blake2b.digest256Length)) else {
            throw .invalidValue(field: "checksum", reason: "the file is damaged (its BLAKE2b digest does not match)")
        }
        var r = ByteReader(body)
        guard try r.readBytes(4, "checkpoint magic") == Self.magic else {
            throw .invalidValue(field: "checkpoint magic", reason: "not a Murmuration learning checkpoint (expected MLC1)")
        }
        let rounds = try r.readUInt64("rounds"), steps = try r.readUInt64("steps"), step = try r.readUInt64("optimizer step")
        let count = Int(try r.readUInt32("parameter count"))
        guard count <= Self.maxParameters, rounds <= UInt64(Int.max), steps <= UInt64(Int.max), step <= UInt64(Int.max) else {
            throw .lengthTooLarge(field: "parameter count", declared: UInt64(count), maximum: Self.maxParameters)
        }
        var state = SGDState(parameterCount: count)
        for i in 0..<count { state.velocity[i] = Float(bitPattern: try r.readUInt32("velocity")) }
        state.step = Int(step)
        try r.expectEnd()
        self.init(rounds: Int(rounds), steps: Int(steps), optimizer: state)
    }
}
