import Crypto
import Federation
import Foundation
import Gossip
import Learner
import Experiments
import Simulation

/// `learning`: the gossip-learning anchor, reproduced in the simulator with the same scenario
/// as the Python simulator gossipy 0.0.1 (PyTorch) was measured on: 1,000 nodes, Fashion-MNIST
/// split IID (60 training images each, pixels scaled to [0, 1]), softmax regression, gossip
/// learning with push to a uniformly random peer, the receiver merging (averaging) and then
/// running one local epoch of SGD (learning rate 0.1, batch 32), no loss, 100 rounds; then
/// every node evaluated on the 10,000 test images (on both cores). gossipy's figures were
/// measured on a machine of this kind (AMD EPYC) and are quoted: it is not installed here.
enum LearningBench {
    /// gossipy's measured figures for this scenario.
    static let gossipySeconds = 60.0
    static let gossipyAccuracy = 0.747
    static let gossipyResidentBytes = 1.3 * 1_073_741_824

    static let nodes = 1_000
    static let rounds = 100

    static func run() throws {
        BLAS.setThreadCount(1)
        guard FileManager.default.fileExists(atPath: DataSource.fashionMNISTDirectory + "/train-images-idx3-ubyte.gz") else {
            FileHandle.standardError.write(Data("learning: Fashion-MNIST is not installed (make deps installs dataset-fashion-mnist); skipped\n".utf8))
            return
        }
        var report = BenchReport(suite: "learning")
        try gossipyAnchor(into: &report)
        try algorithms(into: &report)
        report.finish()
    }

    static func gossipyAnchor(into report: inout BenchReport) throws {
        let started = Date()
        let (shards, test) = try load()
        let loaded = Date()
        let models = try simulate(shards)
        let simulated = Date()
        let accuracies = Self.evaluate(models, on: test)
        let finished = Date()
        let mean = accuracies.reduce(0, +) / Double(nodes)
        let seconds = finished.timeIntervalSince(started)
        let resident = Self.peakResidentBytes()

        report.add(BenchFigure(
            name: "gossip learning, 1,000 nodes x 100 rounds + evaluation: wall time", value: seconds, unit: "s",
            baseline: gossipySeconds, ratio: gossipySeconds / seconds,
            note: String(format: "gossipy 0.0.1 quoted; load %.1f s, simulate %.1f s, evaluate %.1f s; target ratio >= 10",
                         loaded.timeIntervalSince(started), simulated.timeIntervalSince(loaded), finished.timeIntervalSince(simulated))))
        report.add(BenchFigure(
            name: "gossip learning: time per node-round", value: seconds / Double(nodes * rounds) * 1e6, unit: "µs",
            baseline: gossipySeconds / Double(nodes * rounds) * 1e6, ratio: gossipySeconds / seconds, note: "gossipy quoted"))
        report.add(BenchFigure(
            name: "gossip learning: mean test accuracy (10,000 images)", value: mean, unit: "",
            baseline: gossipyAccuracy, ratio: mean / gossipyAccuracy,
            note: String(format: "min %.4f, max %.4f; target >= gossipy's", accuracies.min() ?? 0, accuracies.max() ?? 0)))
        report.add(BenchFigure(
            name: "gossip learning: peak resident memory", value: resident / 1_048_576, unit: "MiB",
            baseline: gossipyResidentBytes / 1_048_576, ratio: gossipyResidentBytes / resident,
            note: "VmHWM, the whole process with the data set loaded; target ratio >= 10"))
    }

    /// The anchor's 100 rounds of gossip learning on `shards`; the nodes' final models (the
    /// simulator is gone once they are evaluated).
    static func simulate(_ shards: [Dataset]) throws -> [Model?] {
        let architecture = try Architecture(inputCount: 784, hiddenSizes: [], classCount: 10)
        var settings = GossipLearningNode.Settings()
        settings.gossipInterval = .seconds(1)
        settings.trainer = TrainerConfig(batchSize: 32, sgd: SGDConfig(learningRate: 0.1, momentum: 0, weightDecay: 0))
        settings.localSteps = (60 + 31) / 32
        let peers = (0..<nodes).map(SimAddress.peer)
        // Every node may push to every other: one shared list (copy on write: never copied).
        let everyone = (0..<nodes).map { PeerAddress(peer: peers[$0], endpoint: SimAddress.endpoint($0)) }
        let initial = Model(architecture: architecture, seed: 1)
        let sim = Simulator<GossipLearningNode>(nodeCount: nodes, seed: 1, links: LinkPolicy(default: LinkModel(latency: .milliseconds(1)))) {
            try GossipLearningNode(peer: peers[$0.index], neighbours: everyone, architecture: architecture, initial: initial,
                                   data: shards[$0.index], settings: settings, seed: UInt64($0.index))
        }
        sim.startAll()
        sim.run(until: .zero + settings.gossipInterval * rounds)
        return (0..<nodes).map { sim.node($0)?.model }
    }

    /// Each algorithm, uncompressed and with int8 (SGP with top-k 10 % too: sparse push-sum;
    /// the others send whole models, which top-k does not fit), on the decentralized-learning scenario of the
    /// tests: 32 peers, Dirichlet α = 0.5 over Fashion-MNIST, softmax regression, 20 % message
    /// loss, seed 1, 5 local steps of batch 32 per 200 ms round at 0.1 decaying by cosine to 5 %
    /// over 150 s. Figures: rounds (and wall time) until the mean accuracy on 2,000 test images,
    /// checked every 5 s of virtual time, first reaches 0.80 and 0.84, and bytes sent per node
    /// by then. No baseline: the algorithms are compared with one another.
    static func algorithms(into report: inout BenchReport) throws {
        var (train, loadedTest) = try DataSource.resolve("fashion-mnist").load()
        guard var test = loadedTest else { throw LearnerError.invalidArgument("Fashion-MNIST without its test set") }
        let pixels = try Normalizer.range(low: 0, high: 255, featureCount: train.featureCount)
        try train.normalize(with: pixels)
        try test.normalize(with: pixels)
        let subset = try test.subset(Array(0..<2_000))
        let network = try LearningNetwork.ring(train, nodes: 32, partition: .dirichlet(alpha: 0.5), loss: 0.2, seed: 1)
        let architecture = try Architecture(inputCount: 784, hiddenSizes: [], classCount: 10)
        let seconds = 150
        let round = Duration.milliseconds(200)
        let trainer = TrainerConfig(batchSize: 32, sgd: SGDConfig(learningRate: 0.1, momentum: 0, weightDecay: 0,
                                                                 schedule: .cosine(totalSteps: seconds * 5 * 5, floor: 0.05)))
        for codecName in ["fp32", "int8", "topk:0.1"] {
            let codec = try CompressedShareCodec.named(codecName)
            var sgp = LearningNode<PushSumAverager>.Settings()
            sgp.trainInterval = round
            sgp.trainer = trainer
            var averaging = PushSumAverager.Settings()
            averaging.tickInterval = .milliseconds(50)
            averaging.retransmitInterval = .milliseconds(40)
            averaging.maxInFlight = 4
            let sgpSim = try network.sgp(architecture: architecture, settings: sgp, averaging: averaging, codec: codec)
            record("SGP", codecName, measure(sgpSim, seconds: seconds, on: subset) { $0.model }, round: round, into: &report)
            guard codec.sparseSelection == nil else { continue }

            var dpsgd = DPSGDNode.Settings()
            dpsgd.roundInterval = round
            dpsgd.trainer = trainer
            let dSim = try network.dpsgd(architecture: architecture, settings: dpsgd, codec: codec)
            record("D-PSGD", codecName, measure(dSim, seconds: seconds, on: subset) { $0.model }, round: round, into: &report)

            var gossip = GossipLearningNode.Settings()
            gossip.gossipInterval = round
            gossip.trainer = trainer
            let gSim = try network.gossipLearning(architecture: architecture, settings: gossip, codec: codec)
            record("gossip learning", codecName, measure(gSim, seconds: seconds, on: subset) { $0.model }, round: round, into: &report)
        }
    }

    /// When a run first reached each accuracy: virtual time, wall time and bytes sent.
    struct Milestones {
        var reached: [Double: (virtual: Double, wall: Double, bytes: Int)] = [:]
        var final = 0.0
        var wall = 0.0
        var bytes = 0
    }

    static let thresholds = [0.80, 0.84]

    static func measure<Node: ProtocolNode>(_ sim: Simulator<Node>, seconds: Int, on test: Dataset, model: (Node) -> Model?) -> Milestones {
        var milestones = Milestones()
        let started = Date()
        sim.startAll()
        sim.run(until: .zero + .seconds(seconds), every: .seconds(5)) { sim in
            let accuracies = (0..<sim.nodeCount).compactMap { sim.node($0).flatMap(model).flatMap { try? $0.evaluate(on: test).accuracy } }
            let mean = accuracies.reduce(0, +) / Double(max(1, accuracies.count))
            milestones.final = mean
            for t in thresholds where mean >= t && milestones.reached[t] == nil {
                milestones.reached[t] = (Double(sim.now.nanoseconds) / 1e9, Date().timeIntervalSince(started), sim.counters.bytesSent)
            }
            return true
        }
        milestones.wall = Date().timeIntervalSince(started)
        milestones.bytes = sim.counters.bytesSent
        return milestones
    }

    static func record(_ algorithm: String, _ codec: String, _ m: Milestones, round: Duration, into report: inout BenchReport) {
        for t in thresholds {
            let name = "\(algorithm), \(codec): rounds to mean accuracy \(t)"
            guard let hit = m.reached[t] else {
                report.add(BenchFigure(name: name, value: .nan, unit: "rounds",
                                       note: String(format: "not reached in 150 s (final %.4f)", m.final)))
                continue
            }
            report.add(BenchFigure(name: name, value: hit.virtual / round.seconds, unit: "rounds",
                                   note: String(format: "%.0f s virtual, %.1f s wall, %.1f MB sent per node", hit.virtual, hit.wall, Double(hit.bytes) / 32e6)))
        }
        report.add(BenchFigure(name: "\(algorithm), \(codec): bytes sent per node in 150 s", value: Double(m.bytes) / 32e6, unit: "MB",
                               note: String(format: "final mean %.4f on 2,000 images; %.1f s wall", m.final, m.wall)))
    }

    /// Each node's 60 training images (views of the one training set, kept as bytes) and the
    /// test set, pixels scaled to [0, 1].
    static func load() throws -> (shards: [Dataset], test: Dataset) {
        var (train, loadedTest) = try DataSource.resolve("fashion-mnist").load()
        guard var test = loadedTest else { throw LearnerError.invalidArgument("Fashion-MNIST without its test set") }
        let pixels = try Normalizer.range(low: 0, high: 255, featureCount: train.featureCount)
        try train.normalize(with: pixels)
        try test.normalize(with: pixels)
        let partition = try Partition(labels: train.labels, classCount: train.classCount, peers: nodes, scheme: .iid, seed: 1)
        return (try partition.views(of: consume train), test)
    }

    /// Every model's test accuracy (0 for a node without one), the models split over both
    /// cores (one BLAS thread each), each half evaluated with shared first-layer products.
    static func evaluate(_ models: [Model?], on test: Dataset) -> [Double] {
        let results = Results(count: models.count)
        let threads = 2
        let present = models.indices.filter { models[$0] != nil }
        DispatchQueue.concurrentPerform(iterations: threads) { part in
            let mine = Array(present[(present.count * part / threads)..<(present.count * (part + 1) / threads)])
            let evaluations = (try? Model.evaluate(mine.compactMap { models[$0] }, on: test)) ?? []
            for (i, evaluation) in zip(mine, evaluations) { results.set(i, evaluation.accuracy) }
        }
        return results.values
    }

    /// Results written by several threads, each to its own indices.
    final class Results: @unchecked Sendable {
        private let lock = NSLock()
        private(set) var values: [Double]
        init(count: Int) { values = Array(repeating: 0, count: count) }
        func set(_ i: Int, _ value: Double) { lock.withLock { values[i] = value } }
    }

    /// The process's peak resident set (VmHWM), in bytes.
    static func peakResidentBytes() -> Double {
        guard let status = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8),
              let line = status.split(separator: "\n").first(where: { $0.hasPrefix("VmHWM:") }),
              let kilobytes = line.split(separator: " ").dropFirst().first.flatMap({ Double($0) }) else { return 0 }
        return kilobytes * 1024
    }
}
