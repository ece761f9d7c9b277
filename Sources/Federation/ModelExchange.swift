import Crypto
import Gossip
import Learner

/// What the model-exchanging nodes (gossip learning, D-PSGD) report.
public enum ModelExchangeEvent: Sendable {
    /// A training round finished, with its mean loss.
    case trained(loss: Double)
    /// A copy that does not fit this node's model (codec, size, values) was refused.
    case refused(from: Sender)
}

/// What model-exchanging nodes send each other (inside an overlay, ``GossipMessage/model(_:)``).
public enum ModelExchangeMessage: Sendable, Equatable, WireSized, TraceIdentified {
    case model(ModelCopy)

    /// The signed envelope's size on a session (``ModelCopyEnvelope``).
    public var wireSize: Int {
        switch self {
        case .model(let copy): return copy.wireSize
        }
    }

    public var traceWord: UInt64 {
        switch self {
        case .model(let copy): return traceMix(0x51, copy.age, UInt64(copy.degree), UInt64(copy.count))
        }
    }
}

/// A node's trainer, and local SGD steps as work for its driver: one piece of code for every
/// learning algorithm.
///
/// The trainer moves into each job and back with its result, so the job holds the only
/// reference to the trainer's buffers (gradient, batch, activations) and mutates them in place
/// instead of copying them every round. A job the node never hears back from (a crash) takes
/// the trainer with it; the next round starts from a trainer rebuilt with the optimizer state
/// of the last round that finished.
struct LocalTraining: Sendable {
    /// Carries the trainer to the job and back.
    final class Handle: @unchecked Sendable {
        // Touched by one thread at a time: the node until it hands the job over, the job while
        // it runs, the node again once the result is back.
        private var trainer: Trainer?
        init(_ trainer: Trainer?) { self.trainer = trainer }
        func take() -> Trainer? {
            defer { trainer = nil }
            return trainer
        }
        func put(_ trainer: Trainer) { self.trainer = trainer }
    }

    /// What a training round sends back.
    struct Outcome: Sendable {
        var parameters: [Float]
        var handle: Handle
        var loss: Double
    }

    let architecture: Architecture
    let config: TrainerConfig
    /// Nil while a job holds it.
    private var trainer: Trainer?
    /// The optimizer's state after the last round that finished.
    private(set) var optimizerState: SGDState

    /// Trains models of `architecture` starting from `initial`, `localSteps` steps a round.
    init(architecture: Architecture, initial: Model, localSteps: Int, config: TrainerConfig) throws {
        guard initial.architecture == architecture else {
            throw LearnerError.invalidArgument("the initial model is a \(initial.architecture), the node trains a \(architecture)")
        }
        guard localSteps >= 1 else { throw LearnerError.invalidArgument("local steps must be at least 1, got \(localSteps)") }
        self.architecture = architecture
        self.config = config
        let trainer = try Trainer(architecture: architecture, config: config)
        self.trainer = trainer
        optimizerState = trainer.optimizer.state
    }

    /// Resumes a checkpoint's model and optimizer; returns the model, checked to fit.
    mutating func resume(parameters: [Float], optimizer state: SGDState) throws -> [Float] {
        guard parameters.count == architecture.parameterCount else {
            throw LearnerError.shapeMismatch("the checkpoint holds \(parameters.count) parameters, a \(architecture) has \(architecture.parameterCount)")
        }
        try restore(state)
        return parameters
    }

    /// Resumes the optimizer from a checkpoint.
    mutating func restore(_ state: SGDState) throws {
        var trainer = try self.trainer ?? Trainer(architecture: architecture, config: config)
        try trainer.restore(state)
        self.trainer = trainer
        optimizerState = state
    }

    /// A request to run `steps` steps on `data` from `start`; its cost is about six
    /// multiply-adds per parameter per sample (a forward and a backward pass).
    mutating func request(id: UInt64, data: Dataset, start: [Float], steps: Int) -> ComputeRequest {
        let handle = Handle(takeTrainer())
        let architecture = self.architecture
        let cost = Double(steps * config.batchSize * architecture.parameterCount * 6)
        return ComputeRequest(id: id, cost: cost) {
            guard var trainer = handle.take() else { return Outcome(parameters: [], handle: handle, loss: .nan) }
            defer { handle.put(trainer) }
            guard var model = try? Model(architecture: architecture, parameters: start),
                  let loss = try? trainer.train(&model, on: data, steps: steps) else {
                return Outcome(parameters: [], handle: handle, loss: .nan)
            }
            return Outcome(parameters: model.flatten(), handle: handle, loss: loss)
        }
    }

    /// Takes the trainer back from a finished round; returns the round's outcome if it
    /// succeeded with a model of `count` parameters.
    mutating func finish(_ result: any Sendable, count: Int) -> Outcome? {
        guard let outcome = result as? Outcome else { return nil }
        if let trainer = outcome.handle.take() {
            optimizerState = trainer.optimizer.state
            self.trainer = trainer
        }
        guard outcome.parameters.count == count, outcome.loss.isFinite else { return nil }
        return outcome
    }

    /// The trainer, rebuilt from the last finished round's optimizer state if a lost job took
    /// it (the architecture and configuration were accepted when this value was made, so the
    /// rebuild succeeds; were it to fail, the round would fail and be retried).
    private mutating func takeTrainer() -> Trainer? {
        if let trainer {
            self.trainer = nil
            return trainer
        }
        var rebuilt = try? Trainer(architecture: architecture, config: config)
        try? rebuilt?.restore(optimizerState)
        return rebuilt
    }
}

/// Decodes model copies, refusing what does not fit (wrong codec or size, non-finite values).
struct ModelCopyCodec: Sendable {
    let codec: any ShareCodec
    let count: Int

    func encode(_ parameters: [Float], age: UInt64, sequence: UInt64, degree: Int) -> ModelCopy {
        ModelCopy(age: age, sequence: sequence, degree: UInt32(clamping: degree), count: parameters.count, codec: codec.identifier,
                  payload: codec.encode(parameters).payload)
    }

    func decode(_ copy: ModelCopy) -> [Float]? {
        guard copy.codec == codec.identifier, copy.count == count,
              let values = try? codec.decode(copy.payload, count: count), VectorMath.allFinite(values) else { return nil }
        return values
    }
}

/// A learning algorithm that exchanges model copies (gossip learning, D-PSGD): run on its own
/// over fixed neighbours (the simulator's topologies), or inside the overlay by
/// ``ModelExchangePeer``, which hands it the peer-sampling view as its neighbours.
public protocol ModelExchangeAlgorithm: ProtocolNode where Message == ModelExchangeMessage, Event == ModelExchangeEvent {
    var architecture: Architecture { get }
    /// The peers it exchanges with.
    var neighbours: [PeerAddress] { get set }
    /// The node's current model.
    var parameters: [Float] { get }
    /// Training rounds whose result became the model.
    var roundsTrained: Int { get }
    /// SGD steps per training round.
    var localSteps: Int { get }
    /// The optimizer's state after the last round that finished, for a checkpoint.
    var optimizerState: SGDState { get }
    /// Trains later rounds on `data` (the same samples, scaled anew).
    mutating func replaceTrainingData(_ data: Dataset)
    /// Takes the model in `copy` as its own (a late joiner's first model); false if the copy
    /// does not fit (codec, size, values).
    mutating func adopt(_ copy: ModelCopy) -> Bool
    /// Resumes a checkpoint: the model, the rounds behind it and the optimizer.
    mutating func restore(parameters: [Float], rounds: Int, optimizer: SGDState) throws
}
