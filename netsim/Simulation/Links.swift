import Foundation
import Gossip

/// How a directed link treats a message: loss (i.i.d. or bursty), latency, jitter,
/// bandwidth, duplication and reordering.
public struct LinkModel: Sendable, Hashable {
    /// Probability that a message is lost, independently of every other (ignored when
    /// `burst` is set).
    public var loss: Double
    /// Bursty loss: a Gilbert–Elliott chain stepped once per message on the link.
    public var burst: GilbertElliott?
    /// One-way propagation delay.
    public var latency: Duration
    /// Extra delay per message: drawn uniformly from `[0, jitter]`, or (``JitterShape/exponential``)
    /// exponentially with mean `jitter`, a long tail as on congested wireless links. Reorders
    /// messages sent closer together than the jitter.
    public var jitter: Duration
    public var jitterShape: JitterShape = .uniform
    /// Bytes per second of the link; a message waits for the ones before it and takes
    /// `wireSize / bandwidth` to leave. Nil: unlimited.
    public var bandwidth: Double?
    /// Probability that a delivered message is delivered a second time (independent delay).
    public var duplication: Double
    /// Probability that a message is held back an extra `reorderDelay`, overtaken by later ones.
    public var reorder: Double
    /// The hold-back of a reordered message.
    public var reorderDelay: Duration

    /// A link with the given properties; the defaults are a perfect 10 ms link.
    public init(
        loss: Double = 0, burst: GilbertElliott? = nil, latency: Duration = .milliseconds(10),
        jitter: Duration = .zero, bandwidth: Double? = nil, duplication: Double = 0,
        reorder: Double = 0, reorderDelay: Duration = .milliseconds(50)
    ) {
        self.loss = loss
        self.burst = burst
        self.latency = latency
        self.jitter = jitter
        self.bandwidth = bandwidth
        self.duplication = duplication
        self.reorder = reorder
        self.reorderDelay = reorderDelay
    }

    /// A 10 ms link that loses, duplicates and reorders nothing.
    public static let perfect = LinkModel()

    /// How the extra delay of a message is drawn.
    public enum JitterShape: String, Sendable, Hashable, CaseIterable {
        /// Uniform in `[0, jitter]`.
        case uniform
        /// Exponential with mean `jitter` (capped at 20 × jitter).
        case exponential
    }

    /// Whether the link keeps per-link state (burst chain or transmit queue).
    var isStateful: Bool { burst != nil || bandwidth != nil }
}

/// What one directed link does to the messages it carries: the one implementation of
/// ``LinkModel`` used by the simulator and by `netsim relay` (real traffic). Holds the link's
/// state (the burst chain, the transmit queue); draws from the caller's generator.
public struct LinkChannel: Sendable {
    public let model: LinkModel
    private var bad = false
    private var busyUntil: Int64 = 0

    public init(model: LinkModel) { self.model = model }

    /// When a message arrives: its delay (ns after sending), and a second delay when the
    /// link duplicates it.
    public struct Arrivals: Sendable {
        public var first: Int64
        public var duplicate: Int64?
    }

    /// What happens to a message of `size` bytes sent at `now` (ns): nil if it is lost.
    public mutating func transmit(size: Int, at now: Int64, rng: inout SplitMix64) -> Arrivals? {
        let lost: Bool
        if let ge = model.burst {
            bad = bad ? !Self.chance(ge.badToGood, &rng) : Self.chance(ge.goodToBad, &rng)
            lost = Self.chance(bad ? ge.lossInBad : ge.lossInGood, &rng)
        } else {
            lost = Self.chance(model.loss, &rng)
        }
        if lost { return nil }
        var departure = now
        if let bandwidth = model.bandwidth, bandwidth > 0 {
            let start = max(departure, busyUntil)
            departure = start + Int64((Double(size) / bandwidth * 1e9).rounded(.up))
            busyUntil = departure
        }
        var arrivals = Arrivals(first: departure - now + delay(&rng), duplicate: nil)
        if Self.chance(model.duplication, &rng) { arrivals.duplicate = departure - now + delay(&rng) }
        return arrivals
    }

    /// Propagation delay, jitter and (sometimes) reorder hold-back of one message.
    private func delay(_ rng: inout SplitMix64) -> Int64 {
        var d = model.latency.nanosecondsClamped
        let jitter = model.jitter.nanosecondsClamped
        if jitter > 0 {
            switch model.jitterShape {
            case .uniform:
                d += Int64(rng.next(upperBound: UInt64(jitter) + 1))
            case .exponential:
                let u = Double((rng.next() >> 11) + 1) * 0x1p-53
                d += Int64(min(-log(u), 20) * Double(jitter))
            }
        }
        if Self.chance(model.reorder, &rng) { d += model.reorderDelay.nanosecondsClamped }
        return d
    }

    /// True with probability `p`.
    static func chance(_ p: Double, _ rng: inout SplitMix64) -> Bool {
        guard p > 0 else { return false }
        return Double(rng.next() >> 11) * 0x1p-53 < p
    }
}

/// The Gilbert–Elliott two-state loss model: a good and a bad state, each with its own
/// loss probability, and per-message transition probabilities between them.
public struct GilbertElliott: Sendable, Hashable {
    /// Probability of moving from good to bad at a message.
    public var goodToBad: Double
    /// Probability of moving from bad to good at a message.
    public var badToGood: Double
    /// Loss probability in the good state.
    public var lossInGood: Double
    /// Loss probability in the bad state.
    public var lossInBad: Double

    public init(goodToBad: Double, badToGood: Double, lossInGood: Double = 0, lossInBad: Double = 1) {
        self.goodToBad = goodToBad
        self.badToGood = badToGood
        self.lossInGood = lossInGood
        self.lossInBad = lossInBad
    }

    /// Long-run share of messages that find the chain in the bad state.
    public var badFraction: Double {
        let total = goodToBad + badToGood
        return total > 0 ? goodToBad / total : 0
    }

    /// Long-run loss rate: `π_bad · lossInBad + π_good · lossInGood`.
    public var longRunLoss: Double {
        badFraction * lossInBad + (1 - badFraction) * lossInGood
    }

    /// Mean length of a bad burst, in messages.
    public var meanBurstLength: Double { badToGood > 0 ? 1 / badToGood : .infinity }
}

/// Which link model applies to a pair of nodes: an explicit pair override, else a
/// group-pair model (nodes belong to numbered groups, e.g. clusters), else the default.
public struct LinkPolicy: Sendable {
    public var defaultModel: LinkModel
    /// Group of each node (by index); nodes beyond the array are in group 0.
    public var groups: [Int]
    private var groupModels: [UInt64: LinkModel] = [:]
    private var pairModels: [UInt64: LinkModel] = [:]

    public init(default model: LinkModel = .perfect, groups: [Int] = []) {
        self.defaultModel = model
        self.groups = groups
    }

    /// Sets the model of links between (and within, if `a == b`) groups `a` and `b`, both ways.
    public mutating func setModel(_ model: LinkModel, betweenGroups a: Int, and b: Int) {
        groupModels[Self.key(a, b)] = model
        groupModels[Self.key(b, a)] = model
    }

    /// Sets the model of the directed link `from → to`.
    public mutating func setModel(_ model: LinkModel, from: Int, to: Int) {
        pairModels[Self.key(from, to)] = model
    }

    /// The model of the directed link `from → to`.
    public func model(from: Int, to: Int) -> LinkModel {
        if !pairModels.isEmpty, let m = pairModels[Self.key(from, to)] { return m }
        if !groupModels.isEmpty, let m = groupModels[Self.key(group(of: from), group(of: to))] { return m }
        return defaultModel
    }

    public func group(of node: Int) -> Int { node < groups.count ? groups[node] : 0 }

    static func key(_ a: Int, _ b: Int) -> UInt64 {
        UInt64(UInt32(truncatingIfNeeded: a)) << 32 | UInt64(UInt32(truncatingIfNeeded: b))
    }
}

/// Which pairs of nodes can exchange messages at all.
public struct Topology: Sendable {
    /// Sorted neighbours of each node; nil: every pair can talk.
    private var neighbours: [[Int32]]?

    /// Every node can reach every other.
    public static let complete = Topology(neighbours: nil)

    /// Only the listed pairs, in both directions.
    public static func undirected(_ pairs: [(Int, Int)]) -> Topology {
        let count = pairs.reduce(0) { max($0, $1.0 + 1, $1.1 + 1) }
        var lists = [[Int32]](repeating: [], count: count)
        for (a, b) in pairs {
            lists[a].append(Int32(b))
            lists[b].append(Int32(a))
        }
        return Topology(neighbours: lists.map { Array(Set($0)).sorted() })
    }

    /// Only the pairs `(i, j)` with `j` in `adjacency[i]` (and their reverse).
    public static func adjacency(_ adjacency: [[Int]]) -> Topology {
        undirected(adjacency.enumerated().flatMap { i, list in list.map { (i, $0) } })
    }

    public func allows(from: Int, to: Int) -> Bool {
        guard let neighbours else { return true }
        guard from < neighbours.count else { return false }
        let list = neighbours[from]
        let target = Int32(truncatingIfNeeded: to)
        var low = 0
        var high = list.count
        while low < high {
            let mid = (low + high) / 2
            if list[mid] < target { low = mid + 1 } else { high = mid }
        }
        return low < list.count && list[low] == target
    }
}

/// Why the simulator dropped a message.
public enum DropReason: Int, Sendable, CaseIterable, CustomStringConvertible {
    /// Random loss (i.i.d. or Gilbert–Elliott).
    case loss
    /// The topology has no link between the two nodes.
    case noLink
    /// An active partition separates them.
    case partition
    /// The destination is crashed, left or not yet joined.
    case nodeDown
    /// No node has the destination endpoint.
    case unknownDestination
    /// Wire mode only: encoding failed or the receiver refused the bytes.
    case rejected
    /// A session message reached a node other than the peer it was sent to (the handshake
    /// would fail): the address now belongs to another peer.
    case wrongPeer

    public var description: String {
        switch self {
        case .loss: return "loss"
        case .noLink: return "no-link"
        case .partition: return "partition"
        case .nodeDown: return "node-down"
        case .unknownDestination: return "unknown-destination"
        case .rejected: return "rejected"
        case .wrongPeer: return "wrong-peer"
        }
    }
}

/// Message and byte counts of a run.
public struct NetworkCounters: Sendable, Equatable {
    public var sent = 0
    public var bytesSent = 0
    public var delivered = 0
    public var bytesDelivered = 0
    public var duplicated = 0
    public var timersFired = 0
    /// Drops by reason, indexed by `DropReason.rawValue`.
    public var drops = [Int](repeating: 0, count: DropReason.allCases.count)

    public func dropped(_ reason: DropReason) -> Int { drops[reason.rawValue] }
    public var totalDropped: Int { drops.reduce(0, +) }
}
