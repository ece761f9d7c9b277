import Crypto
import DeterministicRandom
import Federation
import Foundation
import Gossip
import Learner
import Simulation

/// One row of `rounds.csv`: the network after a metrics round. No wall-clock value: a rerun
/// of the same scenario and seed writes the same bytes. Columns are documented in
/// docs/researchers.md.
public struct RoundRow: Sendable, Equatable {
    public var round: Int
    /// Virtual seconds since the start.
    public var time: Double
    /// Relative RMS distance of the live nodes' estimates (or models) from their mean.
    public var consensusError: Double?
    /// Averaging: the largest relative error of a live node's estimate from the true
    /// sample-weighted mean of the initial vectors.
    public var targetError: Double?
    public var accuracyMean: Double?
    public var accuracyMin: Double?
    public var accuracyMax: Double?
    /// Mean test loss (cross-entropy) of the evaluated nodes.
    public var loss: Double?
    public var bytesSent: Int
    public var messagesSent: Int
    public var messagesDropped: Int
    public var liveNodes: Int

    public static let columns = ["round", "time_s", "consensus_error", "target_error", "accuracy_mean", "accuracy_min",
                                 "accuracy_max", "loss", "bytes_sent", "messages_sent", "messages_dropped", "live_nodes"]

    /// The row as CSV (empty fields where a figure does not apply).
    public var csv: String {
        let optional = { (x: Double?) in x.map { "\($0)" } ?? "" }
        return ["\(round)", "\(time)", optional(consensusError), optional(targetError), optional(accuracyMean), optional(accuracyMin),
                optional(accuracyMax), optional(loss), "\(bytesSent)", "\(messagesSent)", "\(messagesDropped)", "\(liveNodes)"]
            .joined(separator: ",")
    }
}

/// How a run ended.
public struct RunResult: Sendable, Equatable {
    /// Hash of every message delivered or dropped (hex): equal hashes, identical runs.
    public var traceHash: String
    public var rows: Int
    /// False when the caller stopped it early.
    public var completed: Bool
    /// The last round run: the scenario's last, or the one the run was stopped after.
    public var lastRound: Int
}

/// Runs a ``Scenario``: builds its network and nodes, injects its faults and reports a
/// ``RoundRow`` every metrics round.
public final class ScenarioRunner {
    public let scenario: Scenario
    private let baseDirectory: URL
    private let network: ScenarioNetwork

    /// Checks what the scenario needs from outside (files) before any long work.
    public init(_ scenario: Scenario, baseDirectory: URL) throws(ScenarioError) {
        self.scenario = scenario
        self.baseDirectory = baseDirectory
        network = try ScenarioNetwork(scenario, baseDirectory: baseDirectory)
        try checkDataset()
    }

    /// `nodes.dataset` as ``DataSource/resolve(_:)`` takes it: a path is relative to the scenario.
    private var datasetSpec: String {
        let dataset = scenario.nodes.dataset
        return dataset == "fashion-mnist" ? dataset : URL(fileURLWithPath: dataset, relativeTo: baseDirectory).path
    }

    /// A learning run's dataset is where the scenario says: found here, before the run makes
    /// its folder (loading it waits for the run).
    private func checkDataset() throws(ScenarioError) {
        let dataset = scenario.nodes.dataset
        guard !Scenario.averagingAlgorithms.contains(scenario.algorithm.name), dataset != "blobs" else { return }
        do {
            if case .csv(let path) = try DataSource.resolve(datasetSpec), !FileManager.default.fileExists(atPath: path) {
                throw ScenarioError("nodes.dataset \(dataset): no such file (\(path))")
            }
        } catch let error as ScenarioError {
            throw error
        } catch {
            throw ScenarioError("nodes.dataset \(dataset): \(error)")
        }
    }

    private var roundDuration: Duration { .milliseconds(scenario.roundMilliseconds) }
    private var tick: Duration { .milliseconds(scenario.algorithm.tickMilliseconds > 0 ? scenario.algorithm.tickMilliseconds : scenario.roundMilliseconds) }

    /// Asked after every round, with its number: true stops the run there, with a row for that
    /// round (a stop requested by the user, or the round a stopped run is repeated to).
    public var shouldStop: (Int) -> Bool = { _ in false }

    /// Runs to the end, or until ``shouldStop`` says so, handing each row to `onRow`.
    public func run(_ onRow: (RoundRow) -> Void) throws(ScenarioError) -> RunResult {
        switch scenario.algorithm.name {
        case "push-sum": return try network.graph == nil ? runSampledPushSum(onRow) : runPushSum(onRow)
        case "pairwise": return try runPairwise(onRow)
        case "fedavg": return try runFedAvg(onRow)
        default: return try runLearning(onRow)
        }
    }

    // MARK: Averaging

    /// Initial vectors and sample counts drawn from the seed, and their weighted mean.
    private func averagingInputs() -> (vectors: [[Float]], samples: [Double], mean: [Double]) {
        var rng = SplitMix64(seed: scenario.seed ^ 0xA7E2_A61E)
        let n = scenario.nodes.count
        let samples: [Double]
        switch scenario.nodes.samples {
        case "equal": samples = Array(repeating: 1, count: n)
        case "pareto": samples = SampleCounts.pareto(count: n, rng: &rng)
        default: samples = SampleCounts.pareto(count: n, alpha: Double(scenario.nodes.samples.dropFirst(7)) ?? 1.2, rng: &rng)
        }
        let vectors = (0..<n).map { _ in
            (0..<scenario.nodes.dimension).map { _ in 1 + Float(rng.next(upperBound: UInt32(1 << 20))) / Float(1 << 18) }
        }
        return (vectors, samples, AveragingMetrics.weightedMean(vectors, weights: samples))
    }

    private var averagingSettings: PushSumAverager.Settings {
        var settings = PushSumAverager.Settings()
        settings.tickInterval = tick
        settings.retransmitInterval = tick / 2
        settings.lossRecovery = scenario.algorithm.lossRecovery == "none" ? .none : .acknowledged
        settings.errorFeedback = scenario.algorithm.errorFeedback
        settings.shareFraction = scenario.algorithm.shareFraction
        settings.sparseShareFraction = scenario.algorithm.sparseShareFraction
        return settings
    }

    private func codec() throws(ScenarioError) -> any ShareCodec {
        do { return try CompressedShareCodec.named(scenario.algorithm.compression) } catch {
            throw ScenarioError("algorithm.compression: \(error)")
        }
    }

    private func runPushSum(_ onRow: (RoundRow) -> Void) throws(ScenarioError) -> RunResult {
        let inputs = averagingInputs()
        let graph = network.graph ?? Graph(nodeCount: scenario.nodes.count)
        let settings = averagingSettings
        let codec = try codec()
        let sim = Simulator.averaging(over: graph, initial: { inputs.vectors[$0] }, samples: inputs.samples, settings: settings,
                                      codec: codec, links: network.links, seed: scenario.seed)
        return try drive(sim, spacing: .zero, onRow) { sim in
            var meter = ConsensusMeter(target: inputs.mean)
            meter.measure(sim.nodeCount, isUp: sim.isUp) { i, body in sim.node(i)?.withEstimateParts { v, w in body(v, w) } }
            return meter.row
        }
    }

    private func runSampledPushSum(_ onRow: (RoundRow) -> Void) throws(ScenarioError) -> RunResult {
        let inputs = averagingInputs()
        let overlay = try SampledOverlay(nodes: scenario.nodes.count, seed: scenario.seed, warmCaches: scenario.topology.bootstrap == "cache",
                                         averaging: averagingSettings,
                                     codec: try codec(), inputs: { (inputs.vectors[$0], inputs.samples[$0]) })
        let sim = overlay.simulator(links: network.links) { _, node in node }
        return try drive(sim, spacing: overlay.joinSpacing, onRow) { sim in
            var meter = ConsensusMeter(target: inputs.mean)
            meter.measure(sim.nodeCount, isUp: sim.isUp) { i, body in sim.node(i)?.averager?.withEstimateParts { v, w in body(v, w) } }
            return meter.row
        }
    }

    private func runPairwise(_ onRow: (RoundRow) -> Void) throws(ScenarioError) -> RunResult {
        let inputs = averagingInputs()
        guard let graph = network.graph else { throw ScenarioError("algorithm pairwise needs a fixed graph") }
        let plain = inputs.vectors.map { v in v.map(Double.init) }
        let mean = (0..<scenario.nodes.dimension).map { k in plain.reduce(0) { $0 + $1[k] } / Double(plain.count) }
        var settings = PairwiseAverager.Settings()
        settings.tickInterval = tick
        let peers = (0..<graph.nodeCount).map(SimAddress.peer)
        let sim = Simulator(nodeCount: graph.nodeCount, seed: scenario.seed, links: network.links, topology: graph.topology) { context in
            PairwiseAverager(peer: peers[context.index], initial: inputs.vectors[context.index],
                             neighbours: graph.neighbourAddresses(context.index, peers: peers), settings: settings,
                             rng: SplitMix64(seed: context.seed))
        }
        return try drive(sim, spacing: .zero, onRow) { sim in
            var meter = ConsensusMeter(target: mean)
            meter.measure(sim.nodeCount, isUp: sim.isUp) { i, body in
                guard let value = sim.node(i)?.value else { return }
                value.withUnsafeBufferPointer { body($0, 1) }
            }
            return meter.row
        }
    }

    // MARK: Learning

    /// Training and test data, scaled to [0, 1] per feature by the training set's range.
    private func learningData() throws(ScenarioError) -> (train: Dataset, test: Dataset) {
        do {
            var train: Dataset
            var test: Dataset
            if scenario.nodes.dataset == "blobs" {
                train = try Dataset.gaussianBlobs(count: 4_000, seed: scenario.nodes.partitionSeed)
                test = try Dataset.gaussianBlobs(count: 1_000, seed: scenario.nodes.partitionSeed &+ 1)
            } else {
                let loaded = try DataSource.resolve(datasetSpec).load()
                guard let t = loaded.test else {
                    throw ScenarioError("nodes.dataset \(scenario.nodes.dataset): has no test set, which the accuracy columns need")
                }
                (train, test) = (loaded.train, t)
            }
            let normalizer = Normalizer.fit(.minMax, on: train)
            try train.normalize(with: normalizer)
            try test.normalize(with: normalizer)
            if scenario.metrics.evalSamples > 0, scenario.metrics.evalSamples < test.count {
                test = try test.subset(Array(0..<scenario.metrics.evalSamples))
            }
            return (train, test)
        } catch let error as ScenarioError {
            throw error
        } catch {
            throw ScenarioError("nodes.dataset \(scenario.nodes.dataset): \(error)")
        }
    }

    private func learningSetup() throws(ScenarioError) -> (LearningNetwork, Architecture, TrainerConfig, Dataset) {
        let (train, test) = try learningData()
        // Over the protocol's own sampling the graph only carries the split.
        let graph = network.graph ?? Graph(nodeCount: scenario.nodes.count)
        let a = scenario.algorithm
        do {
            let architecture = try Architecture.parse(scenario.nodes.model, inputCount: train.featureCount, classCount: train.classCount)
            let partition = try PartitionScheme(parsing: scenario.nodes.partition)
            let learning = try LearningNetwork(train, graph: graph, links: network.links, partition: partition, seed: scenario.nodes.partitionSeed)
            var trainer = TrainerConfig(batchSize: a.batch, sgd: SGDConfig(learningRate: Float(a.learningRate), momentum: 0, weightDecay: 0))
            if a.schedule == "cosine" {
                let seconds = Double(scenario.rounds * scenario.roundMilliseconds) / 1000
                let trainingRounds = seconds * 1000 / Double(max(a.trainIntervalMilliseconds, Int(tick.nanosecondsClamped / 1_000_000)))
                trainer.sgd.schedule = .cosine(totalSteps: max(1, Int(trainingRounds) * a.localSteps), floor: 0.05)
            }
            return (learning, architecture, trainer, test)
        } catch {
            throw ScenarioError("nodes (model \(scenario.nodes.model), partition \(scenario.nodes.partition)): \(error)")
        }
    }

    private func runLearning(_ onRow: (RoundRow) -> Void) throws(ScenarioError) -> RunResult {
        let (learning, architecture, trainer, test) = try learningSetup()
        let a = scenario.algorithm
        let codec = try codec()
        let evaluated = scenario.metrics.evalNodes > 0 ? min(scenario.metrics.evalNodes, scenario.nodes.count) : scenario.nodes.count
        do {
            switch a.name {
            case "sgp":
                var settings = LearningNode<PushSumAverager>.Settings()
                settings.localSteps = a.localSteps
                settings.trainInterval = .milliseconds(a.trainIntervalMilliseconds)
                settings.trainer = trainer
                var averaging = averagingSettings
                averaging.retransmitInterval = tick * 4 / 5
                averaging.maxInFlight = 4
                if network.graph == nil {
                    return try runSampledSGP(learning, architecture: architecture, settings: settings, averaging: averaging, codec: codec,
                                             evaluated: evaluated, test: test, onRow)
                }
                let sim = try learning.sgp(architecture: architecture, settings: settings, averaging: averaging, codec: codec)
                return try drive(sim, spacing: .zero, stepCost: stepCost(architecture), onRow) { sim in
                    Self.learningRow(sim, evaluated: evaluated, test: test, architecture: architecture) { $0.model?.flatten() }
                }
            case "gossip-learning":
                var settings = GossipLearningNode.Settings()
                settings.gossipInterval = tick
                settings.localSteps = a.localSteps
                settings.trainer = trainer
                if network.graph == nil {
                    return try runSampledExchange(learning, architecture: architecture, evaluated: evaluated, test: test, onRow) { i, peer, initial, data in
                        try GossipLearningNode(peer: peer, neighbours: [], architecture: architecture, initial: initial, data: data,
                                               settings: settings, codec: codec, seed: learning.seed &+ UInt64(i))
                    }
                }
                let sim = try learning.gossipLearning(architecture: architecture, settings: settings, codec: codec)
                return try drive(sim, spacing: .zero, stepCost: stepCost(architecture), onRow) { sim in
                    Self.learningRow(sim, evaluated: evaluated, test: test, architecture: architecture) { $0.parameters }
                }
            default:
                var settings = DPSGDNode.Settings()
                settings.roundInterval = tick
                settings.localSteps = a.localSteps
                settings.trainer = trainer
                if network.graph == nil {
                    return try runSampledExchange(learning, architecture: architecture, evaluated: evaluated, test: test, onRow) { i, peer, initial, data in
                        try DPSGDNode(peer: peer, neighbours: [], architecture: architecture, initial: initial, data: data,
                                      settings: settings, codec: codec, seed: learning.seed &+ UInt64(i))
                    }
                }
                let sim = try learning.dpsgd(architecture: architecture, settings: settings, codec: codec)
                return try drive(sim, spacing: .zero, stepCost: stepCost(architecture), onRow) { sim in
                    Self.learningRow(sim, evaluated: evaluated, test: test, architecture: architecture) { $0.parameters }
                }
            }
        } catch let error as ScenarioError {
            throw error
        } catch {
            throw ScenarioError("algorithm \(a.name): \(error)")
        }
    }

    /// Stochastic gradient push over the protocol's own peer sampling: each node the learning
    /// node `peer join --data` runs, on a full `GossipNode`.
    private func runSampledSGP(_ learning: LearningNetwork, architecture: Architecture, settings simulated: LearningNode<PushSumAverager>.Settings,
                               averaging: PushSumAverager.Settings, codec: any ShareCodec, evaluated: Int, test: Dataset,
                               _ onRow: (RoundRow) -> Void) throws(ScenarioError) -> RunResult {
        var settings = LearningNode<GossipNode>.Settings()
        settings.localSteps = simulated.localSteps
        settings.trainInterval = simulated.trainInterval
        settings.trainer = simulated.trainer
        let initial = Model(architecture: architecture, seed: learning.seed)
        let vectors = learning.shards.map { LearningNode<GossipNode>.initialVector(initial: initial, data: $0, scaling: .fixed(.identity(featureCount: 0))) }
        let overlay = try SampledOverlay(nodes: scenario.nodes.count, seed: scenario.seed, warmCaches: scenario.topology.bootstrap == "cache",
                                         averaging: averaging, codec: codec,
                                         inputs: { (vectors[$0], Double(learning.shards[$0].count)) })
        let seed = learning.seed
        let shards = learning.shards
        let sim = overlay.simulator(links: network.links) { context, base in
            try LearningNode(base: base, architecture: architecture, initial: initial, data: shards[context.index], settings: settings,
                             seed: seed &+ UInt64(context.index))
        }
        return try drive(sim, spacing: overlay.joinSpacing, stepCost: stepCost(architecture), onRow) { sim in
            Self.learningRow(sim, evaluated: evaluated, test: test, architecture: architecture) { $0.model?.flatten() }
        }
    }

    /// Gossip learning or D-PSGD over the protocol's own peer sampling: each node the peer
    /// `peer join --data --algorithm gossip-learning|dpsgd` runs (``ModelExchangePeer``) on a
    /// full `GossipNode` without an averager, its algorithm made by `algorithm` from the node's
    /// index, ID, initial model and shard; the view is its neighbours.
    private func runSampledExchange<Algorithm: ModelExchangeAlgorithm>(
        _ learning: LearningNetwork, architecture: Architecture, evaluated: Int, test: Dataset, _ onRow: (RoundRow) -> Void,
        algorithm: @escaping (Int, PeerID, Model, Dataset) throws -> Algorithm
    ) throws(ScenarioError) -> RunResult {
        let initial = Model(architecture: architecture, seed: learning.seed)
        let overlay = try SampledOverlay(nodes: scenario.nodes.count, seed: scenario.seed, warmCaches: scenario.topology.bootstrap == "cache",
                                         averaging: averagingSettings, codec: IdentityShareCodec(), inputs: { _ in nil })
        let shards = learning.shards
        let sim = overlay.simulator(links: network.links) { context, base in
            let node = try algorithm(context.index, base.peerID, initial, shards[context.index])
            return try ModelExchangePeer(base: base, algorithm: node, data: shards[context.index], scaling: .fixed(.identity(featureCount: 0)),
                                         joining: false)
        }
        return try drive(sim, spacing: overlay.joinSpacing, stepCost: stepCost(architecture), onRow) { sim in
            Self.learningRow(sim, evaluated: evaluated, test: test, architecture: architecture) { $0.algorithm.parameters }
        }
    }

    /// Work units of one SGD step (what ``ModelExchange`` charges a step).
    private func stepCost(_ architecture: Architecture) -> Double {
        Double(scenario.algorithm.batch * architecture.parameterCount * 6)
    }

    /// Consensus of the first `evaluated` live nodes' parameters, and their test accuracy.
    private static func learningRow<Node: ProtocolNode>(_ sim: Simulator<Node>, evaluated: Int, test: Dataset, architecture: Architecture,
                                                        parameters: (Node) -> [Float]?) -> RoundRow {
        var meter = ConsensusMeter(target: nil)
        meter.measure(evaluated, isUp: sim.isUp) { i, body in
            guard let node = sim.node(i), let p = parameters(node) else { return }
            p.map(Double.init).withUnsafeBufferPointer { body($0, 1) }
        }
        var row = meter.row
        let models = (0..<evaluated).compactMap { i -> Model? in
            guard sim.isUp(i), let node = sim.node(i), let p = parameters(node) else { return nil }
            return try? Model(architecture: architecture, parameters: p)
        }
        let evaluations = (try? Model.evaluate(models, on: test)) ?? []
        let accuracies = evaluations.map(\.accuracy)
        let losses = evaluations.map(\.loss)
        if !accuracies.isEmpty {
            row.accuracyMean = accuracies.reduce(0, +) / Double(accuracies.count)
            row.accuracyMin = accuracies.min()
            row.accuracyMax = accuracies.max()
            row.loss = losses.reduce(0, +) / Double(losses.count)
        }
        return row
    }

    /// FedAvg, the centralised reference: a server and its sampled clients, no network faults.
    private func runFedAvg(_ onRow: (RoundRow) -> Void) throws(ScenarioError) -> RunResult {
        let (learning, architecture, trainer, test) = try learningSetup()
        let a = scenario.algorithm
        var trace = TraceHash()
        var rows = 0
        var bytes = 0
        var messages = 0
        do {
            var server = try FedAvg(architecture: architecture, clients: learning.shards,
                                    settings: .init(clientFraction: a.clientFraction, localEpochs: a.localEpochs, batchSize: trainer.batchSize,
                                                    learningRate: trainer.sgd.learningRate),
                                    seed: scenario.nodes.partitionSeed)
            for round in 1...scenario.rounds {
                let done = try server.runRound()
                bytes += done.bytes
                messages += 2 * done.clients.count
                for c in done.clients { trace.mix(UInt64(round) << 32 | UInt64(c)) }
                let stop = round < scenario.rounds && shouldStop(round)
                guard round % scenario.metrics.every == 0 || round == scenario.rounds || stop else { continue }
                let e = try server.model.evaluate(on: test)
                trace.mix(e.accuracy.bitPattern)
                rows += 1
                let row = RoundRow(round: round, time: Double(round * scenario.roundMilliseconds) / 1000, consensusError: 0, targetError: nil,
                                   accuracyMean: e.accuracy, accuracyMin: e.accuracy, accuracyMax: e.accuracy, loss: e.loss,
                                   bytesSent: bytes, messagesSent: messages, messagesDropped: 0, liveNodes: scenario.nodes.count)
                onRow(row)
                if stop { return RunResult(traceHash: "\(trace)", rows: rows, completed: false, lastRound: round) }
            }
        } catch {
            throw ScenarioError("algorithm fedavg: \(error)")
        }
        return RunResult(traceHash: "\(trace)", rows: rows, completed: true, lastRound: scenario.rounds)
    }

    // MARK: Driving

    /// Schedules the faults, sets each node's compute rate, runs and reports a row every
    /// `metrics.every` rounds, at the last and at a stop (`measure` fills the algorithm's
    /// columns). The simulator pauses after every round to ask ``shouldStop``; pausing runs
    /// the same events, so the trace does not depend on it.
    private func drive<Node: ProtocolNode>(_ sim: Simulator<Node>, spacing: Duration, stepCost: Double? = nil,
                                           _ onRow: (RoundRow) -> Void, measure: (Simulator<Node>) -> RoundRow) throws(ScenarioError) -> RunResult {
        network.schedule(scenario, on: sim, spacing: spacing)
        let rates = computeRates(stepCost: stepCost)
        if !rates.isEmpty { sim.computeRate = { rates[$0] } }
        let end = Instant.zero + roundDuration * scenario.rounds
        var rows = 0
        var lastRound = 0
        var refused: ScenarioError?
        sim.run(until: end, every: roundDuration) { sim in
            if let (index, error) = sim.refusedNodes.first {
                refused = ScenarioError("node \(index) could not be built: \(error)")
                return false
            }
            let round = Int(sim.now.nanoseconds / roundDuration.nanosecondsClamped)
            lastRound = round
            let stop = round < scenario.rounds && shouldStop(round)
            guard round % scenario.metrics.every == 0 || round == scenario.rounds || stop else { return true }
            var row = measure(sim)
            row.round = round
            row.time = Double(sim.now.nanoseconds) / 1e9
            row.bytesSent = sim.counters.bytesSent
            row.messagesSent = sim.counters.sent
            row.messagesDropped = sim.counters.totalDropped
            row.liveNodes = (0..<sim.nodeCount).reduce(0) { $0 + (sim.isUp($1) ? 1 : 0) }
            rows += 1
            onRow(row)
            return !stop
        }
        if let refused { throw refused }
        // A stop comes only before the last round, so a run that reached the end completed.
        return RunResult(traceHash: "\(sim.traceHash)", rows: rows, completed: sim.now >= end, lastRound: lastRound)
    }

    /// Work units a second of each node (empty: the simulator's default for all).
    private func computeRates(stepCost: Double?) -> [Double] {
        let nodes = scenario.nodes
        guard nodes.stepsPerSecond > 0 || nodes.slowFraction > 0 else { return [] }
        let normal = nodes.stepsPerSecond > 0 ? nodes.stepsPerSecond * (stepCost ?? 1) : 1e9
        var rng = SplitMix64(seed: scenario.seed ^ 0x510_7DE7)
        var rates = [Double](repeating: normal, count: nodes.count)
        for i in network.members(fraction: nodes.slowFraction, region: [], of: scenario, rng: &rng) { rates[i] = normal / nodes.slowFactor }
        return rates
    }
}

/// The consensus columns of a row from the live nodes' estimates: their mean, the relative
/// RMS distance from it and, given the true average, the largest relative error from that.
struct ConsensusMeter {
    let target: [Double]?
    private(set) var row = RoundRow(round: 0, time: 0, bytesSent: 0, messagesSent: 0, messagesDropped: 0, liveNodes: 0)

    init(target: [Double]?) { self.target = target }

    /// `visit(i, body)` hands node i's estimate to `body` as values and their divisor
    /// (estimate = values / divisor), or does not call it when the node has none.
    mutating func measure(_ count: Int, isUp: (Int) -> Bool, visit: (Int, (UnsafeBufferPointer<Double>, Double) -> Void) -> Void) {
        var sum: [Double] = []
        var nodes = 0
        for i in 0..<count where isUp(i) {
            visit(i) { v, w in
                guard w > 0 else { return }
                if sum.isEmpty { sum = [Double](repeating: 0, count: v.count) }
                guard v.count == sum.count else { return }
                for k in 0..<v.count { sum[k] += v[k] / w }
                nodes += 1
            }
        }
        guard nodes > 0 else { return }
        let mean = sum.map { $0 / Double(nodes) }
        let meanNorm = mean.reduce(0) { $0 + $1 * $1 }.squareRoot()
        let scale = target.map { $0.reduce(0) { max($0, abs($1)) } } ?? 0
        var squares = 0.0
        var worst = 0.0
        for i in 0..<count where isUp(i) {
            visit(i) { v, w in
                guard w > 0, v.count == mean.count else { return }
                for k in 0..<v.count {
                    let x = v[k] / w
                    squares += (x - mean[k]) * (x - mean[k])
                    if let target { worst = max(worst, abs(x - target[k])) }
                }
            }
        }
        let rms = (squares / Double(nodes)).squareRoot()
        row.consensusError = meanNorm > 0 ? rms / meanNorm : rms
        if target != nil { row.targetError = scale > 0 ? worst / scale : worst }
    }
}
