import DeterministicRandom
import Foundation
import Gossip
import Learner
import Simulation

/// An experiment, resolved: every key has its value, those the file left open drawn from the
/// seed. ``tree`` writes it back as a complete scenario file, so a run is reproduced from it
/// alone. The keys are documented in docs/researchers.md.
public struct Scenario: Sendable, Equatable {
    public var name: String
    public var seed: UInt64
    /// Rounds to run; a round is `roundMilliseconds` of virtual time.
    public var rounds: Int
    public var roundMilliseconds: Int
    public var nodes: Nodes
    public var topology: TopologySpec
    public var links: LinkSpec
    public var churn: ChurnSpec
    public var partitions: [PartitionSpec]
    public var algorithm: AlgorithmSpec
    public var metrics: MetricsSpec

    /// The algorithms `netsim run` knows: the averaging ones, then those that train a model.
    public static let algorithms = averagingAlgorithms + ["sgp", "gossip-learning", "dpsgd", "fedavg"]
    /// The algorithms that average vectors instead of training a model on `nodes.dataset`.
    public static let averagingAlgorithms = ["push-sum", "pairwise"]
    /// The topologies `netsim run` knows.
    public static let topologies = ["random-links", "sampling", "ring", "torus", "random-regular", "erdos-renyi",
                                    "watts-strogatz", "edges", "regions", "complete"]

    public struct Nodes: Sendable, Equatable {
        public var count: Int
        /// Sample counts of averaging runs: `equal`, `pareto` or `pareto:ALPHA`.
        public var samples: String
        /// Elements of each averaged vector (averaging runs).
        public var dimension: Int
        /// Learning runs: `fashion-mnist`, `blobs` (synthetic, three Gaussian blobs) or a data
        /// directory or file as `peer train --data` takes it.
        public var dataset: String
        public var partition: String
        /// Seed of the split, the initial model and the nodes' own draws (learning runs).
        public var partitionSeed: UInt64
        public var model: String
        /// SGD steps a second of a normal node (0: the simulator's default rate, 10⁹ work units).
        public var stepsPerSecond: Double
        /// Share of nodes that are slow devices, and how many times slower they are.
        public var slowFraction: Double
        public var slowFactor: Double
    }

    public struct TopologySpec: Sendable, Equatable {
        public var kind: String
        /// Random extra links per node on top of a ring (`random-links`, each region).
        public var extraLinks: Int
        /// Degree (`random-regular`), neighbours on the lattice (`watts-strogatz`).
        public var degree: Int
        /// Link probability (`erdos-renyi`), rewiring probability (`watts-strogatz`).
        public var probability: Double
        /// Rows of the torus (0: as square as the node count allows).
        public var rows: Int
        /// The edge-list file (`edges`).
        public var file: String
        /// Regions of different density (`regions`), joined in a chain by `bridges` links each.
        public var regions: [Region]
        public var bridges: Int
        /// Links between regions (nil: the default `[links]`).
        public var bridgeLinks: LinkSpec?
        /// `sampling`: `cache` (every node starts with a random view's worth of peers, as
        /// persisted by a previous run) or `node0` (a cold start: all join through node 0).
        public var bootstrap: String
        public var seed: UInt64
    }

    public struct Region: Sendable, Equatable {
        public var name: String
        public var count: Int
        public var extraLinks: Int
        /// Links inside the region (nil: the default `[links]`).
        public var links: LinkSpec?
    }

    public struct LinkSpec: Sendable, Equatable {
        public var loss: Double
        public var latencyMilliseconds: Double
        public var jitterMilliseconds: Double
        /// `uniform` (0 to jitter) or `exponential` (mean jitter).
        public var jitterDistribution: String
        /// Bytes a second each way (0: unlimited).
        public var bandwidth: Double
        public var duplication: Double
        public var reorder: Double
        /// Gilbert–Elliott burst loss: chance per message of entering a bad spell (0: off),
        /// and of leaving it.
        public var burstEnter: Double
        public var burstExit: Double
        /// Flapping: nodes whose every link goes down for `downSeconds` each `periodSeconds`.
        public var flaps: [Flap]
    }

    public struct Flap: Sendable, Equatable {
        /// Share of nodes that flap (drawn from the seed), or a region by name.
        public var fraction: Double
        public var region: String
        public var periodSeconds: Double
        public var downSeconds: Double
        public var startSeconds: Double
    }

    public struct ChurnSpec: Sendable, Equatable {
        /// Chance per round that a live node goes offline.
        public var rate: Double
        /// Mean time offline (exponential), in seconds.
        public var meanOfflineSeconds: Double
        /// Whether a node comes back with its state (a restart) or fresh (a new device).
        public var keepState: Bool
        /// A trace of `node,offline_s,online_s` rows (empty: none).
        public var trace: String
        public var startSeconds: Double
    }

    public struct PartitionSpec: Sendable, Equatable {
        public var startSeconds: Double
        public var healSeconds: Double
        /// Share of nodes cut off (drawn from the seed), or regions by name.
        public var fraction: Double
        public var regions: [String]
    }

    public struct AlgorithmSpec: Sendable, Equatable {
        public var name: String
        /// Time between two gossip sends of a node (0: one round).
        public var tickMilliseconds: Int
        /// Push-sum: `acknowledged` (exact under loss) or `none` (plain push-sum).
        public var lossRecovery: String
        /// `fp32`, `fp16`, `int8` or `topk:FRACTION`.
        public var compression: String
        public var errorFeedback: Bool
        /// Push-sum and SGP: the fraction of `(v, w)` a transfer moves, and with top-k the fraction
        /// of each carried coordinate (``PushSumAverager/Settings``).
        public var shareFraction: Double
        public var sparseShareFraction: Double
        public var learningRate: Double
        public var localSteps: Int
        public var batch: Int
        public var trainIntervalMilliseconds: Int
        /// `constant` or `cosine` (to 5 % over the run).
        public var schedule: String
        public var clientFraction: Double
        public var localEpochs: Int
    }

    public struct MetricsSpec: Sendable, Equatable {
        /// A row every this many rounds.
        public var every: Int
        /// Test images each evaluation uses (0: all).
        public var evalSamples: Int
        /// Nodes evaluated (0: all; else the first ones, by index).
        public var evalNodes: Int
    }
}

// MARK: Resolving a document

extension Scenario {
    /// Checks every key of `document` and resolves the scenario. `drawnSeed` is used when the
    /// file sets no seed (the caller draws it; it is written out with the rest).
    public init(_ document: ScenarioDocument, drawnSeed: UInt64) throws(ScenarioError) {
        let top = KeyReader(document.root, path: "", source: document.source)
        name = try top.string("name", default: nil) ?? URL(fileURLWithPath: document.source).deletingPathExtension().lastPathComponent
        let seed = try top.seed("seed") ?? drawnSeed
        self.seed = seed
        rounds = try top.int("rounds", default: 100, in: 1...10_000_000, meaning: "the rounds to run")
        roundMilliseconds = try top.int("round_ms", default: 200, in: 1...3_600_000, meaning: "the virtual milliseconds of a round")
        var derived = SplitMix64(seed: seed ^ 0x5CE7_A810)
        let defaults = (partition: derived.next(), topology: derived.next())

        let n = try top.table("nodes")
        let algorithmTable = try top.table("algorithm")
        let algorithmName = try algorithmTable.choice("name", default: "push-sum", allowed: Self.algorithms)
        nodes = Nodes(
            count: try n.int("count", default: 100, in: 2...10_000_000, meaning: "the number of nodes"),
            samples: try n.string("samples", default: "pareto") ?? "pareto",
            dimension: try n.int("dimension", default: 8, in: 1...100_000_000, meaning: "the elements per averaged vector"),
            dataset: try n.string("dataset", default: "blobs") ?? "blobs",
            partition: try n.string("partition", default: "iid") ?? "iid",
            partitionSeed: try n.seed("partition_seed") ?? defaults.partition,
            model: try n.string("model", default: "softmax") ?? "softmax",
            stepsPerSecond: try n.double("steps_per_second", default: 0, in: 0...1e9, meaning: "SGD steps a second (0: the default rate)"),
            slowFraction: try n.double("slow_fraction", default: 0, in: 0...1, meaning: "a share of nodes"),
            slowFactor: try n.double("slow_factor", default: 1, in: 1...1e6, meaning: "how many times slower slow nodes are"))
        try Self.checkSamples(nodes.samples, reader: n)
        try Self.checkLearning(nodes, reader: n)
        try n.finish()

        let defaultLinks = try Self.links(try top.table("links"), flapsAllowed: true)
        links = defaultLinks
        let t = try top.table("topology")
        var regions: [Region] = []
        for r in try t.tables("regions") {
            let regionLinks = r.has("links") ? try Self.links(try r.table("links"), flapsAllowed: false) : nil
            regions.append(Region(
                name: try r.string("name", default: "region-\(regions.count)") ?? "",
                count: try r.int("count", default: 10, in: 1...10_000_000, meaning: "the nodes of the region"),
                extraLinks: try r.int("extra_links", default: 3, in: 0...1_000, meaning: "random links per node inside the region"),
                links: regionLinks))
            try r.finish()
        }
        let bridgeLinks = t.has("bridge_links") ? try Self.links(try t.table("bridge_links"), flapsAllowed: false) : nil
        topology = TopologySpec(
            kind: try t.choice("kind", default: "random-links", allowed: Self.topologies),
            extraLinks: try t.int("extra_links", default: 4, in: 0...1_000, meaning: "random links per node on top of the ring"),
            degree: try t.int("degree", default: 4, in: 1...10_000, meaning: "the degree"),
            probability: try t.double("probability", default: 0.1, in: 0...1, meaning: "a probability"),
            rows: try t.int("rows", default: 0, in: 0...1_000_000, meaning: "the torus rows (0: as square as possible)"),
            file: try t.string("file", default: "") ?? "",
            regions: regions,
            bridges: try t.int("bridges", default: 2, in: 1...1_000, meaning: "links between consecutive regions"),
            bridgeLinks: bridgeLinks,
            bootstrap: try t.choice("bootstrap", default: "cache", allowed: ["cache", "node0"]),
            seed: try t.seed("seed") ?? defaults.topology)
        try t.finish()
        if topology.kind == "regions" {
            guard !regions.isEmpty else { throw t.error("regions", "must list at least one [[topology.regions]] for kind = 'regions'") }
            let total = regions.reduce(0) { $0 + $1.count }
            if n.has("count"), nodes.count != total {
                throw n.error("count", "is \(nodes.count) but the regions hold \(total) nodes; leave nodes.count out or make them agree")
            }
            nodes.count = total
        } else if !regions.isEmpty {
            throw t.error("regions", "is only for kind = 'regions' (kind is '\(topology.kind)')")
        }
        if topology.kind == "edges", topology.file.isEmpty { throw t.error("file", "must name an edge-list file for kind = 'edges'") }
        if topology.kind == "sampling", !["push-sum", "sgp", "gossip-learning", "dpsgd"].contains(algorithmName) {
            throw t.error("kind", "'sampling' (the protocol's own peer sampling) runs push-sum, sgp, gossip-learning and dpsgd; \(algorithmName) needs a fixed graph: \(Self.topologies.filter { $0 != "sampling" }.joined(separator: ", "))")
        }

        let c = try top.table("churn")
        churn = ChurnSpec(
            rate: try c.double("rate", default: 0, in: 0...1, meaning: "the chance per round that a live node goes offline"),
            meanOfflineSeconds: try c.double("mean_offline_s", default: 10, in: 0...1e9, meaning: "the mean seconds offline"),
            keepState: try c.bool("keep_state", default: true),
            trace: try c.string("trace", default: "") ?? "",
            startSeconds: try c.double("start_s", default: 0, in: 0...1e9, meaning: "when churn starts, in seconds"))
        try c.finish()

        var partitions: [PartitionSpec] = []
        for p in try top.tables("partitions") {
            let spec = PartitionSpec(
                startSeconds: try p.double("start_s", default: 0, in: 0...1e9, meaning: "when the partition starts, in seconds"),
                healSeconds: try p.double("heal_s", default: 1e9, in: 0...1e9, meaning: "when it heals, in seconds"),
                fraction: try p.double("fraction", default: 0.5, in: 0...1, meaning: "the share of nodes cut off"),
                regions: try p.strings("regions"))
            guard spec.healSeconds > spec.startSeconds else { throw p.error("heal_s", "must come after start_s (\(spec.startSeconds))") }
            for region in spec.regions where !regions.contains(where: { $0.name == region }) {
                throw p.error("regions", "names '\(region)', which is not a region; the regions are \(regions.map(\.name).joined(separator: ", "))")
            }
            try p.finish()
            partitions.append(spec)
        }
        self.partitions = partitions
        for (i, flap) in links.flaps.enumerated() where !flap.region.isEmpty && !regions.contains(where: { $0.name == flap.region }) {
            throw ScenarioError("\(document.source): links.flaps.\(i).region names '\(flap.region)', which is not a region")
        }

        let a = algorithmTable
        algorithm = AlgorithmSpec(
            name: algorithmName,
            tickMilliseconds: try a.int("tick_ms", default: 0, in: 0...3_600_000, meaning: "the milliseconds between two sends (0: one round)"),
            lossRecovery: try a.choice("loss_recovery", default: "acknowledged", allowed: ["acknowledged", "none"]),
            compression: try a.string("compression", default: "fp32") ?? "fp32",
            errorFeedback: try a.bool("error_feedback", default: true),
            shareFraction: try a.double("share_fraction", default: PushSumAverager.Settings().shareFraction, in: 0.01...1,
                                        meaning: "the fraction of (v, w) a transfer moves"),
            sparseShareFraction: try a.double("sparse_share_fraction", default: PushSumAverager.Settings().sparseShareFraction, in: 0.01...0.99,
                                              meaning: "the fraction of each coordinate a top-k transfer moves"),
            learningRate: try a.double("learning_rate", default: 0.1, in: 0...100, meaning: "the SGD learning rate"),
            localSteps: try a.int("local_steps", default: 5, in: 1...100_000, meaning: "SGD steps per training round"),
            batch: try a.int("batch", default: 32, in: 1...1_000_000, meaning: "the batch size"),
            trainIntervalMilliseconds: try a.int("train_interval_ms", default: 200, in: 0...3_600_000, meaning: "the pause between training rounds"),
            schedule: try a.choice("schedule", default: "cosine", allowed: ["constant", "cosine"]),
            clientFraction: try a.double("client_fraction", default: 0.25, in: 0...1, meaning: "the share of clients per FedAvg round"),
            localEpochs: try a.int("local_epochs", default: 1, in: 1...1_000, meaning: "FedAvg's local epochs"))
        try Self.checkCompression(algorithm.compression, for: algorithmName, reader: a)
        try a.finish()

        let m = try top.table("metrics")
        metrics = MetricsSpec(
            every: try m.int("every", default: 1, in: 1...10_000_000, meaning: "the rounds between two rows"),
            evalSamples: try m.int("eval_samples", default: 1_000, in: 0...10_000_000, meaning: "the test images per evaluation (0: all)"),
            evalNodes: try m.int("eval_nodes", default: 0, in: 0...10_000_000, meaning: "the nodes evaluated (0: all)"))
        try m.finish()
        // Descriptions are for people: kept, not interpreted.
        _ = try top.string("description", default: nil)
        try top.finish()
    }

    private static func links(_ l: KeyReader, flapsAllowed: Bool) throws(ScenarioError) -> LinkSpec {
        var flaps: [Flap] = []
        if flapsAllowed {
            for f in try l.tables("flaps") {
                let flap = Flap(
                    fraction: try f.double("fraction", default: 0.1, in: 0...1, meaning: "the share of nodes that flap"),
                    region: try f.string("region", default: "") ?? "",
                    periodSeconds: try f.double("period_s", default: 10, in: 0.001...1e9, meaning: "the seconds between two outages"),
                    downSeconds: try f.double("down_s", default: 2, in: 0...1e9, meaning: "the seconds a flapping node's links stay down"),
                    startSeconds: try f.double("start_s", default: 0, in: 0...1e9, meaning: "when flapping starts, in seconds"))
                guard flap.downSeconds < flap.periodSeconds else { throw f.error("down_s", "must be shorter than period_s (\(flap.periodSeconds))") }
                try f.finish()
                flaps.append(flap)
            }
        }
        let spec = LinkSpec(
            loss: try l.double("loss", default: 0, in: 0...1, meaning: "the chance that a message is lost"),
            latencyMilliseconds: try l.double("latency_ms", default: 10, in: 0...1e7, meaning: "the one-way latency in milliseconds"),
            jitterMilliseconds: try l.double("jitter_ms", default: 10, in: 0...1e7, meaning: "the extra delay drawn from 0 to jitter_ms"),
            jitterDistribution: try l.choice("jitter_distribution", default: "uniform", allowed: LinkModel.JitterShape.allCases.map(\.rawValue)),
            bandwidth: try l.double("bandwidth", default: 0, in: 0...1e12, meaning: "bytes a second (0: unlimited)"),
            duplication: try l.double("duplication", default: 0, in: 0...1, meaning: "the chance that a message is delivered twice"),
            reorder: try l.double("reorder", default: 0, in: 0...1, meaning: "the chance that a message is held back 50 ms"),
            burstEnter: try l.double("burst_enter", default: 0, in: 0...1, meaning: "the chance per message of a bad spell (0: no bursts)"),
            burstExit: try l.double("burst_exit", default: 0.5, in: 0...1, meaning: "the chance per message of leaving a bad spell"),
            flaps: flaps)
        if spec.burstEnter > 0, spec.burstExit == 0 { throw l.error("burst_exit", "must be above 0 when burst_enter is set, or a bad spell never ends") }
        try l.finish()
        return spec
    }

    /// The model and the split are spelt right: checked here, before a run makes its folder or
    /// a sweep starts its jobs, not when the data is loaded. (The widths are checked against a
    /// nominal layer; the data's own sizes come with it.)
    private static func checkLearning(_ nodes: Nodes, reader: KeyReader) throws(ScenarioError) {
        if (try? Architecture.parse(nodes.model, inputCount: 1, classCount: 2)) == nil {
            throw reader.error("model", "must be softmax or mlp:H1[,H2...] (e.g. mlp:128; widths from 1 to \(Architecture.maxLayerWidth), at most \(Architecture.maxHiddenLayers) of them), got '\(nodes.model)'")
        }
        if (try? PartitionScheme(parsing: nodes.partition)) == nil {
            throw reader.error("partition", "must be iid, dirichlet:ALPHA (above 0), shards:K (1 or more), powerlaw:EXPONENT (0 or more) or pareto:ALPHA (above 0), got '\(nodes.partition)'")
        }
    }

    private static func checkSamples(_ spec: String, reader: KeyReader) throws(ScenarioError) {
        if spec == "equal" || spec == "pareto" { return }
        if spec.hasPrefix("pareto:"), let alpha = Double(spec.dropFirst(7)), alpha > 0, alpha.isFinite { return }
        throw reader.error("samples", "must be equal, pareto or pareto:ALPHA (ALPHA above 0), got '\(spec)'")
    }

    /// Top-k is sparse push-sum (each coordinate at its own weight): it compresses the shares of
    /// push-sum and SGP. Gossip learning and D-PSGD send whole models, which top-k would cut to
    /// a tenth of their values.
    private static func checkCompression(_ spec: String, for algorithm: String, reader: KeyReader) throws(ScenarioError) {
        if ["fp32", "fp16", "int8"].contains(spec) { return }
        if spec.hasPrefix("topk:"), let f = Double(spec.dropFirst(5)), f > 0, f <= 1 {
            guard ["gossip-learning", "dpsgd"].contains(algorithm) else { return }
            throw reader.error("compression", "topk compresses push-sum and sgp shares; \(algorithm) sends whole models, so use fp32, fp16 or int8")
        }
        throw reader.error("compression", "must be fp32, fp16, int8 or topk:FRACTION (FRACTION in (0, 1]), got '\(spec)'")
    }
}

// MARK: Writing it out

extension Scenario {
    /// Every key with its resolved value, as a JSON tree that ``init(_:drawnSeed:)`` reads
    /// back to this very scenario. Seeds are strings: JSON numbers lose precision past 2⁵³.
    public var tree: [String: Any] {
        var top: [String: Any] = [
            "name": name, "seed": String(seed), "rounds": rounds, "round_ms": roundMilliseconds,
            "nodes": [
                "count": nodes.count, "samples": nodes.samples, "dimension": nodes.dimension, "dataset": nodes.dataset,
                "partition": nodes.partition, "partition_seed": String(nodes.partitionSeed), "model": nodes.model,
                "steps_per_second": nodes.stepsPerSecond, "slow_fraction": nodes.slowFraction, "slow_factor": nodes.slowFactor,
            ] as [String: Any],
            "links": Self.tree(links),
            "churn": [
                "rate": churn.rate, "mean_offline_s": churn.meanOfflineSeconds, "keep_state": churn.keepState,
                "trace": churn.trace, "start_s": churn.startSeconds,
            ] as [String: Any],
            "algorithm": [
                "name": algorithm.name, "tick_ms": algorithm.tickMilliseconds, "loss_recovery": algorithm.lossRecovery,
                "compression": algorithm.compression, "error_feedback": algorithm.errorFeedback,
                "share_fraction": algorithm.shareFraction, "sparse_share_fraction": algorithm.sparseShareFraction,
                "learning_rate": algorithm.learningRate, "local_steps": algorithm.localSteps, "batch": algorithm.batch,
                "train_interval_ms": algorithm.trainIntervalMilliseconds, "schedule": algorithm.schedule,
                "client_fraction": algorithm.clientFraction, "local_epochs": algorithm.localEpochs,
            ] as [String: Any],
            "metrics": ["every": metrics.every, "eval_samples": metrics.evalSamples, "eval_nodes": metrics.evalNodes],
        ]
        var t: [String: Any] = [
            "kind": topology.kind, "extra_links": topology.extraLinks, "degree": topology.degree,
            "probability": topology.probability, "rows": topology.rows, "file": topology.file,
            "bridges": topology.bridges, "bootstrap": topology.bootstrap, "seed": String(topology.seed),
        ]
        if !topology.regions.isEmpty {
            t["regions"] = topology.regions.map { r -> [String: Any] in
                var region: [String: Any] = ["name": r.name, "count": r.count, "extra_links": r.extraLinks]
                if let links = r.links { region["links"] = Self.tree(links) }
                return region
            }
        }
        if let bridge = topology.bridgeLinks { t["bridge_links"] = Self.tree(bridge) }
        top["topology"] = t
        if !partitions.isEmpty {
            top["partitions"] = partitions.map { p -> [String: Any] in
                ["start_s": p.startSeconds, "heal_s": p.healSeconds, "fraction": p.fraction, "regions": p.regions]
            }
        }
        return top
    }

    private static func tree(_ l: LinkSpec) -> [String: Any] {
        var t: [String: Any] = [
            "loss": l.loss, "latency_ms": l.latencyMilliseconds, "jitter_ms": l.jitterMilliseconds,
            "jitter_distribution": l.jitterDistribution, "bandwidth": l.bandwidth,
            "duplication": l.duplication, "reorder": l.reorder, "burst_enter": l.burstEnter, "burst_exit": l.burstExit,
        ]
        if !l.flaps.isEmpty {
            t["flaps"] = l.flaps.map { f -> [String: Any] in
                ["fraction": f.fraction, "region": f.region, "period_s": f.periodSeconds, "down_s": f.downSeconds, "start_s": f.startSeconds]
            }
        }
        return t
    }

    /// ``tree`` as sorted, indented JSON.
    public var json: String {
        let data = (try? JSONSerialization.data(withJSONObject: tree, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])) ?? Data()
        return String(decoding: data, as: UTF8.self) + "\n"
    }
}
