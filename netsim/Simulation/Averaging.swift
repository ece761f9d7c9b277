import Crypto
import Foundation
import Gossip

/// An undirected graph over node indices, for topology experiments.
public struct Graph: Sendable {
    /// Neighbours of each node, in insertion order, without repeats; set directly only by this
    /// module's builders, which keep it symmetric.
    public internal(set) var adjacency: [[Int]]

    public init(nodeCount: Int) { adjacency = Array(repeating: [], count: nodeCount) }

    public var nodeCount: Int { adjacency.count }

    /// Links `a` and `b` (no-op for a self-loop or an existing link).
    public mutating func connect(_ a: Int, _ b: Int) {
        guard a != b, !adjacency[a].contains(b) else { return }
        adjacency[a].append(b)
        adjacency[b].append(a)
    }

    /// Makes `nodes` a connected random cluster: a ring (so it is connected) plus
    /// `extraLinksPerNode` links from each node to uniformly chosen members.
    public mutating func addCluster(_ nodes: Range<Int>, extraLinksPerNode: Int, rng: inout SplitMix64) {
        guard nodes.count > 1 else { return }
        for i in nodes { connect(i, i + 1 < nodes.upperBound ? i + 1 : nodes.lowerBound) }
        for i in nodes {
            for _ in 0..<extraLinksPerNode {
                connect(i, nodes.lowerBound + Int(rng.next(upperBound: UInt64(nodes.count))))
            }
        }
    }

    /// Node `i`'s neighbours in the simulator, given each node's identity.
    public func neighbourAddresses(_ i: Int, peers: [PeerID]) -> [PeerAddress] {
        adjacency[i].map { PeerAddress(peer: peers[$0], endpoint: SimAddress.endpoint($0)) }
    }

    /// The topology allowing exactly this graph's links.
    public var topology: Topology { .adjacency(adjacency) }
}

extension Simulator where Node == PushSumAverager {
    /// Averagers on `graph`: node `i` (identity `peers[i]`, by default ``SimAddress/peer(_:)``)
    /// starts from `initial(i)` weighted by `samples[i]` and pushes to its graph neighbours.
    /// With `confinedToGraph` the links also carry nothing else; without it (nodes send only
    /// to neighbours anyway) the per-message check is saved.
    public static func averaging(
        over graph: Graph, initial: @escaping (Int) -> [Float], samples: [Double],
        settings: PushSumAverager.Settings = PushSumAverager.Settings(), codec: any ShareCodec = IdentityShareCodec(),
        links: LinkPolicy, seed: UInt64, confinedToGraph: Bool = true, peers: [PeerID]? = nil
    ) -> Simulator<PushSumAverager> {
        let peers = peers ?? (0..<graph.nodeCount).map(SimAddress.peer)
        return Simulator(nodeCount: graph.nodeCount, seed: seed, links: links, topology: confinedToGraph ? graph.topology : .complete) { context in
            PushSumAverager(
                peer: peers[context.index], initial: initial(context.index), sampleCount: samples[context.index],
                neighbours: graph.neighbourAddresses(context.index, peers: peers), settings: settings, codec: codec,
                rng: SplitMix64(seed: context.seed))
        }
    }
}

/// What a previous run would have persisted: node `node`'s peer cache holding `viewSize`
/// other nodes drawn uniformly (from `records`, node `i`'s record at index `i`), so overlay
/// views are random from the first tick. Each node's draw comes from `seed` and its index
/// alone, so a cache is made when its node starts and none is held before.
public func randomPeerCache(of node: Int, records: [AddressRecord], viewSize: Int, seed: UInt64) -> PeerCache {
    let n = records.count
    let size = min(viewSize, n - 1)
    var rng = SplitMix64(seed: seed ^ (UInt64(node) &* 0xBF58_476D_1CE4_E5B9))
    var picked: [Int] = []
    picked.reserveCapacity(size)
    while picked.count < size {
        let j = Int(rng.next(upperBound: UInt64(n)))
        if j != node, !picked.contains(j) { picked.append(j) }
    }
    return PeerCache(records: picked.map { records[$0] })
}

/// Measurements of averaging runs.
public enum AveragingMetrics {
    /// The sample-weighted mean `Σ wᵢ·xᵢ / Σ wᵢ`, accumulated in `Double`.
    public static func weightedMean(_ vectors: [[Float]], weights: [Double]) -> [Double] {
        guard let dimension = vectors.first?.count else { return [] }
        var sum = [Double](repeating: 0, count: dimension)
        var total = 0.0
        for (v, w) in zip(vectors, weights) {
            for k in 0..<dimension { sum[k] += Double(v[k]) * w }
            total += w
        }
        return sum.map { $0 / total }
    }

    /// `max_k |estimate_k − mean_k| / max_k |mean_k|` of one node; infinity without weight.
    public static func relativeError(of node: PushSumAverager, to mean: [Double]) -> Double {
        let scale = mean.reduce(0) { max($0, abs($1)) }
        return node.withEstimateParts { value, weight in
            guard weight > 0, scale > 0, value.count == mean.count else { return .infinity }
            var worst = 0.0
            for k in 0..<value.count { worst = max(worst, abs(value[k] / weight - mean[k])) }
            return worst / scale
        }
    }

    /// The largest ``relativeError(of:to:)`` over the running nodes in `indices`.
    /// Infinity when none of them is running: an empty set has not converged.
    public static func maxRelativeError(
        _ sim: Simulator<PushSumAverager>, to mean: [Double], nodes indices: some Sequence<Int>
    ) -> Double {
        var worst = 0.0
        var seen = false
        for i in indices where sim.isUp(i) {
            guard let node = sim.node(i) else { continue }
            seen = true
            worst = max(worst, relativeError(of: node, to: mean))
        }
        return seen ? worst : .infinity
    }

    /// Total weight of the running nodes plus the weight of transfers in flight that their
    /// receivers have not applied: constant under acknowledged transfers.
    public static func totalWeight(_ sim: Simulator<PushSumAverager>) -> Double {
        totalWeight(sim) { $0 }
    }

    /// The same for nodes that each hold an averager (a learning node's model averaging).
    public static func totalWeight<Node: ProtocolNode>(_ sim: Simulator<Node>, averager: (Node) -> PushSumAverager?) -> Double {
        var total = 0.0
        for i in 0..<sim.nodeCount {
            guard let node = sim.node(i).flatMap(averager) else { continue }
            total += node.weight
            for (to, transfer) in node.pendingTransfers {
                guard let j = sim.index(of: to.endpoint), let receiver = sim.node(j).flatMap(averager), receiver.peerID == to.peer else {
                    total += transfer.weight
                    continue
                }
                if !receiver.hasApplied(from: node.peerID, epoch: transfer.epoch, sequence: transfer.sequence) {
                    total += transfer.weight
                }
            }
        }
        return total
    }
}

/// Heavy-tailed sample counts: a Pareto law, as edge devices hold very unequal amounts of data.
public enum SampleCounts {
    /// `floor(minimum / U^(1/alpha))`, capped at `cap`, for `U` uniform in (0, 1].
    ///
    /// Defaults: at least 10 samples per device; `alpha` = 1.2 gives a finite mean but an
    /// infinite variance (a few devices hold most of the data, as in federated datasets);
    /// the cap of 10⁶ keeps one device from holding everything.
    public static func pareto(count: Int, minimum: Double = 10, alpha: Double = 1.2, cap: Double = 1e6,
                              rng: inout SplitMix64) -> [Double] {
        (0..<count).map { _ in
            let u = Double((rng.next() >> 11) + 1) * 0x1p-53
            return min(cap, (minimum / pow(u, 1 / alpha)).rounded(.down))
        }
    }
}
