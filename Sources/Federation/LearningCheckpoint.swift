import Crypto
import Learner

/// What a learning peer saves beside its averaging state so that a restart resumes training
/// where it stopped: the training counters, the optimizer's state (its step, which drives the
/// learning-rate schedule, and its momentum) and, for the algorithms whose model travels by
/// copies (gossip learning, D-PSGD), the model's parameters. With stochastic gradient push the
/// model lives in the averaging state (`v / w`), which is written before every transfer or
/// acknowledgement leaves, so the checkpoint holds no parameters.
///
/// Encoding (big-endian): `"MLC1" ‖ rounds u64 ‖ steps u64 ‖ optimizer step u64 ‖ count u32 ‖
/// velocity (f32 bits × count) ‖ BLAKE2b-256 of everything before it`; with parameters the
/// magic is `"MLC2"` and `parameter count u32 ‖ parameters (f32 bits × count)` come before the
/// digest. The digest makes a torn or damaged file fail to load, so the previous checkpoint is
/// used instead.
public struct LearningCheckpoint: Equatable, Sendable {
    static let magic = Array("MLC1".utf8)
    static let magicWithParameters = Array("MLC2".utf8)
    /// Bound checked before allocating: the largest model the averager carries.
    static let maxParameters = 1 << 26

    public var rounds: Int
    public var steps: Int
    public var optimizer: SGDState
    /// The model, when it lives nowhere else (the model-exchanging algorithms).
    public var parameters: [Float]?

    public init(rounds: Int, steps: Int, optimizer: SGDState, parameters: [Float]? = nil) {
        self.rounds = rounds
        self.steps = steps
        self.optimizer = optimizer
        self.parameters = parameters
    }

    public func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: 64 + optimizer.velocity.count * 4 + (parameters?.count ?? 0) * 4)
        w.write(bytes: parameters == nil ? Self.magic : Self.magicWithParameters)
        w.writeUInt64(UInt64(max(0, rounds)))
        w.writeUInt64(UInt64(max(0, steps)))
        w.writeUInt64(UInt64(max(0, optimizer.step)))
        w.writeUInt32(UInt32(optimizer.velocity.count))
        for v in optimizer.velocity { w.writeUInt32(v.bitPattern) }
        if let parameters {
            w.writeUInt32(UInt32(parameters.count))
            for p in parameters { w.writeUInt32(p.bitPattern) }
        }
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
        let magic = try r.readBytes(4, "checkpoint magic")
        guard magic == Self.magic || magic == Self.magicWithParameters else {
            throw .invalidValue(field: "checkpoint magic", reason: "not a Murmuration learning checkpoint (expected MLC1 or MLC2)")
        }
        let rounds = try r.readUInt64("rounds"), steps = try r.readUInt64("steps"), step = try r.readUInt64("optimizer step")
        let count = Int(try r.readUInt32("parameter count"))
        guard count <= Self.maxParameters, rounds <= UInt64(Int.max), steps <= UInt64(Int.max), step <= UInt64(Int.max) else {
            throw .lengthTooLarge(field: "parameter count", declared: UInt64(count), maximum: Self.maxParameters)
        }
        guard r.remaining >= count * 4 else { throw .truncated(field: "velocity", needed: count * 4, available: r.remaining) }
        var state = SGDState(parameterCount: count)
        for i in 0..<count { state.velocity[i] = Float(bitPattern: try r.readUInt32("velocity")) }
        state.step = Int(step)
        var parameters: [Float]?
        if magic == Self.magicWithParameters {
            let n = Int(try r.readUInt32("model parameter count"))
            guard n <= Self.maxParameters else { throw .lengthTooLarge(field: "model parameter count", declared: UInt64(n), maximum: Self.maxParameters) }
            guard r.remaining >= n * 4 else { throw .truncated(field: "model parameters", needed: n * 4, available: r.remaining) }
            var values = [Float](repeating: 0, count: n)
            for i in 0..<n { values[i] = Float(bitPattern: try r.readUInt32("model parameters")) }
            guard values.allSatisfy(\.isFinite) else { throw .invalidValue(field: "model parameters", reason: "NaN or infinity") }
            parameters = values
        }
        try r.expectEnd()
        self.init(rounds: Int(rounds), steps: Int(steps), optimizer: state, parameters: parameters)
    }
}
