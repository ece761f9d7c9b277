import Crypto
import Gossip
import Learner

/// A learning peer of the overlay whose model travels by copies: gossip learning or D-PSGD
/// (``ModelExchangeAlgorithm``) over the peer-sampling view. What `peer join --data
/// --algorithm gossip-learning|dpsgd` runs, and what the simulator runs over the protocol's
/// own peer sampling.
///
/// - The algorithm's neighbours are the overlay's view, handed over whenever it changes; its
///   copies travel as ``GossipMessage/model(_:)`` over the peers' sessions, signed by their
///   author (``ModelCopyEnvelope``).
/// - With agreed scaling the overlay's averager holds only the inputs' moments
///   (``AveragedLayout/init(momentsOf:)``), weighted by sample counts, so the peers standardise
///   by the whole network's mean and variance exactly as stochastic gradient push does.
/// - A peer that starts with no model of its own (`joining`) neither trains nor sends until
///   a copy arrives: it takes that model as its own (it can predict at once, and it does not
///   pull the network back to the initial model), evaluates it, then trains. When no copy arrives within
///   ``Settings/joinTimeout`` it is among the network's first peers and starts from the
///   initial model.
/// - With a test set it evaluates its model every ``Settings/evaluationInterval``.
public struct ModelExchangePeer<Algorithm: ModelExchangeAlgorithm>: LearningPeer {
    public typealias Message = GossipMessage

    public enum Timer: Hashable, Sendable {
        case base(GossipTimer)
        case algorithm(Algorithm.Timer)
        case evaluate
        case join
    }

    public enum Event: Sendable {
        case base(GossipEvent)
        case algorithm(ModelExchangeEvent)
        case evaluated(accuracy: Double, loss: Double)
        case joined(pulled: Bool)
    }

    public struct Settings: Sendable {
        /// Time between two evaluations on the test set (none without one).
        public var evaluationInterval: Duration = .seconds(10)
        /// How long a joining peer waits for a copy of the network's model (as
        /// ``LearningNode/Settings/joinTimeout``).
        public var joinTimeout: Duration = .seconds(3)

        public init() {}
    }

    public var peerID: PeerID { base.peerID }
    public private(set) var base: GossipNode
    public private(set) var algorithm: Algorithm
    public let settings: Settings
    public let scaling: InputScaling
    public var architecture: Architecture { algorithm.architecture }
    public private(set) var joining: Bool
    public private(set) var stepsTrained = 0
    public private(set) var trainingLoss: Double?
    public private(set) var modelChangedAt: Instant?
    public var lastEvaluation: TimedEvaluation? { evaluation.last }
    /// With agreed scaling, where the moments lie in the overlay's averaged vector.
    private let moments: AveragedLayout?
    private var data: ScaledTrainingData
    /// What the algorithm trains on, with agreed scaling: the data as given (unscaled, until
    /// the first refresh), none (while the network's moments are unknown) or scaled.
    private enum Holding { case given, none, scaled }
    private var holding = Holding.given
    private var evaluation: PeriodicEvaluation
    private var evaluations: UInt64 = 0

    /// Evaluation requests are numbered from here, apart from the algorithm's own.
    static var evaluationIDs: UInt64 { 1 << 63 }

    /// A peer running `algorithm` (which trains on `data`, scaled by the fixed normaliser or
    /// raw with agreed scaling) in the overlay `base`, whose averager must hold the moments of
    /// `data` (``initialMoments(of:)``) with agreed scaling and may be absent otherwise.
    public init(base: GossipNode, algorithm: Algorithm, data: Dataset, test: Dataset? = nil, scaling: InputScaling,
                settings: Settings = Settings(), joining: Bool) throws {
        let architecture = algorithm.architecture
        if case .agreed = scaling {
            let layout = AveragedLayout(momentsOf: architecture.inputCount)
            guard base.averager?.dimension == layout.dimension else {
                throw LearnerError.invalidArgument("with the network's scaling the overlay must average the \(layout.dimension) moments of a \(architecture)'s inputs")
            }
            moments = layout
        } else {
            moments = nil
        }
        if let test, test.featureCount != architecture.inputCount || test.classCount > architecture.classCount {
            throw LearnerError.shapeMismatch("the test set has \(test.featureCount) features and \(test.classCount) classes; the model is a \(architecture)")
        }
        self.base = base
        self.algorithm = algorithm
        self.data = ScaledTrainingData(data)
        self.scaling = scaling
        self.settings = settings
        self.joining = joining
        evaluation = PeriodicEvaluation(test: test, interval: settings.evaluationInterval)
        refreshTrainingData()
    }

    /// The vector the overlay's averager starts from with agreed scaling: `data`'s moments.
    public static func initialMoments(of data: Dataset) -> [Float] {
        AveragedLayout(momentsOf: data.featureCount).vector(parameters: [], moments: AveragedLayout.moments(of: data))
    }

    public var model: Model? {
        joining ? nil : try? Model(architecture: architecture, parameters: algorithm.parameters)
    }

    public var normalizer: Normalizer? {
        switch scaling {
        case .fixed(let normalizer): return normalizer
        case .agreed: return base.averager?.estimate.flatMap { moments?.normalizer(of: $0) }
        }
    }

    public var roundsTrained: Int { algorithm.roundsTrained }

    public var checkpoint: LearningCheckpoint {
        LearningCheckpoint(rounds: roundsTrained, steps: stepsTrained, optimizer: algorithm.optimizerState, parameters: algorithm.parameters)
    }

    /// Resumes a checkpoint with parameters (one without is a stochastic gradient push peer's).
    public mutating func restore(_ checkpoint: LearningCheckpoint) throws {
        guard let parameters = checkpoint.parameters else {
            throw LearnerError.invalidArgument("the checkpoint holds no model: it was saved by a peer running stochastic gradient push")
        }
        try algorithm.restore(parameters: parameters, rounds: checkpoint.rounds, optimizer: checkpoint.optimizer)
        stepsTrained = max(0, checkpoint.steps)
        joining = false
    }

    public static func learningEvent(_ event: Event) -> LearningEvent? {
        switch event {
        case .base: return nil
        case .algorithm(.refused(let sender)): return .refused(from: sender)
        case .algorithm(.trained(let loss)): return .trained(loss: loss)
        case .evaluated(let accuracy, let loss): return .evaluated(accuracy: accuracy, loss: loss)
        case .joined(let pulled): return .joined(pulled: pulled)
        }
    }

    // MARK: ProtocolNode

    public mutating func onStart(at now: Instant) -> [Action] {
        evaluation.reset()
        var actions = wrap(base.onStart(at: now))
        if joining {
            actions.append(.schedule(.join, at: now + settings.joinTimeout))
        } else {
            actions += startAlgorithm(at: now)
        }
        if evaluation.test != nil { actions.append(.schedule(.evaluate, at: now)) }
        return actions
    }

    public mutating func onMessage(_ message: GossipMessage, from sender: Sender, at now: Instant) -> [Action] {
        guard case .model(let copy) = message else { return wrap(base.onMessage(message, from: sender, at: now)) }
        guard sender.peer != nil else {
            return [.report(.base(.refused(from: sender.endpoint, reason: "model copy outside a session")))]
        }
        guard joining else {
            refreshTrainingData()
            return wrap(algorithm.onMessage(.model(copy), from: sender, at: now), at: now)
        }
        guard algorithm.adopt(copy) else { return [.report(.algorithm(.refused(from: sender)))] }
        return joined(pulled: true, at: now)
    }

    public mutating func onTimer(_ timer: Timer, at now: Instant) -> [Action] {
        switch timer {
        case .base(let t):
            return wrap(base.onTimer(t, at: now))
        case .algorithm(let t):
            refreshTrainingData()
            return wrap(algorithm.onTimer(t, at: now), at: now)
        case .evaluate:
            return startEvaluation(at: now)
        case .join:
            guard joining else { return [] }
            return joined(pulled: false, at: now)
        }
    }

    public mutating func onComputed(_ id: UInt64, result: any Sendable, at now: Instant) -> [Action] {
        guard evaluation.owns(id) else { return wrap(algorithm.onComputed(id, result: result, at: now), at: now) }
        var actions: [Action] = [.schedule(.evaluate, at: now + settings.evaluationInterval)]
        if let evaluated = evaluation.finish(id, result: result, at: now) {
            actions.append(.report(.evaluated(accuracy: evaluated.accuracy, loss: evaluated.loss)))
        }
        return actions
    }

    // MARK: Composition

    /// Ends the wait for the network's model: evaluates the model it starts from at once (a
    /// joiner's status shows what it pulled), then trains.
    private mutating func joined(pulled: Bool, at now: Instant) -> [Action] {
        joining = false
        modelChangedAt = now
        var actions: [Action] = [.cancel(.join), .report(.joined(pulled: pulled))]
        actions += startEvaluation(at: now)
        return actions + startAlgorithm(at: now)
    }

    private mutating func startAlgorithm(at now: Instant) -> [Action] {
        refreshTrainingData()
        return wrap(algorithm.onStart(at: now), at: now)
    }

    /// With agreed scaling, trains the next rounds on the data as the network's moments scale
    /// it now; while they are unknown (an averager without weight), on no data: the algorithm
    /// then only mixes, as a push-sum peer without weight only averages.
    private mutating func refreshTrainingData() {
        guard moments != nil else { return }
        guard let normalizer else {
            if holding != .none, let none = try? data.data.subset([]) {
                algorithm.replaceTrainingData(none)
                holding = .none
            }
            return
        }
        let (scaled, changed) = data.scaled(by: normalizer)
        if changed || holding != .scaled {
            algorithm.replaceTrainingData(scaled)
            holding = .scaled
        }
    }

    private mutating func startEvaluation(at now: Instant) -> [Action] {
        guard let model, let normalizer else {
            return evaluation.test == nil ? [] : [.schedule(.evaluate, at: now + settings.evaluationInterval)]
        }
        evaluations += 1
        let id = Self.evaluationIDs | evaluations
        guard let request = evaluation.request(id: id, model: model, rescaling: moments == nil ? nil : normalizer) else { return [] }
        return [.compute(request)]
    }

    /// The overlay's actions, wrapped; the algorithm's neighbours follow the view.
    private mutating func wrap(_ actions: [GossipNode.Action]) -> [Action] {
        let view = base.neighbours
        if view != algorithm.neighbours { algorithm.neighbours = view }
        return actions.map { $0.wrapped(message: { $0 }, timer: Timer.base, event: Event.base) }
    }

    /// The algorithm's actions, wrapped; a finished round counts its steps.
    private mutating func wrap(_ actions: [Algorithm.Action], at now: Instant) -> [Action] {
        for case .report(.trained(let loss)) in actions {
            stepsTrained += algorithm.localSteps
            trainingLoss = loss
            modelChangedAt = now
        }
        return actions.map { action in
            action.wrapped(message: { (m: ModelExchangeMessage) -> GossipMessage in
                switch m { case .model(let copy): return .model(copy) }
            }, timer: Timer.algorithm, event: Event.algorithm)
        }
    }
}

/// The overlay's side: what the runtime reads and calls.
extension ModelExchangePeer: OverlayNode {
    public var overlay: GossipNode { base }

    public mutating func leave(at now: Instant) -> [Action] { wrap(base.leave(at: now)) }

    public mutating func publish(_ manifest: ReleaseManifest, file: [UInt8], delta: [UInt8]?, at now: Instant) throws(ReleaseError) -> [Action] {
        wrap(try base.publish(manifest, file: file, delta: delta, at: now))
    }

    public mutating func rollBack(_ notice: RollbackNotice, at now: Instant) throws(ReleaseError) -> [Action] {
        wrap(try base.rollBack(notice, at: now))
    }

    public static func overlayEvent(_ event: Event) -> GossipEvent? {
        if case .base(let e) = event { return e }
        return nil
    }
}
