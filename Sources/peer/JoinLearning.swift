import ArgumentParser
import CommandSupport
import Crypto
import DeterministicRandom
import Federation
import Foundation
import Gossip
import Learner
import Logging

/// `peer join --data ...`: the options of a peer that trains a model with the others.
struct LearningOptions: ParsableArguments {
    @Option(help: "Train a model with the network on this data set: fashion-mnist, mnist:DIR, an IDX prefix or a CSV file (excludes --vector).")
    var data: String?
    @Option(help: "Test data (same forms as --data) for the accuracy in `peer status`; by default the test set of --data, if it has one.")
    var test: String?
    @Option(help: "Model: softmax or mlp:H1[,H2...] (e.g. mlp:128). Every peer of a network must use the same.")
    var model: String = "softmax"
    @Option(help: "Decentralized learning algorithm: sgp (stochastic gradient push: push-sum averaging of the model weighted by samples, local SGD between exchanges), gossip-learning (every --train-interval the model goes to a random peer, which averages it with its own and trains) or dpsgd (D-PSGD: every round a peer mixes the models its neighbours sent with Metropolis-Hastings weights, trains, and sends the result to each). Every peer of a network must use the same.")
    var algorithm: String = "sgp"
    @Option(help: "Give this peer one disjoint part of --data: iid, dirichlet:ALPHA, shards:K or powerlaw:EXPONENT (with --peer-index and --peers).")
    var partition: String?
    @Option(name: .customLong("peer-index"), parsing: .unconditional, help: "This peer's part of the partition, from 0 to --peers - 1.")
    var peerIndex: Int?
    @Option(parsing: .unconditional, help: "How many parts the partition has.")
    var peers: Int?
    @Option(name: .customLong("partition-seed"), parsing: .unconditional, help: "Seed of the partition: the same on every peer, so the parts are disjoint.")
    var partitionSeed: UInt64 = 1
    @Option(help: "Input normalisation, the same on every peer: network (standardise by the whole network's per-feature mean and variance, agreed by push-sum alongside the model), minmax:LOW:HIGH (maps [LOW, HIGH] to [0, 1]) or none.")
    var normalize: String = "network"
    @Option(parsing: .unconditional, help: "Classes of the task (default: from the data set); every peer must use the same.")
    var classes: Int?
    @Option(name: .customLong("label-column"), parsing: .unconditional, help: "CSV label column, counted from 0 (default: a 'label' header; column 0 when there is no header).")
    var labelColumn: Int?
    @Option(name: .customLong("local-steps"), parsing: .unconditional, help: "SGD steps per training round.")
    var localSteps: Int = 5
    @Option(parsing: .unconditional, help: "Mini-batch size of the local steps.")
    var batch: Int = 32
    @Option(parsing: .unconditional, help: "Learning rate of the local steps.")
    var lr: Float = 0.1
    @Option(help: "Learning-rate schedule: constant, or cosine:ROUNDS (down to 5 % over ROUNDS training rounds, then constant).")
    var schedule: String = "constant"
    @Option(name: .customLong("train-interval"), parsing: .unconditional, help: "Milliseconds between the end of one training round and the start of the next.")
    var trainInterval: Int = 200
    @Option(name: .customLong("eval-interval"), parsing: .unconditional, help: "Seconds between two evaluations on the test set.")
    var evalInterval: Double = 10
    @Option(name: .customLong("eval-samples"), parsing: .unconditional, help: "Test samples evaluated during the run (the first N of the test set; 0: all).")
    var evalSamples: Int = 2_000
    @Option(name: .customLong("init-seed"), parsing: .unconditional, help: "Seed of the initial model: the same on every peer.")
    var initSeed: UInt64 = 1
    @Option(name: .customLong("init-model"), help: "Start from a model release this peer holds (NAME, its active version, or NAME@VERSION) instead of random weights, with its architecture and input normalisation: a centrally trained model fine-tuned on local data.")
    var initModel: String?

    /// The decentralized learning algorithms `--algorithm` names.
    static let algorithms = ["sgp", "gossip-learning", "dpsgd"]

    /// Checks every learning flag before anything is loaded.
    func validate(vector: String?, compress: String) throws {
        guard data != nil else {
            let learningOnly = [test != nil, partition != nil, peerIndex != nil, peers != nil, normalize != "network", classes != nil]
            guard !learningOnly.contains(true) else { throw ValidationError("--test, --partition, --peer-index, --peers, --normalize and --classes need --data") }
            return
        }
        guard vector == nil else { throw ValidationError("give --data (train a model) or --vector (average a vector), not both") }
        guard Self.algorithms.contains(algorithm) else {
            throw ValidationError("--algorithm must be sgp (stochastic gradient push), gossip-learning or dpsgd, got '\(algorithm)'")
        }
        if algorithm != "sgp", compress.hasPrefix("topk") {
            throw ValidationError("--compress \(compress) works with --algorithm sgp only: gossip learning and D-PSGD send whole models; use fp32, fp16 or int8")
        }
        if algorithm == "gossip-learning", trainInterval < 1 {
            throw ValidationError("--train-interval is the time between two models sent with --algorithm gossip-learning: 1 ms or more, got \(trainInterval)")
        }
        do {
            _ = try Architecture.parse(model, inputCount: 1, classCount: 2)
            if let partition { _ = try PartitionScheme(parsing: partition) }
        } catch let error as LearnerError {
            throw ValidationError("\(error)")
        }
        if partition != nil || peerIndex != nil || peers != nil {
            guard partition != nil, let peers, let peerIndex else { throw ValidationError("--partition, --peer-index and --peers go together") }
            guard peers >= 1 else { throw ValidationError("--peers must be at least 1, got \(peers)") }
            guard (0..<peers).contains(peerIndex) else { throw ValidationError("--peer-index must be from 0 to \(peers - 1), got \(peerIndex)") }
        }
        _ = try Self.scaling(normalize, featureCount: 1)
        if initModel != nil, normalize != "network" {
            throw ValidationError("--init-model trains with the released model's own input normalisation; leave out --normalize")
        }
        if let classes, classes < 2 { throw ValidationError("--classes must be at least 2, got \(classes)") }
        if let labelColumn, labelColumn < 0 { throw ValidationError("--label-column counts columns from 0, got \(labelColumn)") }
        guard localSteps >= 1 else { throw ValidationError("--local-steps must be at least 1, got \(localSteps)") }
        guard (1...65_536).contains(batch) else { throw ValidationError("--batch must be from 1 to 65536, got \(batch)") }
        guard lr > 0, lr.isFinite else { throw ValidationError("--lr must be a positive number, got \(lr)") }
        _ = try Self.schedule(schedule, localSteps: localSteps)
        guard trainInterval >= 0 else { throw ValidationError("--train-interval is milliseconds, 0 or more, got \(trainInterval)") }
        guard evalInterval > 0, evalInterval.isFinite else { throw ValidationError("--eval-interval is seconds, above 0, got \(evalInterval)") }
        guard evalSamples >= 0 else { throw ValidationError("--eval-samples must be 0 (all) or more, got \(evalSamples)") }
    }

    /// `network`, `minmax:LOW:HIGH` or `none`.
    static func scaling(_ spec: String, featureCount: Int) throws -> InputScaling {
        if spec == "network" { return .agreed }
        if spec == "none" { return .fixed(.identity(featureCount: featureCount)) }
        let parts = spec.split(separator: ":", omittingEmptySubsequences: false)
        if parts.count == 3, parts[0] == "minmax", let low = Float(parts[1]), let high = Float(parts[2]),
           let normalizer = try? Normalizer.range(low: low, high: high, featureCount: featureCount) {
            return .fixed(normalizer)
        }
        throw ValidationError("--normalize must be network, minmax:LOW:HIGH (LOW below HIGH, e.g. minmax:0:255) or none, got '\(spec)'")
    }

    /// `constant` or `cosine:ROUNDS`, in optimizer steps.
    static func schedule(_ spec: String, localSteps: Int) throws -> LearningRateSchedule {
        if spec == "constant" { return .constant }
        if spec.hasPrefix("cosine:"), let rounds = Int(spec.dropFirst("cosine:".count)), rounds >= 1 {
            return .cosine(totalSteps: rounds * localSteps, floor: 0.05)
        }
        throw ValidationError("--schedule must be constant or cosine:ROUNDS (ROUNDS ≥ 1), got '\(spec)'")
    }

    /// What the peer trains on: its part of the data, the test samples, the shared
    /// normalisation and the architecture.
    struct Loaded {
        /// Scaled with fixed scaling, raw with the network's.
        var train: Dataset
        var test: Dataset?
        var scaling: InputScaling
        var architecture: Architecture
        /// The released model to start from (--init-model), if any.
        var initial: Model?
    }

    func load(dataDir: String) throws -> Loaded {
        guard let data else { throw UserFacingError("--data is missing") }
        let source = try DataSource.resolve(data)
        var (train, ownTest) = try source.load(labelColumn: labelColumn, classCount: classes)
        let released = try initModel.map { try ReleaseControl.releasedModel($0, dataDir: dataDir) }
        let scaling = try released.map { .fixed($0.contents.normalizer) } ?? Self.scaling(normalize, featureCount: train.featureCount)
        if let partition, let peers, let peerIndex {
            let scheme = try PartitionScheme(parsing: partition)
            let split = try Partition(labels: train.labels, classCount: train.classCount, peers: peers, scheme: scheme, seed: partitionSeed)
            train = try split.dataset(forPeer: peerIndex, of: train)
        }
        guard train.count > 0 else { throw UserFacingError("--data \(data): this peer's part holds no samples; use another --partition or more data") }
        var test = ownTest
        if let testPath = self.test {
            let loaded = try DataSource.resolve(testPath).load(labelColumn: labelColumn, classCount: train.classCount).train
            guard loaded.featureCount == train.featureCount else {
                throw UserFacingError("--test \(testPath) has \(loaded.featureCount) features per sample, --data \(data) has \(train.featureCount)")
            }
            test = loaded
        }
        if var t = test {
            if evalSamples > 0, t.count > evalSamples { t = try t.subset(Array(0..<evalSamples)) }
            if case .fixed(let normalizer) = scaling { try t.normalize(with: normalizer) }
            test = t
        }
        if case .fixed(let normalizer) = scaling { try train.normalize(with: normalizer) }
        let architecture = try released?.contents.model.architecture ?? Architecture.parse(model, inputCount: train.featureCount, classCount: train.classCount)
        if let released {
            guard architecture.inputCount == train.featureCount, architecture.classCount == train.classCount else {
                throw UserFacingError("--init-model \(released.key) takes \(architecture.inputCount) features and \(architecture.classCount) classes; --data \(data) has \(train.featureCount) and \(train.classCount)")
            }
            printNote("starting from release \(released.key): \(architecture)")
        }
        return Loaded(train: train, test: test, scaling: scaling, architecture: architecture, initial: released?.contents.model)
    }

    /// The stochastic-gradient-push node's settings from the flags.
    func settings() throws -> LearningNode<GossipNode>.Settings {
        var settings = LearningNode<GossipNode>.Settings()
        settings.localSteps = localSteps
        settings.trainInterval = .milliseconds(trainInterval)
        settings.evaluationInterval = .milliseconds(Int64(evalInterval * 1_000))
        settings.trainer = try trainerConfig()
        return settings
    }

    /// The local steps' batch size, learning rate and schedule, for every algorithm.
    func trainerConfig() throws -> TrainerConfig {
        TrainerConfig(batchSize: batch, sgd: SGDConfig(learningRate: lr, momentum: 0, weightDecay: 0,
                                                       schedule: try Self.schedule(schedule, localSteps: localSteps)))
    }
}

/// A learning peer's files in its data directory, beside the runtime's.
enum LearningFiles {
    /// The training checkpoint (``LearningCheckpoint``) and the one before it.
    static let checkpoint = "learning-state"
    static let previousCheckpoint = "learning-state.previous"
    /// The current model with its normaliser, an ordinary model file (`peer predict --model`).
    static let model = "model"
    /// Training rounds between two checkpoints.
    static let checkpointEvery = 25

    /// Saves the checkpoint (keeping the previous one) and the model, each atomically; a peer
    /// still waiting for the network's model saves nothing (a restart then joins again,
    /// rather than resuming the initial model as if it had trained it).
    static func save<Node: LearningPeer>(_ node: Node, in directory: String) {
        guard !node.joining else { return }
        let path = directory + "/" + checkpoint
        if FileManager.default.fileExists(atPath: path) { _ = rename(path, directory + "/" + previousCheckpoint) }
        RuntimeFiles.writeAtomically(node.checkpoint.encoded(), to: path)
        if let model = node.model, let normalizer = node.normalizer {
            RuntimeFiles.writeAtomically(ModelFile.encode(ModelFile.Contents(model: model, normalizer: normalizer)), to: directory + "/" + Self.model)
        }
    }

    /// The newest checkpoint that loads, saying why a damaged one was passed over; nil if none.
    static func load(from directory: String) -> LearningCheckpoint? {
        for name in [checkpoint, previousCheckpoint] {
            let path = directory + "/" + name
            guard let data = FileManager.default.contents(atPath: path) else { continue }
            do {
                return try LearningCheckpoint(decoding: Array(data))
            } catch {
                printNote("\(path) is not a usable checkpoint (\(error)); trying the previous one")
            }
        }
        return nil
    }
}

extension Join {
    /// Runs a peer that trains `learning.data` with the network by `learning.algorithm`.
    func runLearning(identity: Identity, keyring: NetworkKeyring, configuration: NodeRuntime.Configuration,
                     codec: any ShareCodec, releases: ReleaseDistributor, logger: Logger, seed: inout SystemRandomNumberGenerator) throws {
        let loaded = try learning.load(dataDir: dataDir)
        let what = learning.algorithm == "sgp" ? "shares" : "model copies"
        printNote("training \(loaded.architecture) on \(loaded.train.count) samples\(loaded.test.map { ", testing on \($0.count)" } ?? ", no test set"); algorithm \(learning.algorithm), \(what) \(compress)")
        let checkpoint = LearningFiles.load(from: dataDir)
        if let checkpoint, (checkpoint.parameters == nil) != (learning.algorithm == "sgp") {
            let saved = checkpoint.parameters == nil ? "sgp" : "gossip-learning or dpsgd"
            throw UserFacingError("\(dataDir)/\(LearningFiles.checkpoint) was saved by a peer running --algorithm \(saved); restart with the algorithm it ran with, or use another --data-dir")
        }
        switch learning.algorithm {
        case "gossip-learning":
            var settings = GossipLearningNode.Settings()
            settings.gossipInterval = .milliseconds(learning.trainInterval)
            settings.localSteps = learning.localSteps
            settings.trainer = try learning.trainerConfig()
            let runtime = try exchangeRuntime(loaded, checkpoint: checkpoint, identity: identity, keyring: keyring, configuration: configuration,
                                              releases: releases, seed: &seed) { peer, initial, data, trainingSeed in
                try GossipLearningNode(peer: peer, neighbours: [], architecture: loaded.architecture, initial: initial, data: data,
                                       settings: settings, codec: codec, seed: trainingSeed)
            }
            try run(runtime, checkpoint: checkpoint, identity: identity, logger: logger)
        case "dpsgd":
            var settings = DPSGDNode.Settings()
            settings.roundInterval = .milliseconds(learning.trainInterval)
            settings.localSteps = learning.localSteps
            settings.trainer = try learning.trainerConfig()
            let runtime = try exchangeRuntime(loaded, checkpoint: checkpoint, identity: identity, keyring: keyring, configuration: configuration,
                                              releases: releases, seed: &seed) { peer, initial, data, trainingSeed in
                try DPSGDNode(peer: peer, neighbours: [], architecture: loaded.architecture, initial: initial, data: data,
                              settings: settings, codec: codec, seed: trainingSeed)
            }
            try run(runtime, checkpoint: checkpoint, identity: identity, logger: logger)
        default:
            let runtime = try pushSumRuntime(loaded, checkpoint: checkpoint, identity: identity, keyring: keyring, configuration: configuration,
                                             codec: codec, releases: releases, seed: &seed)
            try run(runtime, checkpoint: checkpoint, identity: identity, logger: logger)
        }
    }

    /// The runtime of a peer training by stochastic gradient push: the model rides in the
    /// averager (with the inputs' moments, with the network's scaling).
    private func pushSumRuntime(_ loaded: LearningOptions.Loaded, checkpoint: LearningCheckpoint?, identity: Identity, keyring: NetworkKeyring,
                                configuration: NodeRuntime.Configuration, codec: any ShareCodec, releases: ReleaseDistributor,
                                seed: inout SystemRandomNumberGenerator) throws -> OverlayRuntime<LearningNode<GossipNode>> {
        let architecture = loaded.architecture
        let averagerSettings = configuration.settings.averaging
        let layout = AveragedLayout(architecture: architecture, scaling: loaded.scaling)
        let averager: PushSumAverager
        if let saved = try loadAveragingState(for: identity, codec: codec) {
            guard saved.value.count == layout.dimension else {
                throw UserFacingError("\(dataDir)/\(NodeRuntime.averagingStateName) holds \(saved.value.count) elements, --model \(learning.model) with --normalize \(learning.normalize) averages \(layout.dimension); use the --model and --normalize it ran with, or another --data-dir")
            }
            printNote("resuming the model and averaging state saved in \(dataDir) (weight \(saved.weight)); this peer's samples are not added again")
            averager = .resuming(saved, settings: averagerSettings, codec: codec, rng: SplitMix64(seed: seed.next()))
        } else {
            averager = PushSumAverager(joining: identity.peerID, dimension: layout.dimension, sampleCount: Double(loaded.train.count),
                                       settings: averagerSettings, codec: codec, rng: SplitMix64(seed: seed.next()))
        }
        let settings = try learning.settings()
        let initial = loaded.initial ?? Model(architecture: architecture, seed: learning.initSeed)
        let trainingSeed = seed.next()
        return try userFacing {
            try OverlayRuntime<LearningNode<GossipNode>>(identity: identity, keyring: keyring, configuration: configuration,
                                                          averager: averager, releases: releases, seed: seed.next()) { overlay in
                var node = try LearningNode(base: overlay, architecture: architecture, initial: initial, data: loaded.train,
                                            test: loaded.test, scaling: loaded.scaling, settings: settings, seed: trainingSeed)
                if let checkpoint { try node.restore(checkpoint) }
                return node
            }
        }
    }

    /// The runtime of a peer whose model travels by copies (gossip learning, D-PSGD), made by
    /// `algorithm` from the peer's ID, the initial model, the training data and a seed. With the
    /// network's scaling the overlay averages only the inputs' moments.
    private func exchangeRuntime<Algorithm: ModelExchangeAlgorithm>(
        _ loaded: LearningOptions.Loaded, checkpoint: LearningCheckpoint?, identity: Identity, keyring: NetworkKeyring,
        configuration: NodeRuntime.Configuration, releases: ReleaseDistributor, seed: inout SystemRandomNumberGenerator,
        algorithm: @escaping (PeerID, Model, Dataset, UInt64) throws -> Algorithm
    ) throws -> OverlayRuntime<ModelExchangePeer<Algorithm>> {
        var averager: PushSumAverager?
        if case .agreed = loaded.scaling {
            let dimension = AveragedLayout(momentsOf: loaded.train.featureCount).dimension
            if let saved = try loadAveragingState(for: identity, codec: IdentityShareCodec()) {
                guard saved.value.count == dimension else {
                    throw UserFacingError("\(dataDir)/\(NodeRuntime.averagingStateName) holds \(saved.value.count) elements, the moments of \(loaded.train.featureCount) features are \(dimension); use the --algorithm and --normalize it ran with, or another --data-dir")
                }
                printNote("resuming the inputs' moments saved in \(dataDir) (weight \(saved.weight)); this peer's samples are not added again")
                averager = .resuming(saved, settings: configuration.settings.averaging, codec: IdentityShareCodec(), rng: SplitMix64(seed: seed.next()))
            } else {
                averager = PushSumAverager(peer: identity.peerID, initial: ModelExchangePeer<Algorithm>.initialMoments(of: loaded.train),
                                           sampleCount: Double(loaded.train.count), settings: configuration.settings.averaging,
                                           codec: IdentityShareCodec(), rng: SplitMix64(seed: seed.next()))
            }
        }
        var settings = ModelExchangePeer<Algorithm>.Settings()
        settings.evaluationInterval = .milliseconds(Int64(learning.evalInterval * 1_000))
        let initial = loaded.initial ?? Model(architecture: loaded.architecture, seed: learning.initSeed)
        let trainingSeed = seed.next()
        return try userFacing {
            try OverlayRuntime<ModelExchangePeer<Algorithm>>(identity: identity, keyring: keyring, configuration: configuration,
                                                              averager: averager, releases: releases, seed: seed.next()) { overlay in
                var node = try ModelExchangePeer(base: overlay, algorithm: algorithm(identity.peerID, initial, loaded.train, trainingSeed),
                                                 data: loaded.train, test: loaded.test, scaling: loaded.scaling, settings: settings,
                                                 joining: checkpoint == nil)
                if let checkpoint { try node.restore(checkpoint) }
                return node
            }
        }
    }

    /// Runs a learning peer until it leaves: logs, checkpoints, `peer status`, the `model`
    /// control request, serving, and the model saved at the end.
    private func run<Node: LearningPeer>(_ runtime: OverlayRuntime<Node>, checkpoint: LearningCheckpoint?, identity: Identity,
                                          logger: Logger) throws {
        if let checkpoint { printNote("resuming training after round \(checkpoint.rounds)") }
        let directory = dataDir
        runtime.onEvent = { [unowned runtime] event in
            if let e = Node.overlayEvent(event) { return Self.log(e, to: logger) }
            switch Node.learningEvent(event) {
            case .trained(let loss):
                logger.debug("trained", metadata: ["loss": "\(loss)", "round": "\(runtime.node.roundsTrained)"])
                if runtime.node.roundsTrained % LearningFiles.checkpointEvery == 0 { LearningFiles.save(runtime.node, in: directory) }
            case .evaluated(let accuracy, let loss):
                logger.info("evaluated", metadata: ["accuracy": "\(accuracy)", "loss": "\(loss)", "round": "\(runtime.node.roundsTrained)"])
            case .joined(let pulled):
                logger.info(pulled ? "joined: training from the network's model" : "joined: no peer had a model yet, training from the initial one")
            case .refused(let sender):
                logger.warning("refused a model copy that does not fit this peer's model", metadata: ["from": "\(sender)"])
            case nil:
                break
            }
        }
        let started = WallClock.milliseconds()
        let (normalize, algorithm, compress) = (learning.normalize, learning.algorithm, self.compress)
        runtime.statusExtras = { [unowned runtime] in
            ["learning": Self.learningStatus(runtime, normalize: normalize, algorithm: algorithm, compress: compress, startedAt: started)]
        }
        ReleaseControl.register(on: runtime, identity: identity)
        runtime.controlRequests["model"] = { [unowned runtime] _ in
            guard let model = runtime.node.model, let normalizer = runtime.node.normalizer else {
                return ["error": "this peer holds no model yet (it is joining); ask again in a few seconds"]
            }
            let bytes = ModelFile.encode(ModelFile.Contents(model: model, normalizer: normalizer))
            return ["model": Data(bytes).base64EncodedString(), "rounds": runtime.node.roundsTrained]
        }
        let serving = try startServing(runtime)
        if let registry = serving?.1 {
            // The peer's own model, as it trains: swapped in at each checkpoint.
            let previous = runtime.onEvent
            runtime.onEvent = { [unowned runtime] event in
                previous?(event)
                guard case .trained? = Node.learningEvent(event), runtime.node.roundsTrained % LearningFiles.checkpointEvery == 0,
                      let model = runtime.node.model, let normalizer = runtime.node.normalizer else { return }
                let contents = ModelFile.Contents(model: model, normalizer: normalizer)
                registry.set(ServedModel(name: "local", version: "round \(runtime.node.roundsTrained)", predictor: Predictor(contents),
                                         description: ReleaseControl.describe(contents)))
            }
        }
        let handedOff = try drive(runtime, identity: identity, logger: logger)
        LearningFiles.save(runtime.node, in: directory)
        let saved = "model saved in \(directory)/\(LearningFiles.model)"
        if runtime.node.overlay.averager == nil {
            printNote("left; \(saved)")
        } else {
            printNote(handedOff ? "left: averaging mass handed to a neighbour; \(saved)" : "left: kept its averaging mass (no neighbour took it in time); \(saved)")
        }
    }

    /// The `learning` section of `peer status`.
    static func learningStatus<Node: LearningPeer>(_ runtime: OverlayRuntime<Node>, normalize: String, algorithm: String,
                                                   compress: String, startedAt: UInt64) -> [String: Any] {
        let node = runtime.node
        let nowNanoseconds = Int64(runtime.loop.nowMilliseconds) * 1_000_000
        var status: [String: Any] = [
            "algorithm": algorithm, "compress": compress, "model": node.architecture.name, "normalize": normalize,
            "parameters": node.architecture.parameterCount,
            "rounds": node.roundsTrained, "local_steps": node.stepsTrained,
            "joining": node.joining,
            "bytes_sent": runtime.counters.bytesSent, "bytes_received": runtime.counters.bytesReceived,
            "accuracy": node.lastEvaluation?.accuracy ?? NSNull(), "loss": node.lastEvaluation?.loss ?? NSNull(),
            "training_loss": node.trainingLoss ?? NSNull(),
            "uptime_seconds": Double(WallClock.milliseconds() - startedAt) / 1_000,
        ]
        status["model_age_seconds"] = node.modelChangedAt.map { Double(nowNanoseconds - $0.nanoseconds) / 1e9 } ?? NSNull()
        status["evaluation_age_seconds"] = node.lastEvaluation.map { Double(nowNanoseconds - $0.at.nanoseconds) / 1e9 } ?? NSNull()
        return status
    }
}
