import Crypto
import DeterministicRandom
import Gossip
import Learner

/// Gossip learning (Ormándi, Hegedűs and Jelasity 2013): models walk the network. Every
/// ``Settings/gossipInterval`` a node sends its current model to a uniformly random neighbour;
/// a node that receives one merges it with its own (the average of the two, the paper's
/// MergeAverage) and trains the merged model for ``Settings/localSteps`` steps on its data, which
/// becomes its model. Copies, not mass, travel: a lost message costs one merge, nothing else, so
/// there is nothing to acknowledge. Models are not weighted by sample counts.
///
/// A model arriving while a round trains waits (the latest one), and is merged with the
/// round's result.
public struct GossipLearningNode: ModelExchangeAlgorithm {
    public typealias Message = ModelExchangeMessage

    public enum Timer: Hashable, Sendable {
        case gossip
    }

    public typealias Event = ModelExchangeEvent

    public struct Settings: Sendable {
        /// Time between two models sent (the paper's Δ).
        public var gossipInterval: Duration = .seconds(1)
        /// SGD steps after each merge (one local epoch in the paper's experiments).
        public var localSteps = 5
        public var trainer = TrainerConfig(batchSize: 32, sgd: SGDConfig(learningRate: 0.1, momentum: 0, weightDecay: 0))

        public init() {}
    }

    public let peerID: PeerID
    public let architecture: Architecture
    public let settings: Settings
    public var neighbours: [PeerAddress]
    /// The node's current model and its age (rounds of training behind it).
    public private(set) var parameters: [Float]
    public private(set) var age: UInt64 = 0
    public private(set) var roundsTrained = 0
    public private(set) var merged = 0
    private var data: Dataset
    private let copies: ModelCopyCodec
    private var copiesSent: UInt64 = 0
    private var local: LocalTraining
    private var rng: SplitMix64
    private var training: UInt64?
    private var waiting: [Float]?
    private var waitingAge: UInt64 = 0
    private var nextRequest: UInt64 = 0

    public init(peer: PeerID, neighbours: [PeerAddress], architecture: Architecture, initial: Model, data: Dataset,
                settings: Settings = Settings(), codec: any ShareCodec = IdentityShareCodec(), seed: UInt64) throws {
        peerID = peer
        self.neighbours = neighbours
        self.architecture = architecture
        self.settings = settings
        self.data = data
        parameters = initial.flatten()
        copies = ModelCopyCodec(codec: codec, count: architecture.parameterCount)
        var config = settings.trainer
        config.seed = seed
        local = try LocalTraining(architecture: architecture, initial: initial, localSteps: settings.localSteps, config: config)
        rng = SplitMix64(seed: seed ^ 0x6C6C_6561_726E)
    }

    /// The node's current model.
    public var model: Model? { try? Model(architecture: architecture, parameters: parameters) }

    public var localSteps: Int { settings.localSteps }
    public var optimizerState: SGDState { local.optimizerState }

    public mutating func replaceTrainingData(_ data: Dataset) { self.data = data }

    public mutating func adopt(_ copy: ModelCopy) -> Bool {
        guard let received = copies.decode(copy) else { return false }
        parameters = received
        age = copy.age
        return true
    }

    public mutating func restore(parameters: [Float], rounds: Int, optimizer: SGDState) throws {
        self.parameters = try local.resume(parameters: parameters, optimizer: optimizer)
        roundsTrained = max(0, rounds)
        age = UInt64(roundsTrained)
    }

    public mutating func onStart(at now: Instant) -> [Action] {
        training = nil
        let offset = Int64(rng.next(upperBound: UInt64(max(settings.gossipInterval.nanosecondsClamped, 1))))
        return [.schedule(.gossip, at: Instant(nanoseconds: now.nanoseconds &+ offset))]
    }

    public mutating func onTimer(_ timer: Timer, at now: Instant) -> [Action] {
        var actions: [Action] = [.schedule(.gossip, at: now + settings.gossipInterval)]
        guard let to = randomNeighbour() else { return actions }
        copiesSent += 1
        actions.append(.send(.model(copies.encode(parameters, age: age, sequence: copiesSent, degree: neighbours.count)),
                             to: to.endpoint, via: .session(to.peer)))
        return actions
    }

    /// A neighbour drawn uniformly, never the node itself (a peer list may hold every peer).
    private mutating func randomNeighbour() -> PeerAddress? {
        let n = UInt64(neighbours.count)
        guard n > 0 else { return nil }
        let i = Int(rng.next(upperBound: n))
        guard neighbours[i].peer == peerID else { return neighbours[i] }
        guard n > 1 else { return nil }
        return neighbours[(i + 1 + Int(rng.next(upperBound: n - 1))) % Int(n)]
    }

    public mutating func onMessage(_ message: Message, from sender: Sender, at now: Instant) -> [Action] {
        guard case .model(let copy) = message, let received = copies.decode(copy) else { return [.report(.refused(from: sender))] }
        guard training == nil else {
            waiting = received
            waitingAge = copy.age
            return []
        }
        return mergeAndTrain(received, age: copy.age)
    }

    public mutating func onComputed(_ id: UInt64, result: any Sendable, at now: Instant) -> [Action] {
        guard id == training else { return [] }
        training = nil
        var actions: [Action] = []
        if let outcome = local.finish(result, count: parameters.count) {
            parameters = outcome.parameters
            age += 1
            roundsTrained += 1
            actions.append(.report(.trained(loss: outcome.loss)))
        }
        if let next = waiting {
            waiting = nil
            actions += mergeAndTrain(next, age: waitingAge)
        }
        return actions
    }

    /// Averages `received` into the current model, then trains the result.
    private mutating func mergeAndTrain(_ received: [Float], age receivedAge: UInt64) -> [Action] {
        parameters.withUnsafeMutableBufferPointer { x in
            received.withUnsafeBufferPointer { r in
                for i in 0..<x.count { x[i] = (x[i] + r[i]) / 2 }
            }
        }
        age = max(age, receivedAge)
        merged += 1
        guard data.count > 0 else { return [] }
        nextRequest += 1
        training = nextRequest
        return [.compute(local.request(id: nextRequest, data: data, start: parameters, steps: settings.localSteps))]
    }
}
