import DeterministicRandom
import Foundation

/// How samples are spread over simulated peers.
public enum PartitionScheme: Hashable, Sendable, CustomStringConvertible {
    /// Shuffle, then equal shares.
    case iid
    /// Label skew: for each class, peers' shares drawn from Dirichlet(α). Small α (0.1) gives
    /// each peer a few dominant classes; large α (100) is close to IID. Peers may end up empty
    /// when α is very small.
    case dirichlet(alpha: Double)
    /// Pathological non-IID (McMahan et al. 2017): samples sorted by label are cut into
    /// peers × k shards and every peer gets k random shards, so it holds at most k classes.
    case shards(perPeer: Int)
    /// Quantity skew: IID labels, peer sizes proportional to rank^(−exponent) in a random rank
    /// order, every peer with at least one sample.
    case powerLaw(exponent: Double)
    /// Quantity skew: IID labels, peer sizes proportional to draws from a Pareto law of shape
    /// `alpha` (`1 / U^(1/alpha)`, `U` uniform in (0, 1]), every peer with at least one sample.
    /// `alpha` near 1 gives a few peers most of the data, as edge devices hold it.
    case pareto(alpha: Double)

    /// Parses `iid`, `dirichlet:ALPHA`, `shards:K`, `powerlaw:EXPONENT` or `pareto:ALPHA`.
    public init(parsing spec: String) throws {
        let parts = spec.split(separator: ":", maxSplits: 1).map(String.init)
        let value = parts.count == 2 ? Double(parts[1]) : nil
        switch (parts.first ?? "", value) {
        case ("iid", nil) where parts.count == 1: self = .iid
        case let ("dirichlet", v?) where v > 0 && v.isFinite: self = .dirichlet(alpha: v)
        case let ("shards", v?) where v >= 1 && v == v.rounded() && v <= 1e6: self = .shards(perPeer: Int(v))
        case let ("powerlaw", v?) where v >= 0 && v.isFinite: self = .powerLaw(exponent: v)
        case let ("pareto", v?) where v > 0 && v.isFinite: self = .pareto(alpha: v)
        default:
            throw LearnerError.invalidArgument("partition must be iid, dirichlet:ALPHA (>0), shards:K (≥1), powerlaw:EXPONENT (≥0) or pareto:ALPHA (>0), got '\(spec)'")
        }
    }

    public var description: String {
        switch self {
        case .iid: return "iid"
        case let .dirichlet(alpha): return "dirichlet:\(alpha)"
        case let .shards(k): return "shards:\(k)"
        case let .powerLaw(e): return "powerlaw:\(e)"
        case let .pareto(alpha): return "pareto:\(alpha)"
        }
    }
}

/// An assignment of sample indices to peers: every sample belongs to exactly one peer.
public struct Partition: Sendable, Equatable {
    public let scheme: PartitionScheme
    /// indices[p] = the samples peer p holds, in a deterministic order.
    public let indices: [[Int]]
    /// histograms[p][c] = how many samples of class c peer p holds.
    public let histograms: [[Int]]

    /// Splits `labels` (in 0..<classCount) over `peers` peers; the same seed gives the same split.
    public init(labels: [Int32], classCount: Int, peers: Int, scheme: PartitionScheme, seed: UInt64) throws {
        guard peers >= 1 else { throw LearnerError.invalidArgument("need at least one peer, got \(peers)") }
        if let bad = labels.first(where: { $0 < 0 || Int($0) >= classCount }) {
            throw LearnerError.invalidArgument("label \(bad) is outside 0..<\(classCount)")
        }
        guard labels.count >= peers else { throw LearnerError.invalidArgument("\(labels.count) samples cannot be spread over \(peers) peers") }
        var rng = SplitMix64(seed: seed)
        var out = [[Int]](repeating: [], count: peers)
        switch scheme {
        case .iid:
            var order = Array(labels.indices)
            rng.shuffle(&order)
            for p in 0..<peers {
                out[p] = Array(order[(p * order.count / peers)..<((p + 1) * order.count / peers)])
            }
        case let .dirichlet(alpha):
            for c in 0..<classCount {
                var members = labels.indices.filter { Int(labels[$0]) == c }
                guard !members.isEmpty else { continue }
                rng.shuffle(&members)
                let weights = (0..<peers).map { _ in rng.gamma(shape: alpha) }
                let total = weights.reduce(0, +)
                var cumulative = 0.0
                var start = 0
                for p in 0..<peers {
                    cumulative += total > 0 ? weights[p] / total : 1 / Double(peers)
                    let end = p == peers - 1 ? members.count : min(members.count, Int((cumulative * Double(members.count)).rounded()))
                    if end > start { out[p].append(contentsOf: members[start..<end]) }
                    start = max(start, end)
                }
            }
        case let .shards(k):
            let shardCount = peers * k
            guard labels.count >= shardCount else {
                throw LearnerError.invalidArgument("\(labels.count) samples cannot make \(shardCount) shards (\(peers) peers × \(k))")
            }
            var shuffled = Array(labels.indices)
            rng.shuffle(&shuffled)
            // Sorted by label, in random order within each class.
            var byClass = [[Int]](repeating: [], count: classCount)
            for i in shuffled { byClass[Int(labels[i])].append(i) }
            let order = byClass.flatMap { $0 }
            var shardIDs = Array(0..<shardCount)
            rng.shuffle(&shardIDs)
            for (slot, shard) in shardIDs.enumerated() {
                let lo = shard * order.count / shardCount, hi = (shard + 1) * order.count / shardCount
                out[slot / k].append(contentsOf: order[lo..<hi])
            }
        case let .powerLaw(exponent):
            var ranks = Array(1...peers)
            rng.shuffle(&ranks)
            out = Self.quantitySkew(count: labels.count, weights: ranks.map { pow(Double($0), -exponent) }, rng: &rng)
        case let .pareto(alpha):
            let weights = (0..<peers).map { _ in 1 / pow(Double((rng.next() >> 11) + 1) * 0x1p-53, 1 / alpha) }
            out = Self.quantitySkew(count: labels.count, weights: weights, rng: &rng)
        }
        self.scheme = scheme
        self.indices = out
        self.histograms = out.map { idx in
            var h = [Int](repeating: 0, count: classCount)
            for i in idx { h[Int(labels[i])] += 1 }
            return h
        }
    }

    /// IID samples in sizes proportional to `weights`, every peer holding at least one; the
    /// rounding remainder goes one by one to the heaviest peers first (ties by index).
    static func quantitySkew(count: Int, weights: [Double], rng: inout SplitMix64) -> [[Int]] {
        let peers = weights.count
        let total = weights.reduce(0, +)
        let spare = count - peers // one sample each is guaranteed
        var sizes = weights.map { 1 + Int(Double(spare) * $0 / total) }
        let heaviestFirst = weights.indices.sorted { (weights[$0], -$0) > (weights[$1], -$1) }
        var left = count - sizes.reduce(0, +)
        var p = 0
        while left > 0 {
            sizes[heaviestFirst[p % peers]] += 1
            left -= 1
            p += 1
        }
        var order = Array(0..<count)
        rng.shuffle(&order)
        var out: [[Int]] = []
        var start = 0
        for q in 0..<peers {
            out.append(Array(order[start..<(start + sizes[q])]))
            start += sizes[q]
        }
        return out
    }

    /// Peer p's share of `data`.
    public func dataset(forPeer p: Int, of data: Dataset) throws -> Dataset {
        guard indices.indices.contains(p) else { throw LearnerError.invalidArgument("no peer \(p) among \(indices.count)") }
        return try data.subset(indices[p])
    }

    /// Every peer's samples as views of one copy of `data` (``Dataset/view(_:)``), what the peers
    /// of a simulation hold: `data`'s rows are first put in peer order, in place when the caller
    /// hands over the only copy, so each peer's rows lie together (a training step reads them
    /// from a few pages, not from all over the set).
    public func views(of data: consuming Dataset) throws -> [Dataset] {
        var taken = [Bool](repeating: false, count: data.count)
        var order: [Int] = []
        order.reserveCapacity(data.count)
        for peer in indices {
            for i in peer {
                guard i < data.count, !taken[i] else { throw LearnerError.invalidArgument("the partition does not fit a data set of \(data.count) samples") }
                taken[i] = true
                order.append(i)
            }
        }
        order += (0..<data.count).filter { !taken[$0] }
        try data.permuteRows(order)
        var start = 0
        return try indices.map { peer in
            defer { start += peer.count }
            return try data.view(Array(start..<(start + peer.count)))
        }
    }

    /// A table of who holds what: per peer, its sample count and per-class counts, then the
    /// mean number of classes a peer holds.
    public func summary(maxPeers: Int = 20) -> String {
        let classes = histograms.first?.count ?? 0
        var out = "partition \(scheme) over \(indices.count) peers, \(indices.reduce(0) { $0 + $1.count }) samples\n"
        let width = max(6, String(histograms.flatMap { $0 }.max() ?? 0).count + 1)
        func pad(_ s: String, _ w: Int = width) -> String { String(repeating: " ", count: max(0, w - s.count)) + s }
        out += pad("peer") + pad("total", 8) + (0..<classes).map { pad("c\($0)") }.joined() + "\n"
        for (p, h) in histograms.enumerated().prefix(maxPeers) {
            out += pad(String(p)) + pad(String(indices[p].count), 8) + h.map { pad(String($0)) }.joined() + "\n"
        }
        if histograms.count > maxPeers { out += "  … \(histograms.count - maxPeers) more peers\n" }
        let held = histograms.map { $0.filter { $0 > 0 }.count }
        out += String(format: "classes per peer: mean %.2f, min %d, max %d\n",
                      Double(held.reduce(0, +)) / Double(max(held.count, 1)), held.min() ?? 0, held.max() ?? 0)
        return out
    }
}
