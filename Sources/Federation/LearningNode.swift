import Crypto
import DeterministicRandom
import Gossip
import Learner

/// A peer that trains one model with the others by stochastic gradient push (Assran et al.
/// 2019): push-sum averaging of the model's parameters, weighted by sample counts, with local
/// training on the de-biased estimate between exchanges.
///
/// Every so often the node asks its driver (``NodeAction/compute(_:)``) to run a few local SGD
/// steps from its current estimate `v/w`; when they are done it adds the change they made,
/// scaled by its weight, to its value (``PushSumAverager/applyLocalUpdate(_:)``). Meanwhile
/// gossip goes on. Training creates and loses no weight, so the averaging stays exact under
/// loss while the models learn.
///
/// The node's neighbours are fixed (a topology experiment); the composition with membership
/// and peer sampling for real peers is the next step.
public struct LearningNode: ProtocolNode {
    public typealias Message = PushSumAverager.Message

    public enum Timer: Hashable, Sendable {
        case averaging(PushSumAverager.Timer)
        case train
    }

    public enum Event: Sendable {
        case averaging(PushSumAverager.Event)
        /// Local steps finished, with their mean training loss.
        case trained(steps: Int, loss: Double)
    }

    /// How the node trains between exchanges.
    public struct Settings: Sendable {
        /// SGD steps per training round.
        public var localSteps = 5
        /// Pause between the end of one training round and the start of the next.
        public var trainInterval: Duration = .milliseconds(100)
        /// Batch size, learning rate and momentum of the local steps.
        public var trainer = TrainerConfig(batchSize: 32, sgd: SGDConfig(learningRate: 0.05, momentum: 0, weightDecay: 0))

        public init() {}
    }

    /// What a training round sends back to the node.
    struct Outcome: Sendable {
        var parameters: [Float]
        var trainer: Trainer
        var loss: Double
    }

    public var peerID: PeerID { averager.peerID }
    public private(set) var averager: PushSumAverager
    public let architecture: Architecture
    public let settings: Settings
    public private(set) var roundsTrained = 0
    private let data: Dataset
    private var trainer: Trainer
    /// The training round in progress: its request and the parameters it started from.
    private var training: (id: UInt64, start: [Float])?
    private var nextRequest: UInt64 = 0

    /// A node holding `data`, starting from `initial` (the same parameters on every node),
    /// averaging with `neighbours`. Its weight is its sample count.
    public init(peer: PeerID, neighbours: [PeerAddress], architecture: Architecture, initial: Model, data: Dataset,
                settings: Settings = Settings(), averaging: PushSumAverager.Settings = .init(),
                codec: any ShareCodec = IdentityShareCodec(), seed: UInt64) throws {
        guard initial.architecture == architecture else {
            throw LearnerError.invalidArgument("the initial model is a \(initial.architecture), the node trains a \(architecture)")
        }
        guard settings.localSteps >= 1 else { throw LearnerError.invalidArgument("local steps must be at least 1, got \(settings.localSteps)") }
        self.architecture = architecture
        self.data = data
        self.settings = settings
        var config = settings.trainer
        config.seed = seed
        trainer = try Trainer(architecture: architecture, config: config)
        averager = PushSumAverager(peer: peer, initial: initial.flatten(), sampleCount: Double(data.count), neighbours: neighbours,
                                   settings: averaging, codec: codec, rng: SplitMix64(seed: seed ^ 0xA5A5_5A5A))
    }

    /// The model this node holds now (its estimate), nil while it holds no weight.
    public var model: Model? {
        averager.estimate.flatMap { try? Model(architecture: architecture, parameters: $0.map { Float($0) }) }
    }

    public mutating func onStart(at now: Instant) -> [Action] {
        training = nil
        var actions = wrap(averager.onStart(at: now))
        actions.append(.schedule(.train, at: now))
        return actions
    }

    public mutating func onMessage(_ message: Message, from sender: Sender, at now: Instant) -> [Action] {
        wrap(averager.onMessage(message, from: sender, at: now))
    }

    public mutating func onTimer(_ timer: Timer, at now: Instant) -> [Action] {
        switch timer {
        case .averaging(let t): return wrap(averager.onTimer(t, at: now))
        case .train: return startTraining(at: now)
        }
    }

    public mutating func onComputed(_ id: UInt64, result: any Sendable, at now: Instant) -> [Action] {
        guard let (expected, start) = training, expected == id else { return [] }
        training = nil
        var actions: [Action] = [.schedule(.train, at: now + settings.trainInterval)]
        guard let outcome = result as? Outcome, outcome.parameters.count == start.count else { return actions }
        trainer = outcome.trainer
        let change = zip(outcome.parameters, start).map { $0 - $1 }
        if (try? averager.applyLocalUpdate(change)) == true {
            roundsTrained += 1
            actions.append(.report(.trained(steps: settings.localSteps, loss: outcome.loss)))
        }
        return actions
    }

    /// Asks the driver to run the local steps from the current estimate; a node without data
    /// or weight only averages, and looks again later.
    private mutating func startTraining(at now: Instant) -> [Action] {
        guard training == nil else { return [] }
        guard data.count > 0, let estimate = averager.estimate else { return [.schedule(.train, at: now + settings.trainInterval)] }
        let start = estimate.map { Float($0) }
        nextRequest += 1
        training = (nextRequest, start)
        let (trainer, data, architecture, steps) = (self.trainer, self.data, self.architecture, settings.localSteps)
        // Forward and backward passes: about six multiply-adds per parameter per sample.
        let cost = Double(steps * trainer.config.batchSize * architecture.parameterCount * 6)
        return [.compute(ComputeRequest(id: nextRequest, cost: cost) {
            var trainer = trainer
            guard var model = try? Model(architecture: architecture, parameters: start),
                  let loss = try? trainer.train(&model, on: data, steps: steps) else {
                return Outcome(parameters: [], trainer: trainer, loss: .nan)
            }
            return Outcome(parameters: model.flatten(), trainer: trainer, loss: loss)
        })]
    }

    private func wrap(_ actions: [PushSumAverager.Action]) -> [Action] {
        actions.map { action in
            switch action {
            case let .send(m, to, via): return .send(m, to: to, via: via)
            case let .schedule(t, at): return .schedule(.averaging(t), at: at)
            case let .cancel(t): return .cancel(.averaging(t))
            case let .report(e): return .report(.averaging(e))
            case let .compute(request): return .compute(request)
            }
        }
    }
}
