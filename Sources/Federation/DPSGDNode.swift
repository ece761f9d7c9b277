import Crypto
import Gossip
import Learner

/// Decentralized parallel SGD (D-PSGD; Lian et al. 2017) over a fixed graph with
/// Metropolis–Hastings weights: every round a node mixes its model with the latest models its
/// neighbours sent, `x ← W_ii·x + Σ_j W_ij·x_j` with `W_ij = 1 / (1 + max(d_i, d_j))` and
/// `W_ii = 1 − Σ_j W_ij`, trains the mixture for ``Settings/localSteps`` steps, and sends the
/// result to every neighbour. The weights are symmetric and doubly stochastic, so the network
/// converges to the plain (unweighted) average of the nodes' models.
///
/// Rounds are not synchronised: a node mixes whatever copies it holds, and a neighbour it has
/// not heard from yet (or whose copies were lost) counts with the node's own model. A lost copy
/// makes the next mixture use an older one; nothing has to be acknowledged.
public struct DPSGDNode: ProtocolNode {
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

        public init() {}
    }

    public let peerID: PeerID
    public let architecture: Architecture
    public let settings: Settings
    /// The fixed neighbours; their latest copies are kept in this order, so mixing adds them
    /// in the same order in every run.
    public let neighbours: [PeerAddress]
    public private(set) var parameters: [Float]
    public private(set) var roundsTrained = 0
    private var latest: [(parameters: [Float], degree: Int)?]
    private let data: Dataset
    private let copies: ModelCopyCodec
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
        latest = Array(repeating: nil, count: neighbours.count)
        copies = ModelCopyCodec(codec: codec, count: architecture.parameterCount)
        var config = settings.trainer
        config.seed = seed
        local = try LocalTraining(architecture: architecture, initial: initial, localSteps: settings.localSteps, config: config)
    }

    public var model: Model? { try? Model(architecture: architecture, parameters: parameters) }

    /// The Metropolis–Hastings weight of a neighbour of degree `degree`.
    func weight(ofNeighbourWithDegree degree: Int) -> Float { 1 / Float(1 + max(neighbours.count, degree)) }

    public mutating func onStart(at now: Instant) -> [Action] {
        training = nil
        return [.schedule(.round, at: now)]
    }

    public mutating func onMessage(_ message: Message, from sender: Sender, at now: Instant) -> [Action] {
        guard case .model(let copy) = message, let peer = sender.peer, let index = neighbours.firstIndex(where: { $0.peer == peer }),
              let received = copies.decode(copy) else { return [.report(.refused(from: sender))] }
        latest[index] = (received, Int(copy.degree))
        return []
    }

    public mutating func onTimer(_ timer: Timer, at now: Instant) -> [Action] {
        guard training == nil else { return [] }
        mix()
        guard data.count > 0 else {
            return broadcast() + [.schedule(.round, at: now + settings.roundInterval)]
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
        return broadcast() + actions
    }

    /// `x ← W_ii·x + Σ_j W_ij·x_j` over the copies held; a neighbour without one counts as `x`.
    private mutating func mix() {
        var mixed = parameters
        for copy in latest {
            guard let copy else { continue }
            let w = weight(ofNeighbourWithDegree: copy.degree)
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

    private func broadcast() -> [Action] {
        let copy = copies.encode(parameters, age: UInt64(roundsTrained), degree: neighbours.count)
        return neighbours.map { .send(.model(copy), to: $0.endpoint, via: .session($0.peer)) }
    }
}
