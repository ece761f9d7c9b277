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
/// The averaging runs in `Base`: a bare ``PushSumAverager`` over fixed neighbours (topology
/// experiments in the simulator) or a ``GossipNode``, whose neighbours come from membership and
/// peer sampling (real peers, `peer join`). The same learning protocol runs over both.
///
/// A node whose averager was made with ``PushSumAverager/init(joining:dimension:sampleCount:neighbours:settings:codec:rng:)``
/// joins late: it first takes the network's current model from the shares it receives, adds
/// its own samples' mass at that model, and only then trains; if no share arrives within
/// ``Settings/joinTimeout`` (the first peers of a network) it starts from the initial model.
///
/// With a test set the node also evaluates its model every ``Settings/evaluationInterval``, as
/// work for its driver like training.
public struct LearningNode<Base: AveragingHost>: ProtocolNode {
    public typealias Message = Base.Message

    public enum Timer: Hashable, Sendable {
        case base(Base.Timer)
        case train
        case evaluate
        case join
    }

    public enum Event: Sendable {
        case base(Base.Event)
        /// Local steps finished, with their mean training loss.
        case trained(steps: Int, loss: Double)
        /// The model was evaluated on the node's test set.
        case evaluated(accuracy: Double, loss: Double)
        /// The node added its own mass: at the model it received (`pulled`) or at the initial one.
        case joined(pulled: Bool)
    }

    /// How the node trains between exchanges.
    public struct Settings: Sendable {
        /// SGD steps per training round.
        public var localSteps = 5
        /// Pause between the end of one training round and the start of the next.
        public var trainInterval: Duration = .milliseconds(100)
        /// Batch size, learning rate and momentum of the local steps.
        public var trainer = TrainerConfig(batchSize: 32, sgd: SGDConfig(learningRate: 0.05, momentum: 0, weightDecay: 0))
        /// Time between two evaluations on the test set (none without one). Ten seconds keeps
        /// the cost of evaluating on 2,000 images under 1 % of a core.
        public var evaluationInterval: Duration = .seconds(10)
        /// How long a joining node waits for a share carrying the network's model before it
        /// starts from the initial model (it is then among the network's first peers). Three
        /// seconds is several gossip rounds of every profile but the wide-area one.
        public var joinTimeout: Duration = .seconds(3)

        public init() {}
    }

    public var peerID: PeerID { base.peerID }
    /// The averaging node underneath: its averager holds the model as `v/w`.
    public private(set) var base: Base
    public let architecture: Architecture
    public let settings: Settings
    /// Training rounds whose change was applied, and their SGD steps.
    public private(set) var roundsTrained = 0
    public private(set) var stepsTrained = 0
    /// Mean training loss of the last round.
    public private(set) var trainingLoss: Double?
    /// The latest evaluation on the test set.
    public var lastEvaluation: TimedEvaluation? { evaluation.last }
    /// When the model last changed (a training round or a share applied).
    public private(set) var modelChangedAt: Instant?
    /// How inputs are scaled, and where the model and the moments lie in the averaged vector.
    public let scaling: InputScaling
    public let layout: AveragedLayout
    /// Training data: scaled with fixed scaling, raw with agreed scaling (and scaled here).
    private var data: ScaledTrainingData
    /// Evaluation on the test set (scaled like the training data).
    private var evaluation: PeriodicEvaluation
    /// This node's data's moments (agreed scaling), added with its own mass.
    private let moments: [Float]
    /// The model a first peer starts from.
    private let initial: [Float]
    private var local: LocalTraining
    /// The training round in progress: its request and the parameters it started from.
    private var training: (id: UInt64, start: [Float])?
    private var nextRequest: UInt64 = 0
    private var sharesApplied = 0

    /// A node averaging in `base` (whose averager holds ``initialVector(initial:data:scaling:)``,
    /// or joins late with ``AveragedLayout/dimension`` elements), training on `data`, evaluating
    /// on `test` if given: both scaled by the fixed normaliser, or raw with agreed scaling.
    public init(base: Base, architecture: Architecture, initial: Model, data: Dataset, test: Dataset? = nil,
                scaling: InputScaling = .fixed(.identity(featureCount: 0)), settings: Settings = Settings(), seed: UInt64) throws {
        let layout = AveragedLayout(architecture: architecture, scaling: scaling)
        guard let averager = base.averager, averager.dimension == layout.dimension else {
            throw LearnerError.invalidArgument("the averaging node must average the \(layout.dimension) elements of a \(architecture)\(layout.features > 0 ? " and its inputs' moments" : "")")
        }
        if let test, test.featureCount != architecture.inputCount || test.classCount > architecture.classCount {
            throw LearnerError.shapeMismatch("the test set has \(test.featureCount) features and \(test.classCount) classes; the model is a \(architecture)")
        }
        self.base = base
        self.architecture = architecture
        self.data = ScaledTrainingData(data)
        evaluation = PeriodicEvaluation(test: test, interval: settings.evaluationInterval)
        self.scaling = scaling
        self.layout = layout
        moments = layout.features > 0 ? AveragedLayout.moments(of: data) : []
        self.settings = settings
        self.initial = initial.flatten()
        var config = settings.trainer
        config.seed = seed
        local = try LocalTraining(architecture: architecture, initial: initial, localSteps: settings.localSteps, config: config)
    }

    /// The averager holding the model.
    public var averager: PushSumAverager? { base.averager }

    /// The vector a node that does not join late starts from: the initial model and, with
    /// agreed scaling, its data's moments.
    public static func initialVector(initial: Model, data: Dataset, scaling: InputScaling) -> [Float] {
        let layout = AveragedLayout(architecture: initial.architecture, scaling: scaling)
        return layout.vector(parameters: initial.flatten(), moments: layout.features > 0 ? AveragedLayout.moments(of: data) : [])
    }

    /// The model this node holds now (its estimate), nil while it holds no weight.
    public var model: Model? {
        base.averager?.estimate.flatMap { try? Model(architecture: architecture, parameters: layout.parameters(of: $0)) }
    }

    /// How the model's inputs are scaled now: the fixed normaliser, or the standardisation by
    /// the network's moments as far as this node has mixed them (nil while it holds no weight).
    public var normalizer: Normalizer? { base.averager?.estimate.flatMap(normalizer(of:)) }

    /// How inputs are scaled with the model in `estimate`.
    private func normalizer(of estimate: [Double]) -> Normalizer? {
        switch scaling {
        case .fixed(let normalizer): return normalizer
        case .agreed: return layout.normalizer(of: estimate)
        }
    }

    /// Whether the node still waits to add its own mass (a joiner before its first share).
    public var joining: Bool { (base.averager?.pendingContribution ?? 0) > 0 }

    /// The optimizer's state, for a checkpoint.
    public var optimizerState: SGDState { local.optimizerState }

    /// Resumes the training counters and the optimizer from a checkpoint.
    public mutating func restore(rounds: Int, steps: Int, optimizer: SGDState) throws {
        try local.restore(optimizer)
        roundsTrained = max(0, rounds)
        stepsTrained = max(0, steps)
    }

    // MARK: ProtocolNode

    public mutating func onStart(at now: Instant) -> [Action] {
        training = nil
        evaluation.reset()
        var actions = wrap(base.onStart(at: now), at: now)
        actions.append(.schedule(.train, at: now))
        if evaluation.test != nil { actions.append(.schedule(.evaluate, at: now)) }
        if joining { actions.append(.schedule(.join, at: now + settings.joinTimeout)) }
        return actions
    }

    public mutating func onMessage(_ message: Message, from sender: Sender, at now: Instant) -> [Action] {
        wrap(base.onMessage(message, from: sender, at: now), at: now)
    }

    public mutating func onTimer(_ timer: Timer, at now: Instant) -> [Action] {
        switch timer {
        case .base(let t): return wrap(base.onTimer(t, at: now), at: now)
        case .train: return startTraining(at: now)
        case .evaluate: return startEvaluation(at: now)
        case .join:
            guard joining, (try? base.contribute(at: layout.vector(parameters: initial, moments: moments))) == true else { return [] }
            modelChangedAt = now
            return [.report(.joined(pulled: false))]
        }
    }

    public mutating func onComputed(_ id: UInt64, result: any Sendable, at now: Instant) -> [Action] {
        if evaluation.owns(id) {
            var actions: [Action] = [.schedule(.evaluate, at: now + settings.evaluationInterval)]
            if let evaluated = evaluation.finish(id, result: result, at: now) {
                actions.append(.report(.evaluated(accuracy: evaluated.accuracy, loss: evaluated.loss)))
            }
            return actions
        }
        guard let (expected, start) = training, expected == id else { return [] }
        training = nil
        var actions: [Action] = [.schedule(.train, at: now + settings.trainInterval)]
        guard let outcome = local.finish(result, count: start.count) else { return actions }
        let change = layout.change(ofParameters: zip(outcome.parameters, start).map { $0 - $1 })
        if (try? base.applyLocalUpdate(change)) == true {
            roundsTrained += 1
            stepsTrained += settings.localSteps
            trainingLoss = outcome.loss
            modelChangedAt = now
            actions.append(.report(.trained(steps: settings.localSteps, loss: outcome.loss)))
        }
        return actions
    }

    /// Asks the driver to run the local steps from the current estimate; a node without data
    /// or weight, or still joining, only averages, and looks again later.
    private mutating func startTraining(at now: Instant) -> [Action] {
        guard training == nil else { return [] }
        guard data.data.count > 0, !joining, let estimate = base.averager?.estimate else {
            return [.schedule(.train, at: now + settings.trainInterval)]
        }
        let start = layout.parameters(of: estimate)
        nextRequest += 1
        training = (nextRequest, start)
        return [.compute(local.request(id: nextRequest, data: trainingData(for: estimate), start: start, steps: settings.localSteps))]
    }

    /// The training data as the current scaling sees it.
    private mutating func trainingData(for estimate: [Double]) -> Dataset {
        guard case .agreed = scaling else { return data.data }
        return data.scaled(by: normalizer(of: estimate)).data
    }

    /// Asks the driver to evaluate the current model on the test set.
    private mutating func startEvaluation(at now: Instant) -> [Action] {
        guard let estimate = base.averager?.estimate, let normalizer = normalizer(of: estimate),
              let model = try? Model(architecture: architecture, parameters: layout.parameters(of: estimate)) else {
            return evaluation.test == nil ? [] : [.schedule(.evaluate, at: now + settings.evaluationInterval)]
        }
        nextRequest += 1
        guard let request = evaluation.request(id: nextRequest, model: model, rescaling: scaling == .agreed ? normalizer : nil) else { return [] }
        return [.compute(request)]
    }

    /// The base's actions, wrapped; a joiner that has received its first share adds its own
    /// mass at the model the share brought.
    private mutating func wrap(_ actions: [Base.Action], at now: Instant) -> [Action] {
        var out = actions.map { $0.wrapped(message: { $0 }, timer: Timer.base, event: Event.base) }
        let applied = base.averager?.counters.applied ?? 0
        if applied != sharesApplied {
            sharesApplied = applied
            modelChangedAt = now
        }
        // Its own mass goes in at the model the share brought, and at its own data's moments.
        if joining, let estimate = base.averager?.estimate,
           (try? base.contribute(at: layout.vector(parameters: layout.parameters(of: estimate), moments: moments))) == true {
            out.append(.cancel(.join))
            out.append(.report(.joined(pulled: true)))
        }
        return out
    }
}

extension LearningNode where Base == PushSumAverager {
    /// A node holding `data`, starting from `initial` (the same parameters on every node),
    /// averaging with fixed `neighbours`. Its weight is its sample count; with `joining` it
    /// joins late instead (it takes the network's model from the first share it receives).
    public init(peer: PeerID, neighbours: [PeerAddress], architecture: Architecture, initial: Model, data: Dataset,
                test: Dataset? = nil, scaling: InputScaling = .fixed(.identity(featureCount: 0)), settings: Settings = Settings(),
                averaging: PushSumAverager.Settings = .init(), codec: any ShareCodec = IdentityShareCodec(), joining: Bool = false,
                seed: UInt64) throws {
        let rng = SplitMix64(seed: seed ^ 0xA5A5_5A5A)
        let averager = joining
            ? PushSumAverager(joining: peer, dimension: AveragedLayout(architecture: architecture, scaling: scaling).dimension,
                              sampleCount: Double(data.count), neighbours: neighbours, settings: averaging, codec: codec, rng: rng)
            : PushSumAverager(peer: peer, initial: Self.initialVector(initial: initial, data: data, scaling: scaling),
                              sampleCount: Double(data.count), neighbours: neighbours, settings: averaging, codec: codec, rng: rng)
        try self.init(base: averager, architecture: architecture, initial: initial, data: data, test: test, scaling: scaling,
                      settings: settings, seed: seed)
    }
}

/// A learning peer of the overlay: what `peer join --data` runs with `--algorithm sgp`.
extension LearningNode: OverlayNode, LearningPeer where Base == GossipNode {
    public var overlay: GossipNode { base }

    public var checkpoint: LearningCheckpoint {
        LearningCheckpoint(rounds: roundsTrained, steps: stepsTrained, optimizer: optimizerState)
    }

    public mutating func restore(_ checkpoint: LearningCheckpoint) throws {
        try restore(rounds: checkpoint.rounds, steps: checkpoint.steps, optimizer: checkpoint.optimizer)
    }

    public static func learningEvent(_ event: Event) -> LearningEvent? {
        switch event {
        case .base: return nil
        case .trained(_, let loss): return .trained(loss: loss)
        case .evaluated(let accuracy, let loss): return .evaluated(accuracy: accuracy, loss: loss)
        case .joined(let pulled): return .joined(pulled: pulled)
        }
    }

    public mutating func leave(at now: Instant) -> [Action] {
        wrap(base.leave(at: now), at: now)
    }

    public mutating func publish(_ manifest: ReleaseManifest, file: [UInt8], delta: [UInt8]?, at now: Instant) throws(ReleaseError) -> [Action] {
        wrap(try base.publish(manifest, file: file, delta: delta, at: now), at: now)
    }

    public mutating func rollBack(_ notice: RollbackNotice, at now: Instant) throws(ReleaseError) -> [Action] {
        wrap(try base.rollBack(notice, at: now), at: now)
    }

    public static func overlayEvent(_ event: Event) -> GossipEvent? {
        if case .base(let e) = event { return e }
        return nil
    }
}
