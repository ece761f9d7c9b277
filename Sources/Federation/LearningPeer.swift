import Gossip
import Learner

/// An evaluation of a node's model on its test set, and when it finished.
public struct TimedEvaluation: Sendable, Equatable {
    public var accuracy: Double
    public var loss: Double
    public var at: Instant
}

/// What every learning peer reports beyond its overlay's events, whatever its algorithm.
public enum LearningEvent: Sendable, Equatable {
    /// A training round finished, with its mean training loss.
    case trained(loss: Double)
    /// The model was evaluated on the node's test set.
    case evaluated(accuracy: Double, loss: Double)
    /// A late joiner started training: from the network's model (`pulled`) or, when no peer
    /// had one, from the initial model.
    case joined(pulled: Bool)
    /// A model copy that does not fit this peer's model (codec, size, values) was refused.
    case refused(from: Sender)
}

/// A learning peer of the overlay, whatever its algorithm: what `peer join --data` runs,
/// shows in `peer status`, saves in its checkpoints and predicts with.
public protocol LearningPeer: OverlayNode {
    var architecture: Architecture { get }
    /// The model the peer holds now; nil while it holds none (a joiner before its first model).
    var model: Model? { get }
    /// How the model's inputs are scaled now.
    var normalizer: Normalizer? { get }
    var roundsTrained: Int { get }
    var stepsTrained: Int { get }
    /// Mean training loss of the last round.
    var trainingLoss: Double? { get }
    var lastEvaluation: TimedEvaluation? { get }
    /// When the model last changed.
    var modelChangedAt: Instant? { get }
    /// Whether the peer still waits for the network's model (a late joiner).
    var joining: Bool { get }
    /// What a restart needs to resume training.
    var checkpoint: LearningCheckpoint { get }
    /// Resumes training from a checkpoint.
    mutating func restore(_ checkpoint: LearningCheckpoint) throws
    /// The learning event inside `event`, if it is one.
    static func learningEvent(_ event: Event) -> LearningEvent?
}

/// Evaluation of a node's model on its test set every so often, as work for its driver (about
/// two multiply-adds per parameter per sample): one piece of code for every learning node.
struct PeriodicEvaluation: Sendable {
    let test: Dataset?
    let interval: Duration
    private(set) var last: TimedEvaluation?
    private var pending: UInt64?

    /// Evaluates on `test` (scaled by the fixed normaliser, or raw with agreed scaling) every `interval`.
    init(test: Dataset?, interval: Duration) {
        self.test = test
        self.interval = interval
    }

    /// Forgets a request a crash or restart lost.
    mutating func reset() { pending = nil }

    /// Whether `id` is this evaluation's request.
    func owns(_ id: UInt64) -> Bool { id == pending }

    /// The request to evaluate `model`, its inputs scaled by `rescaling` first (agreed
    /// scaling); nil without a test set or while one runs.
    mutating func request(id: UInt64, model: Model, rescaling: Normalizer?) -> ComputeRequest? {
        guard let test, pending == nil else { return nil }
        pending = id
        let cost = Double(test.count * model.architecture.parameterCount * 2)
        return ComputeRequest(id: id, cost: cost) { () -> any Sendable in
            var test = test
            if let rescaling { try? test.normalize(with: rescaling) }
            return (try? model.evaluate(on: test)) as Evaluation?
        }
    }

    /// Takes the result of request `id` (which ``owns(_:)``); the evaluation, if it succeeded.
    mutating func finish(_ id: UInt64, result: any Sendable, at now: Instant) -> TimedEvaluation? {
        guard id == pending else { return nil }
        pending = nil
        guard let evaluation = result as? Evaluation else { return nil }
        last = TimedEvaluation(accuracy: evaluation.accuracy, loss: evaluation.loss, at: now)
        return last
    }
}
