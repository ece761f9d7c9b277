import DeterministicRandom
import Learner

/// Federated averaging (McMahan et al. 2017), the centralised reference that decentralized
/// runs are compared against, in simulation only: a virtual server holds the global model;
/// each round it samples a fraction of the clients, each trains a copy for a few local
/// epochs on its own data, and the server replaces the model by their average weighted by
/// sample counts. One seed reproduces a run (client sampling and each client's batches).
public struct FedAvg {
    /// The algorithm's parameters, named as in the paper.
    public struct Settings: Sendable, Hashable {
        /// C: the fraction of clients sampled each round (at least one is).
        public var clientFraction = 0.25
        /// E: local epochs per round.
        public var localEpochs = 1
        /// B: local mini-batch size.
        public var batchSize = 32
        /// Local SGD: plain SGD as in the paper (no momentum), a constant rate.
        public var learningRate: Float = 0.05

        public init(clientFraction: Double = 0.25, localEpochs: Int = 1, batchSize: Int = 32, learningRate: Float = 0.05) {
            self.clientFraction = clientFraction
            self.localEpochs = localEpochs
            self.batchSize = batchSize
            self.learningRate = learningRate
        }
    }

    /// What one round did.
    public struct Round: Sendable, Equatable {
        public var number: Int
        /// Clients sampled, by index.
        public var clients: [Int]
        /// Model bytes moved: the model sent to each sampled client and its update back.
        public var bytes: Int
    }

    public let settings: Settings
    public let architecture: Architecture
    /// The global model.
    public private(set) var model: Model
    public private(set) var rounds = 0
    private let clients: [Dataset]
    private var rng: SplitMix64

    /// A server for `clients` (each one's local data; empty ones are never sampled) training
    /// `architecture` from the initialisation drawn from `seed`.
    public init(architecture: Architecture, clients: [Dataset], settings: Settings = Settings(), seed: UInt64) throws {
        guard settings.clientFraction > 0, settings.clientFraction <= 1 else {
            throw LearnerError.invalidArgument("FedAvg client fraction C must be in (0, 1], got \(settings.clientFraction)")
        }
        guard settings.localEpochs >= 1 else { throw LearnerError.invalidArgument("FedAvg local epochs E must be at least 1, got \(settings.localEpochs)") }
        guard clients.contains(where: { $0.count > 0 }) else { throw LearnerError.invalidArgument("FedAvg needs at least one client with data") }
        self.settings = settings
        self.architecture = architecture
        self.clients = clients
        model = Model(architecture: architecture, seed: seed)
        rng = SplitMix64(seed: seed ^ 0x5EED_FEDA)
    }

    /// Runs one round: samples clients, trains each from the global model, averages.
    @discardableResult
    public mutating func runRound() throws -> Round {
        rounds += 1
        let candidates = clients.indices.filter { clients[$0].count > 0 }
        let m = max(1, Int((settings.clientFraction * Double(candidates.count)).rounded()))
        let sampled = sample(m, of: candidates)
        let global = model.flatten()
        var sum = [Double](repeating: 0, count: global.count)
        var samples = 0
        for k in sampled {
            var local = model
            let config = TrainerConfig(batchSize: settings.batchSize,
                                       sgd: SGDConfig(learningRate: settings.learningRate, momentum: 0, weightDecay: 0),
                                       seed: rng.next())
            var trainer = try Trainer(architecture: architecture, config: config)
            for _ in 0..<settings.localEpochs { try trainer.trainEpoch(&local, on: clients[k]) }
            let n = clients[k].count
            let parameters = local.flatten()
            for i in sum.indices { sum[i] += Double(parameters[i]) * Double(n) }
            samples += n
        }
        try model.load(flat: sum.map { Float($0 / Double(samples)) })
        return Round(number: rounds, clients: sampled, bytes: 2 * sampled.count * global.count * MemoryLayout<Float>.size)
    }

    /// `m` distinct elements of `pool`, drawn uniformly (a partial Fisher–Yates shuffle).
    private mutating func sample(_ m: Int, of pool: [Int]) -> [Int] {
        var pool = pool
        for i in 0..<min(m, pool.count) {
            let j = i + Int(rng.next(upperBound: UInt64(pool.count - i)))
            pool.swapAt(i, j)
        }
        return Array(pool.prefix(m)).sorted()
    }
}
