import Crypto
import DeterministicRandom
import Federation
import Foundation
import Gossip
import Learner
import Experiments
import Simulation
import Testing

/// Stochastic gradient push in the simulator: peers with skewed private data, lossy links and
/// devices of different speeds train one model; the averaging stays exact while they learn.
@Suite(.serialized)
struct LearningNodeTests {
    /// Bit-for-bit results need one OpenBLAS thread, which the program (here the test run) sets.
    init() { BLAS.setThreadCount(1) }

    /// `nodes` learning nodes on a ring with three random links each, holding a Dirichlet(`alpha`)
    /// split of `data`, all starting from one initial model, over links losing `loss` of messages.
    static func network(_ data: Dataset, nodes: Int, alpha: Double, architecture: Architecture, loss: Double,
                        settings: LearningNode<PushSumAverager>.Settings = .init(), averaging: PushSumAverager.Settings = .init(),
                        codec: any ShareCodec = IdentityShareCodec(), seed: UInt64) throws -> (sim: Simulator<LearningNode<PushSumAverager>>, samples: Double) {
        let net = try LearningNetwork.ring(data, nodes: nodes, partition: .dirichlet(alpha: alpha), loss: loss, seed: seed)
        return (try net.sgp(architecture: architecture, settings: settings, averaging: averaging, codec: codec), net.sampleCount)
    }

    /// Learning nodes on `graph` over `links`, holding a `partition` of `data`.
    static func network(_ data: Dataset, graph: Graph, links: LinkPolicy, partition scheme: PartitionScheme, architecture: Architecture,
                        settings: LearningNode<PushSumAverager>.Settings, averaging: PushSumAverager.Settings, codec: any ShareCodec = IdentityShareCodec(),
                        joining: Set<Int> = [], seed: UInt64) throws -> (sim: Simulator<LearningNode<PushSumAverager>>, samples: Double) {
        let net = try LearningNetwork(data, graph: graph, links: links, partition: scheme, seed: seed)
        return (try net.sgp(architecture: architecture, settings: settings, averaging: averaging, codec: codec, joining: joining), net.sampleCount)
    }

    /// Σ weights over nodes and transfers in flight not yet applied.
    static func totalWeight(_ sim: Simulator<LearningNode<PushSumAverager>>) -> Double { AveragingMetrics.totalWeight(sim) { $0.averager } }

    @Test func skewedPeersOnLossyLinks_learnTheWholeTask_andTheWeightStaysTheSampleCount() throws {
        let arch = try Architecture(inputCount: 6, hiddenSizes: [], classCount: 3)
        let (sim, samples) = try Self.network(try Dataset.gaussianBlobs(count: 1_600, seed: 1), nodes: 8, alpha: 0.2, architecture: arch, loss: 0.2, seed: 4)
        let test = try Dataset.gaussianBlobs(count: 600, seed: 2)
        sim.startAll()
        var weightChecks = 0
        sim.run(until: Instant(nanoseconds: 30_000_000_000), every: .seconds(1)) { sim in
            #expect(abs(Self.totalWeight(sim) - samples) <= 1e-9 * samples, "at \(sim.now)")
            weightChecks += 1
            return true
        }
        #expect(weightChecks == 30)
        for i in 0..<8 {
            let node = try #require(sim.node(i))
            #expect(node.roundsTrained > 50, "node \(i) trained \(node.roundsTrained) rounds")
            let accuracy = try #require(node.model).evaluate(on: test).accuracy
            #expect(accuracy > 0.95, "node \(i): accuracy \(accuracy)")
        }
    }

    @Test func weightStaysTheSampleCount_atEveryStep_underLossDuplicationAndCrashesWithRestarts() throws {
        let arch = try Architecture(inputCount: 6, hiddenSizes: [8], classCount: 3)
        var rng = SplitMix64(seed: 11)
        var graph = Graph(nodeCount: 8)
        graph.addCluster(0..<8, extraLinksPerNode: 2, rng: &rng)
        let links = LinkPolicy(default: LinkModel(loss: 0.2, latency: .milliseconds(10), jitter: .milliseconds(20), duplication: 0.1))
        let (sim, samples) = try Self.network(try Dataset.gaussianBlobs(count: 900, seed: 1), graph: graph, links: links, partition: .dirichlet(alpha: 0.5),
                                              architecture: arch, settings: .init(), averaging: .init(), seed: 11)
        sim.startAll()
        // Nodes crash (keeping their state, as a restart from the data directory does) and come
        // back, one at a time and overlapping; their training rounds in progress are lost.
        for (k, node) in [2, 5, 2, 7, 0].enumerated() {
            let at = Int64(2 + 3 * k) * 1_000_000_000
            sim.crash(node, at: Instant(nanoseconds: at), keepState: true)
            sim.start(node, at: Instant(nanoseconds: at + 2_500_000_000))
        }
        var checks = 0
        sim.run(until: Instant(nanoseconds: 25_000_000_000), every: .milliseconds(100)) { sim in
            checks += 1
            let total = Self.totalWeight(sim)
            #expect(abs(total - samples) <= 1e-9 * samples, "at \(sim.now): \(total)")
            return abs(total - samples) <= 1e-9 * samples
        }
        #expect(checks == 250)
        #expect(sim.counters.duplicated > 0 && sim.counters.dropped(.loss) > 0 && sim.counters.dropped(.nodeDown) > 0)
        #expect((0..<8).allSatisfy { (sim.node($0)?.roundsTrained ?? 0) > 20 })
    }

    @Test func aSlowDevice_trainsFewerRounds_inTheSameVirtualTime() throws {
        let arch = try Architecture(inputCount: 6, hiddenSizes: [16], classCount: 3)
        let (sim, _) = try Self.network(try Dataset.gaussianBlobs(count: 800, seed: 1), nodes: 4, alpha: 1, architecture: arch, loss: 0, seed: 5)
        // Node 3 computes a hundred times slower than the others.
        sim.computeRate = { $0 == 3 ? 1e5 : 1e7 }
        sim.startAll()
        sim.run(until: Instant(nanoseconds: 10_000_000_000))
        let rounds = (0..<4).map { sim.node($0)?.roundsTrained ?? 0 }
        let cost = 5.0 * 32 * Double(arch.parameterCount) * 6
        // A round takes its compute time plus the 100 ms pause: 10 s hold about that many.
        let fast = 10 / (cost / 1e7 + 0.1), slow = 10 / (cost / 1e5 + 0.1)
        for i in 0..<3 { #expect(abs(Double(rounds[i]) - fast) <= 2, "node \(i): \(rounds[i]) rounds, about \(fast) expected") }
        #expect(abs(Double(rounds[3]) - slow) <= 2, "slow node: \(rounds[3]) rounds, about \(slow) expected")
    }

    /// The decentralized-learning scenario: 32 peers, Dirichlet α = 0.5 over Fashion-MNIST,
    /// softmax regression, 20 % message loss, stochastic gradient push for 150 s of virtual
    /// time: 5 local steps (batch 32) every 200 ms at a learning rate of 0.1 decaying by cosine
    /// to 5 % of it, gossip every 50 ms with up to 4 shares in flight. Measured: mean test
    /// accuracy 0.828 (every node between 0.822 and the mean), against the target of 0.82.
    /// One run of the Fashion-MNIST scenario with `codec` on the wire: the peers' final test
    /// accuracies and the bytes sent.
    /// The Fashion-MNIST runs' settings, for `seconds` of virtual time: 5 local steps (batch
    /// 32) every 200 ms at a learning rate of 0.1 decaying by cosine to 5 % of it, gossip every
    /// 50 ms with up to 4 shares in flight.
    static func fashionMNISTSettings(seconds: Int) -> (LearningNode<PushSumAverager>.Settings, PushSumAverager.Settings) {
        var settings = LearningNode<PushSumAverager>.Settings()
        settings.trainInterval = .milliseconds(200)
        settings.trainer.sgd.learningRate = 0.1
        settings.trainer.sgd.schedule = .cosine(totalSteps: seconds * 5 * settings.localSteps, floor: 0.05)
        var averaging = PushSumAverager.Settings()
        averaging.tickInterval = .milliseconds(50)
        averaging.retransmitInterval = .milliseconds(40)
        averaging.maxInFlight = 4
        return (settings, averaging)
    }

    static func fashionMNISTRun(codec: String) throws -> (accuracies: [Double], bytes: Int, curve: [Double]) {
        let (train, test) = try fashionMNIST()
        let arch = try Architecture(inputCount: 784, hiddenSizes: [], classCount: 10)
        let seconds = 150
        let (settings, averaging) = fashionMNISTSettings(seconds: seconds)
        let (sim, samples) = try network(train, nodes: 32, alpha: 0.5, architecture: arch, loss: 0.2, settings: settings, averaging: averaging,
                                         codec: try CompressedShareCodec.named(codec), seed: 1)
        // During the run, a fixed 2,000 test images; at the end, all 10,000.
        let subset = try test.subset(Array(0..<2_000))
        sim.startAll()
        var curve: [Double] = []
        sim.run(until: Instant(nanoseconds: Int64(seconds) * 1_000_000_000), every: .seconds(10)) { sim in
            let accuracies = (0..<32).compactMap { try? sim.node($0)?.model?.evaluate(on: subset).accuracy }
            curve.append(accuracies.reduce(0, +) / Double(max(1, accuracies.count)))
            #expect(abs(totalWeight(sim) - samples) <= 1e-9 * samples, "at \(sim.now) with \(codec)")
            return true
        }
        let accuracies = try (0..<32).map { try #require(sim.node($0)?.model).evaluate(on: test).accuracy }
        print("SGP, 32 Dirichlet(0.5) peers, 20 % loss, softmax, \(codec): mean accuracy every 10 s \(curve.map { ($0 * 1000).rounded() / 1000 }); at the end mean \(accuracies.reduce(0, +) / 32), min \(accuracies.min() ?? 0); \(sim.counters.bytesSent) bytes sent")
        return (accuracies, sim.counters.bytesSent, curve)
    }

    /// The decentralized-learning scenario: 32 peers, Dirichlet α = 0.5 over Fashion-MNIST,
    /// softmax regression, 20 % message loss, stochastic gradient push for 150 s of virtual
    /// time: 5 local steps (batch 32) every 200 ms at a learning rate of 0.1 decaying by cosine
    /// to 5 % of it, gossip every 50 ms with up to 4 shares in flight. Measured: mean test
    /// accuracy 0.828 (every node between 0.822 and the mean), against the target of 0.82;
    /// with int8 shares 0.828 as well (every node between 0.821 and the mean), with 3.92 times
    /// fewer bytes sent (1.20 GB against 4.70 GB).
    @Test(.enabled(if: fashionMNISTAvailable))
    func fashionMNIST_32DirichletPeers_20PercentLoss_softmax_plainInt8AndTopK() throws {
        let plain = try Self.fashionMNISTRun(codec: "fp32")
        let mean = plain.accuracies.reduce(0, +) / 32
        #expect(mean >= 0.82, "mean \(mean)")
        #expect(plain.accuracies.allSatisfy { abs($0 - mean) <= 0.01 }, "every node within a point of the mean: \(plain.accuracies)")
        let int8 = try Self.fashionMNISTRun(codec: "int8")
        let int8Mean = int8.accuracies.reduce(0, +) / 32
        #expect(abs(int8Mean - mean) <= 0.01, "int8 \(int8Mean) against \(mean)")
        #expect(Double(plain.bytes) / Double(int8.bytes) >= 3.5, "int8 sent \(int8.bytes) bytes against \(plain.bytes)")
        let topK = try Self.fashionMNISTRun(codec: "topk:0.1")
        let topKMean = topK.accuracies.reduce(0, +) / 32
        #expect(abs(topKMean - mean) <= 0.01, "top-k 10 % \(topKMean) against \(mean)")
        #expect(Double(plain.bytes) / Double(topK.bytes) >= 4, "top-k 10 % sent \(topK.bytes) bytes against \(plain.bytes)")
    }

    /// An uneven deployment: a dense site of 16 peers (5 % loss, 5 ms) and 8 sparse outposts
    /// on a ring of weak links (30 % loss, 40 ± 20 ms), joined to the site by two links, with
    /// Pareto sample counts (shape 1.2) over Fashion-MNIST. Every peer ends within a point
    /// of the network's mean accuracy.
    @Test(.enabled(if: fashionMNISTAvailable))
    func fashionMNIST_unevenNetwork_everyPeerWithinAPointOfTheMean() throws {
        let (train, test) = try fashionMNIST()
        var rng = SplitMix64(seed: 6)
        var graph = Graph(nodeCount: 24)
        graph.addCluster(0..<16, extraLinksPerNode: 4, rng: &rng)
        graph.addCluster(16..<24, extraLinksPerNode: 0, rng: &rng)
        graph.connect(0, 16)
        graph.connect(8, 20)
        var links = LinkPolicy(default: LinkModel(loss: 0.05, latency: .milliseconds(5)), groups: (0..<24).map { $0 < 16 ? 0 : 1 })
        let weak = LinkModel(loss: 0.3, latency: .milliseconds(40), jitter: .milliseconds(20))
        links.setModel(weak, betweenGroups: 1, and: 1)
        links.setModel(weak, betweenGroups: 0, and: 1)
        let (settings, averaging) = Self.fashionMNISTSettings(seconds: 150)
        let arch = try Architecture(inputCount: 784, hiddenSizes: [], classCount: 10)
        let (sim, samples) = try Self.network(train, graph: graph, links: links, partition: .pareto(alpha: 1.2), architecture: arch,
                                              settings: settings, averaging: averaging, seed: 6)
        sim.startAll()
        sim.run(until: Instant(nanoseconds: 150_000_000_000))
        #expect(abs(Self.totalWeight(sim) - samples) <= 1e-9 * samples)
        let accuracies = try (0..<24).map { try #require(sim.node($0)?.model).evaluate(on: test).accuracy }
        let mean = accuracies.reduce(0, +) / 24
        print("SGP, uneven network, Pareto sizes: mean \(mean), dense min \(accuracies[..<16].min() ?? 0), outposts \(accuracies[16...].map { ($0 * 1000).rounded() / 1000 })")
        #expect(accuracies.allSatisfy { abs($0 - mean) <= 0.01 }, "mean \(mean): \(accuracies)")
    }

    /// A peer that joins a network which has trained for 60 s takes the network's model from
    /// the first share it receives, adds its samples there, and within a few of its own
    /// training rounds is as accurate as the others; the weight stays the sample count.
    @Test(.enabled(if: fashionMNISTAvailable))
    func fashionMNIST_aLateJoiner_reachesTheNetworksAccuracyWithinAFewRounds() throws {
        let (train, test) = try fashionMNIST()
        let nodes = 16, late = 15
        var rng = SplitMix64(seed: 8)
        var graph = Graph(nodeCount: nodes)
        graph.addCluster(0..<nodes, extraLinksPerNode: 3, rng: &rng)
        let links = LinkPolicy(default: LinkModel(loss: 0.2, latency: .milliseconds(10), jitter: .milliseconds(10)))
        let (settings, averaging) = Self.fashionMNISTSettings(seconds: 60)
        let arch = try Architecture(inputCount: 784, hiddenSizes: [], classCount: 10)
        let (sim, samples) = try Self.network(train, graph: graph, links: links, partition: .dirichlet(alpha: 0.5), architecture: arch,
                                              settings: settings, averaging: averaging, joining: [late], seed: 8)
        let subset = try test.subset(Array(0..<2_000))
        for i in 0..<nodes where i != late { sim.start(i, at: .zero) }
        sim.start(late, at: Instant(nanoseconds: 60_000_000_000))
        sim.run(until: Instant(nanoseconds: 60_000_000_000))
        let network = (0..<nodes).filter { $0 != late }.compactMap { try? sim.node($0)?.model?.evaluate(on: subset).accuracy }
        let networkMean = network.reduce(0, +) / Double(network.count)
        // Until its first share it holds no model and no weight; its samples are not counted yet.
        var joinedAfter: Duration?
        sim.run(until: Instant(nanoseconds: 70_000_000_000), every: .milliseconds(50)) { sim in
            guard let node = sim.node(late) else { return true }
            let pending = node.averager?.pendingContribution ?? 0
            #expect(abs(Self.totalWeight(sim) + pending - samples) <= 1e-9 * samples, "at \(sim.now)")
            if joinedAfter == nil, !node.joining { joinedAfter = sim.now - Instant(nanoseconds: 60_000_000_000) }
            return true
        }
        let joiner = try #require(sim.node(late))
        let accuracy = try #require(joiner.model).evaluate(on: subset).accuracy
        print("late joiner: joined \(joinedAfter.map { "\($0)" } ?? "never") after starting, \(joiner.roundsTrained) rounds later accuracy \(accuracy) against the network's \(networkMean) when it joined")
        #expect(try #require(joinedAfter) < .seconds(1))
        #expect(joiner.roundsTrained <= 50)
        #expect(accuracy >= networkMean - 0.01, "the joiner's \(accuracy) against the network's \(networkMean)")
    }

    /// One run of the decentralized-learning scenario with an MLP 784-128-10 and `codec` on the
    /// wire, for 200 s of virtual time at a learning rate of 0.2 (cosine to 5 %), the rest as
    /// for softmax regression: the peers' final test accuracies and the bytes sent.
    static func fashionMNISTMLPRun(codec: String) throws -> (accuracies: [Double], bytes: Int) {
        let (train, test) = try fashionMNIST()
        let arch = try Architecture(inputCount: 784, hiddenSizes: [128], classCount: 10)
        let seconds = 200
        var (settings, averaging) = Self.fashionMNISTSettings(seconds: seconds)
        settings.trainer.sgd.learningRate = 0.2
        let (sim, samples) = try Self.network(train, nodes: 32, alpha: 0.5, architecture: arch, loss: 0.2, settings: settings, averaging: averaging,
                                              codec: try CompressedShareCodec.named(codec), seed: 1)
        let subset = try test.subset(Array(0..<2_000))
        sim.startAll()
        var curve: [Double] = []
        sim.run(until: Instant(nanoseconds: Int64(seconds) * 1_000_000_000), every: .seconds(25)) { sim in
            let accuracies = (0..<32).compactMap { try? sim.node($0)?.model?.evaluate(on: subset).accuracy }
            curve.append(accuracies.reduce(0, +) / Double(max(1, accuracies.count)))
            #expect(abs(Self.totalWeight(sim) - samples) <= 1e-9 * samples, "at \(sim.now) with \(codec)")
            return true
        }
        let accuracies = try (0..<32).map { try #require(sim.node($0)?.model).evaluate(on: test).accuracy }
        print("SGP, 32 Dirichlet(0.5) peers, 20 % loss, mlp:128, \(codec): mean every 25 s \(curve.map { ($0 * 1000).rounded() / 1000 }); at the end mean \(accuracies.reduce(0, +) / 32), min \(accuracies.min() ?? 0); \(sim.counters.bytesSent) bytes sent")
        return (accuracies, sim.counters.bytesSent)
    }

    /// The decentralized-learning scenario with an MLP 784-128-10, plain, with int8 shares and
    /// with top-k 10 %. Measured (seed 1): mean test accuracy 0.853 on all 10,000 images
    /// (lowest node 0.825); every 25 s on 2,000 images 0.803, 0.826, 0.845, 0.846, 0.853, 0.858,
    /// 0.858, 0.862; with int8 0.8536 (lowest 0.832) on 20.6 GB sent against 81.2 GB (3.94 times
    /// fewer); with top-k 10 % 0.8507 (lowest 0.836) on 12.7 GB (6.40 times fewer). Seeds 2
    /// and 3 put top-k 10 % 0.62 and 0.14 points below fp32 (docs/learning.md). About 80 s of
    /// wall time for each dense run, 200 s for top-k.
    @Test(.enabled(if: fashionMNISTAvailable))
    func fashionMNIST_32DirichletPeers_20PercentLoss_mlp_plainInt8AndTopK() throws {
        let plain = try Self.fashionMNISTMLPRun(codec: "fp32")
        let mean = plain.accuracies.reduce(0, +) / 32
        #expect(mean >= 0.85, "mean \(mean)")
        let int8 = try Self.fashionMNISTMLPRun(codec: "int8")
        let int8Mean = int8.accuracies.reduce(0, +) / 32
        #expect(abs(int8Mean - mean) <= 0.01, "int8 \(int8Mean) against \(mean)")
        #expect(Double(plain.bytes) / Double(int8.bytes) >= 3.5, "int8 sent \(int8.bytes) bytes against \(plain.bytes)")
        let topK = try Self.fashionMNISTMLPRun(codec: "topk:0.1")
        let topKMean = topK.accuracies.reduce(0, +) / 32
        #expect(abs(topKMean - mean) <= 0.01, "top-k 10 % \(topKMean) against \(mean)")
        #expect(Double(plain.bytes) / Double(topK.bytes) >= 4, "top-k 10 % sent \(topK.bytes) bytes against \(plain.bytes)")
    }

    /// With agreed scaling, every node standardises its inputs by the moments of the whole
    /// network's data, mixed by push-sum with the model under 20 % loss: each ends within a
    /// thousandth of a feature's unit of standardising on all the data at once, and learns.
    @Test func agreedScaling_everyNodeStandardisesByTheWholeNetworksMoments() throws {
        let arch = try Architecture(inputCount: 6, hiddenSizes: [], classCount: 3)
        var data = try Dataset.gaussianBlobs(count: 1_600, seed: 1)
        // Features far from standard, so that scaling matters.
        var shifted = data.features
        for i in shifted.indices { shifted[i] = shifted[i] * Float(1 + i % 6) * 20 + 500 }
        data = try Dataset(features: shifted, labels: data.labels, featureCount: 6, classCount: 3)
        let everyone = Normalizer.fit(.standardize, on: data)
        let net = try LearningNetwork.ring(data, nodes: 8, partition: .dirichlet(alpha: 0.2), loss: 0.2, seed: 4)
        let initial = Model(architecture: arch, seed: 4)
        let built = try (0..<8).map { i in
            try LearningNode(peer: net.peers[i], neighbours: net.graph.neighbourAddresses(i, peers: net.peers), architecture: arch,
                             initial: initial, data: net.shards[i], scaling: .agreed, seed: 4 &+ UInt64(i))
        }
        let sim = Simulator<LearningNode<PushSumAverager>>(nodeCount: 8, seed: 4, links: net.links, topology: net.graph.topology) { built[$0.index] }
        sim.startAll()
        sim.run(until: Instant(nanoseconds: 30_000_000_000), every: .seconds(1)) { sim in
            #expect(abs(Self.totalWeight(sim) - net.sampleCount) <= 1e-9 * net.sampleCount, "at \(sim.now)")
            return true
        }
        var test = try Dataset.gaussianBlobs(count: 600, seed: 2)
        var testShifted = test.features
        for i in testShifted.indices { testShifted[i] = testShifted[i] * Float(1 + i % 6) * 20 + 500 }
        test = try Dataset(features: testShifted, labels: test.labels, featureCount: 6, classCount: 3)
        for i in 0..<8 {
            let node = try #require(sim.node(i))
            let normalizer = try #require(node.normalizer)
            #expect(normalizer.isClose(to: everyone, tolerance: 1e-3), "node \(i): \(normalizer.offsets) \(normalizer.scales) against \(everyone.offsets) \(everyone.scales)")
            var scaled = test
            try scaled.normalize(with: normalizer)
            let accuracy = try #require(node.model).evaluate(on: scaled).accuracy
            #expect(accuracy > 0.95, "node \(i): accuracy \(accuracy)")
        }
    }
}
