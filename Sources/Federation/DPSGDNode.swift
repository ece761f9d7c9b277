import Crypto
import Gossip
import Learner

/// Decentralized parallel SGD (D-PSGD; Lian et al. 2017) with Metropolis–Hastings weights:
/// every round a node mixes its model with the latest models its neighbours sent,
/// `x ← W_ii·x + Σ_j W_ij·x_j` with `W_ij = 1 / (1 + max(d_i, d_j))` and
/// `W_ii = 1 − Σ_j W_ij`, trains the mixture for ``Settings/localSteps`` steps, and sends the
/// result to every neighbour. The weights are symmetric and doubly stochastic, so the network
/// converges to the plain (unweighted) average of the nodes' models.
///
/// Rounds are not synchronised: a node mixes whatever copies it holds, and a neighbour it has
/// not heard from yet (or whose copies were lost) counts with the node's own model. A lost copy
/// makes the next mixture use an older one; nothing has to be acknowledged.
///
/// The neighbours are a fixed graph (the simulator's topologies) or, in the overlay, the
/// peer-sampling view, which is not symmetric: a peer that sends this node copies becomes its
/// neighbour too for a while (``Settings/senderMemory``), so both mix with each other and the
/// weights stay close to symmetric as the views change.
public struct DPSGDNode: ModelExchangeAlgorithm {
    public typealias Message = ModelExchangeMessage

    public enum Timer: Hashable, Sendable {
        case round
    }

    public typealias Event = ModelExchangeEvent

    public struct Settings: Sendable {
        /// Pause between the end of one round and the start of the next.
        public var roundInterval: Duration = .milliseconds(200)
        /// SGD steps per round.
        public var localSteps = 5
        public var trainer = TrainerConfig(batchSize: 32, sgd: SGDConfig(learningRate: 0.1, momentum: 0, weightDecay: 0))
        /// How long a peer that sent a copy stays a neighbour after its last copy although it
        /// is not among ``DPSGDNode/neighbours`` (another peer's view held this node), and at
        /// least two round intervals: mixing and sending both ways keeps the weights symmetric
        /// over a peer-sampling view.
        public var senderMemory: Duration = .seconds(5)

        public init() {}
    }

    /// A neighbour's latest copy.
    struct Received: Sendable {
        var parameters: [Float]
        var degree: Int
        var from: PeerAddress
        var heard: Instant
    }

    public let peerID: PeerID
    public let architecture: Architecture
    public let settings: Settings
    /// The given neighbours: a fixed graph, or the overlay's view. Copies are mixed in this
    /// order, then those of other recent senders by key, so a run adds them in the same order
    /// every time.
    public var neighbours: [PeerAddress]
    public private(set) var parameters: [Float]
    public private(set) var roundsTrained = 0
    private var latest: [PeerID: Received] = [:]
    private var data: Dataset
    private let copies: ModelCopyCodec
    private var copiesSent: UInt64 = 0
    private var local: LocalTraining
    private var training: UInt64?
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
    }

    public var model: Model? { try? Model(architecture: architecture, parameters: parameters) }

    public var localSteps: Int { settings.localSteps }
    public var optimizerState: SGDState { local.optimizerState }

    public mutating func replaceTrainingData(_ data: Dataset) { self.data = data }

    public mutating func adopt(_ copy: ModelCopy) -> Bool {
        guard let received = copies.decode(copy) else { return false }
        parameters = received
        return true
    }

    public mutating func restore(parameters: [Float], rounds: Int, optimizer: SGDState) throws {
        self.parameters = try local.resume(parameters: parameters, optimizer: optimizer)
        roundsTrained = max(0, rounds)
    }

    /// The peers this node mixes with and sends to: the neighbours, then every other peer that
    /// sent a copy within ``Settings/senderMemory``, by key. With a fixed symmetric graph that
    /// is exactly the neighbours.
    func partners(at now: Instant) -> [PeerAddress] {
        var result = neighbours.filter { $0.peer != peerID }
        let given = Set(result.map(\.peer))
        // At least two rounds, so a sender is mixed with until its next copy is due.
        let memory = max(settings.senderMemory, settings.roundInterval * 2)
        let recent = latest.values.filter { !given.contains($0.from.peer) && now - $0.heard <= memory }
        result += recent.map(\.from).sorted { $0.peer < $1.peer }
        return result
    }

    /// The Metropolis–Hastings weight between this node, of degree `own`, and a neighbour of degree `degree`.
    static func weight(own: Int, neighbour degree: Int) -> Float { 1 / Float(1 + max(own, degree)) }

    public mutating func onStart(at now: Instant) -> [Action] {
        training = nil
        return [.schedule(.round, at: now)]
    }

    public mutating func onMessage(_ message: Message, from sender: Sender, at now: Instant) -> [Action] {
        guard case .model(let copy) = message, let peer = sender.peer, peer != peerID,
              let received = copies.decode(copy) else { return [.report(.refused(from: sender))] }
        let from = neighbours.first { $0.peer == peer } ?? latest[peer]?.from ?? PeerAddress(peer: peer, endpoint: sender.endpoint)
        latest[peer] = Received(parameters: received, degree: Int(copy.degree), from: from, heard: now)
        return []
    }

    public mutating func onTimer(_ timer: Timer, at now: Instant) -> [Action] {
        guard training == nil else { return [] }
        mix(at: now)
        guard data.count > 0 else {
            return broadcast(at: now) + [.schedule(.round, at: now + settings.roundInterval)]
        }
        nextRequest += 1
        training = nextRequest
        return [.compute(local.request(id: nextRequest, data: data, start: parameters, steps: settings.localSteps))]
    }

    public mutating func onComputed(_ id: UInt64, result: any Sendable, at now: Instant) -> [Action] {
        guard id == training else { return [] }
        training = nil
        var actions: [Action] = [.schedule(.round, at: now + settings.roundInterval)]
        if let outcome = local.finish(result, count: parameters.count) {
            parameters = outcome.parameters
            roundsTrained += 1
            actions.append(.report(.trained(loss: outcome.loss)))
        }
        return broadcast(at: now) + actions
    }

    /// `x ← W_ii·x + Σ_j W_ij·x_j` over the partners' copies held; a partner without one
    /// counts as `x`. Copies of peers that are no longer partners are dropped.
    private mutating func mix(at now: Instant) {
        let partners = partners(at: now)
        let current = Set(partners.map(\.peer))
        latest = latest.filter { current.contains($0.key) }
        var mixed = parameters
        for partner in partners {
            guard let copy = latest[partner.peer] else { continue }
            let w = Self.weight(own: partners.count, neighbour: copy.degree)
            copy.parameters.withUnsafeBufferPointer { x in
                mixed.withUnsafeMutableBufferPointer { m in
                    parameters.withUnsafeBufferPointer { own in
                        for i in 0..<m.count { m[i] += w * (x[i] - own[i]) }
                    }
                }
            }
        }
        parameters = mixed
    }

    private mutating func broadcast(at now: Instant) -> [Action] {
        let partners = partners(at: now)
        copiesSent += 1
        let copy = copies.encode(parameters, age: UInt64(roundsTrained), sequence: copiesSent, degree: partners.count)
        return partners.map { .send(.model(copy), to: $0.endpoint, via: .session($0.peer)) }
    }
}
