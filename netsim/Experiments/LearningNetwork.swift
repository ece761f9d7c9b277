import Crypto
import DeterministicRandom
import Federation
import Gossip
import Learner
import Simulation

/// A simulated network of learning peers: a graph, its links and each node's part of a data
/// set. One place builds it, for every algorithm, so tests, benchmarks and experiments compare
/// algorithms on the very same peers, splits and links.
public struct LearningNetwork {
    public let graph: Graph
    public let links: LinkPolicy
    /// Node `i`'s training data.
    public let shards: [Dataset]
    public let peers: [PeerID]
    public let seed: UInt64

    /// `nodes` peers on a ring with `extraLinksPerNode` random links each, holding a `partition`
    /// of `data`, over links losing `loss` of messages (10 ± 10 ms).
    public static func ring(_ data: Dataset, nodes: Int, partition: PartitionScheme, loss: Double, extraLinksPerNode: Int = 3,
                            seed: UInt64) throws -> LearningNetwork {
        var rng = SplitMix64(seed: seed)
        var graph = Graph(nodeCount: nodes)
        graph.addCluster(0..<nodes, extraLinksPerNode: extraLinksPerNode, rng: &rng)
        let links = LinkPolicy(default: LinkModel(loss: loss, latency: .milliseconds(10), jitter: .milliseconds(10)))
        return try LearningNetwork(data, graph: graph, links: links, partition: partition, seed: seed)
    }

    /// Peers on `graph` over `links`, holding a `partition` of `data` (every node holds none
    /// when `data` is empty: a network that only mixes).
    public init(_ data: consuming Dataset, graph: Graph, links: LinkPolicy, partition: PartitionScheme, seed: UInt64) throws {
        let nodes = graph.nodeCount
        let shards: [Dataset]
        if data.count > 0 {
            let split = try Partition(labels: data.labels, classCount: data.classCount, peers: nodes, scheme: partition, seed: seed)
            // The peers' views share the set, its rows put in peer order in place.
            shards = try split.views(of: data)
        } else {
            shards = Array(repeating: data, count: nodes)
        }
        self.graph = graph
        self.links = links
        self.shards = shards
        self.peers = (0..<nodes).map(SimAddress.peer)
        self.seed = seed
    }

    public var nodeCount: Int { graph.nodeCount }
    /// Samples over all nodes.
    public var sampleCount: Double { Double(shards.reduce(0) { $0 + $1.count }) }

    /// Stochastic gradient push from one initial model; the nodes in `joining` join late.
    public func sgp(architecture: Architecture, settings: LearningNode<PushSumAverager>.Settings, averaging: PushSumAverager.Settings,
                    codec: any ShareCodec = IdentityShareCodec(), joining: Set<Int> = []) throws -> Simulator<LearningNode<PushSumAverager>> {
        let initial = Model(architecture: architecture, seed: seed)
        let built = try (0..<nodeCount).map { i in
            try LearningNode(peer: peers[i], neighbours: graph.neighbourAddresses(i, peers: peers), architecture: architecture,
                             initial: initial, data: shards[i], settings: settings, averaging: averaging, codec: codec,
                             joining: joining.contains(i), seed: seed &+ UInt64(i))
        }
        return simulator(built)
    }

    /// Gossip learning from one initial model.
    public func gossipLearning(architecture: Architecture, settings: GossipLearningNode.Settings,
                               codec: any ShareCodec = IdentityShareCodec()) throws -> Simulator<GossipLearningNode> {
        let initial = Model(architecture: architecture, seed: seed)
        let built = try (0..<nodeCount).map { i in
            try GossipLearningNode(peer: peers[i], neighbours: graph.neighbourAddresses(i, peers: peers), architecture: architecture,
                                   initial: initial, data: shards[i], settings: settings, codec: codec, seed: seed &+ UInt64(i))
        }
        return simulator(built)
    }

    /// D-PSGD, node `i` starting from `initial(i)` (by default one model for all).
    public func dpsgd(architecture: Architecture, settings: DPSGDNode.Settings, codec: any ShareCodec = IdentityShareCodec(),
                      initial: ((Int) -> Model)? = nil) throws -> Simulator<DPSGDNode> {
        let shared = Model(architecture: architecture, seed: seed)
        let built = try (0..<nodeCount).map { i in
            try DPSGDNode(peer: peers[i], neighbours: graph.neighbourAddresses(i, peers: peers), architecture: architecture,
                          initial: initial?(i) ?? shared, data: shards[i], settings: settings, codec: codec, seed: seed &+ UInt64(i))
        }
        return simulator(built)
    }

    private func simulator<Node: ProtocolNode>(_ built: [Node]) -> Simulator<Node> {
        Simulator<Node>(nodeCount: nodeCount, seed: seed, links: links, topology: graph.topology) { built[$0.index] }
    }
}
