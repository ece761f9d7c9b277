import Foundation
import Gossip

/// Why a graph could not be built.
public enum TopologyError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A graph needs a node count of zero or more.
    case negativeNodeCount(Int)
    /// Each node's degree must be in `0..<nodeCount`.
    case degreeOutOfRange(degree: Int, nodeCount: Int)
    /// A `degree`-regular graph on `nodeCount` nodes has `nodeCount · degree / 2` edges.
    case oddDegreeSum(nodeCount: Int, degree: Int)
    /// A ring lattice links each node to as many neighbours on either side.
    case oddNeighbourCount(Int)
    /// A probability must be in `[0, 1]`.
    case probabilityOutOfRange(Double)
    /// Line `line` (from 1) of an edge list is not an edge of the graph.
    case invalidEdge(line: Int, problem: String)
    /// No graph was found within this many attempts (each one fails only by bad luck).
    case gaveUp(attempts: Int)

    public var description: String {
        switch self {
        case .negativeNodeCount(let n):
            return "a graph needs at least 0 nodes, not \(n)"
        case .degreeOutOfRange(let degree, let n):
            return "degree \(degree) is impossible on \(n) nodes: it must be in 0..<\(n)"
        case .oddDegreeSum(let n, let degree):
            return "no \(degree)-regular graph on \(n) nodes exists: nodes × degree must be even"
        case .oddNeighbourCount(let k):
            return "a ring lattice needs an even number of neighbours per node, not \(k)"
        case .probabilityOutOfRange(let p):
            return "probability \(p) is outside [0, 1]"
        case .invalidEdge(let line, let problem):
            return "edge list line \(line): \(problem)"
        case .gaveUp(let attempts):
            return "no graph found in \(attempts) attempts"
        }
    }
}

/// Standard topologies for studying how the shape of a network sets the speed of averaging.
/// Every random builder draws from the generator it is given only, so a seed gives one graph.
extension Graph {
    /// Restarts a random builder may make before it reports ``TopologyError/gaveUp(attempts:)``.
    public static let maxAttempts = 10_000
    /// The most nodes an edge list may name when no node count is given, so a stray large
    /// index cannot make the parser allocate without bound.
    public static let edgeListNodeLimit = 1 << 24

    /// A cycle: node `i` is linked to `i − 1` and `i + 1` (mod `n`). `n` ≥ 0; two nodes share
    /// one link, and a single node has none.
    public static func ring(_ n: Int) -> Graph {
        var graph = Graph(nodeCount: n)
        for i in 0..<n { graph.connect(i, (i + 1) % n) }
        return graph
    }

    /// A `rows × columns` grid wrapped around in both directions: node `r · columns + c` is
    /// linked to its four neighbours `(r ± 1, c)` and `(r, c ± 1)` (mod the sides). With a side
    /// shorter than 3 the wrapped neighbours coincide, and a node has fewer than four.
    public static func torus(rows: Int, columns: Int) -> Graph {
        var graph = Graph(nodeCount: rows * columns)
        for r in 0..<rows {
            for c in 0..<columns {
                let node = r * columns + c
                graph.connect(node, r * columns + (c + 1) % columns)
                graph.connect(node, ((r + 1) % rows) * columns + c)
            }
        }
        return graph
    }

    /// A uniformly random simple `degree`-regular graph on `n` nodes.
    ///
    /// Above degree `(n − 1) / 2` the graph is the complement of a random
    /// `(n − 1 − degree)`-regular one (complementing is a bijection, so uniformity carries
    /// over). Up to degree 4 it is the pairing model (Bollobás): match `n · degree` points at
    /// random and restart on a loop or a double link, which yields every simple graph with the
    /// same probability and succeeds about once in `e^((d² − 1) / 4)` ≤ 43 tries. Above that,
    /// where restarts grow too many, it pairs points as Steger and Wormald (1999) do, only ever
    /// accepting pairs that keep the graph simple: asymptotically uniform, fast for any degree.
    public static func randomRegular(_ n: Int, degree: Int, rng: inout SplitMix64) throws(TopologyError) -> Graph {
        guard n >= 0 else { throw .negativeNodeCount(n) }
        guard degree >= 0, degree < max(n, 1) else { throw .degreeOutOfRange(degree: degree, nodeCount: n) }
        guard (n * degree).isMultiple(of: 2) else { throw .oddDegreeSum(nodeCount: n, degree: degree) }
        let complementDegree = n - 1 - degree
        if n > 0, complementDegree < degree {
            return try randomRegular(n, degree: complementDegree, rng: &rng).complement
        }
        for _ in 0..<maxAttempts {
            let graph = degree <= 4
                ? pairingModel(n, degree: degree, rng: &rng)
                : stegerWormald(n, degree: degree, rng: &rng)
            if let graph { return graph }
        }
        throw .gaveUp(attempts: maxAttempts)
    }

    /// One try of the pairing model: nil if the matching made a loop or a double link.
    private static func pairingModel(_ n: Int, degree: Int, rng: inout SplitMix64) -> Graph? {
        var points = (0..<n).flatMap { Array(repeating: $0, count: degree) }
        shuffle(&points, rng: &rng)
        var graph = Graph(nodeCount: n)
        for pair in stride(from: 0, to: points.count, by: 2) {
            let (a, b) = (points[pair], points[pair + 1])
            guard a != b, !graph.adjacency[a].contains(b) else { return nil }
            graph.connect(a, b)
        }
        return graph
    }

    /// One try of Steger and Wormald's pairing: shuffle the unmatched points, link every
    /// consecutive pair that keeps the graph simple, and repeat with the rest; nil once no
    /// allowed pair is left among them.
    private static func stegerWormald(_ n: Int, degree: Int, rng: inout SplitMix64) -> Graph? {
        var points = (0..<n).flatMap { Array(repeating: $0, count: degree) }
        var graph = Graph(nodeCount: n)
        while !points.isEmpty {
            shuffle(&points, rng: &rng)
            var unmatched: [Int] = []
            for pair in stride(from: 0, to: points.count, by: 2) {
                let (a, b) = (points[pair], points[pair + 1])
                if a != b, !graph.adjacency[a].contains(b) {
                    graph.connect(a, b)
                } else {
                    unmatched += [a, b]
                }
            }
            if unmatched.count == points.count, !graph.allowsLink(among: unmatched) { return nil }
            points = unmatched
        }
        return graph
    }

    /// Whether two distinct nodes of `nodes` are not linked yet.
    private func allowsLink(among nodes: [Int]) -> Bool {
        let distinct = Array(Set(nodes)).sorted()
        for (position, a) in distinct.enumerated() {
            for b in distinct[(position + 1)...] where !adjacency[a].contains(b) { return true }
        }
        return false
    }

    /// The graph linking exactly the pairs this one does not.
    private var complement: Graph {
        var lists = [[Int]](repeating: [], count: nodeCount)
        var linked = [Bool](repeating: false, count: nodeCount)
        for a in 0..<nodeCount {
            for b in adjacency[a] { linked[b] = true }
            for b in (a + 1)..<nodeCount where !linked[b] {
                lists[a].append(b)
                lists[b].append(a)
            }
            for b in adjacency[a] { linked[b] = false }
        }
        var graph = Graph(nodeCount: nodeCount)
        graph.adjacency = lists
        return graph
    }

    /// The Erdős–Rényi graph G(n, p): each of the `n(n − 1)/2` pairs linked independently with
    /// probability `p` (at most 0 gives no links, at least 1 every link).
    ///
    /// Batagelj and Brandes' (2005) geometric skipping jumps from one link to the next over a
    /// geometrically distributed number of pairs, so the cost is O(n + links), not O(n²).
    public static func erdosRenyi(_ n: Int, probability p: Double, rng: inout SplitMix64) -> Graph {
        var graph = Graph(nodeCount: n)
        guard p > 0 else { return graph }
        // Each pair (v, w), w < v, is reached once, so links are appended without a search.
        var lists = [[Int]](repeating: [], count: n)
        func link(_ v: Int, _ w: Int) {
            lists[v].append(w)
            lists[w].append(v)
        }
        if p >= 1 {
            for v in 0..<n { for w in 0..<v { link(v, w) } }
        } else {
            let logMiss = log1p(-p)
            let pairs = Double(n) * Double(n)
            var v = 1
            var w = -1
            while v < n {
                let skip = (log(unitIntervalAboveZero(&rng)) / logMiss).rounded(.down)
                guard skip < pairs else { break }
                w += 1 + Int(skip)
                while w >= v, v < n {
                    w -= v
                    v += 1
                }
                if v < n { link(v, w) }
            }
        }
        graph.adjacency = lists
        return graph
    }

    /// The Watts–Strogatz (1998) small world: a ring lattice linking each node to its `k`
    /// nearest nodes (`k / 2` on either side), then each lattice link `(i, i + j)` in turn (by
    /// `j`, then `i`) replaced with probability `beta` by a link from `i` to a node drawn
    /// uniformly among those that are neither `i` nor linked to it (kept when there is none).
    /// The link count stays `n · k / 2`.
    public static func wattsStrogatz(
        _ n: Int, neighbours k: Int, rewiring beta: Double, rng: inout SplitMix64
    ) throws(TopologyError) -> Graph {
        guard n >= 0 else { throw .negativeNodeCount(n) }
        guard k >= 0, k < max(n, 1) else { throw .degreeOutOfRange(degree: k, nodeCount: n) }
        guard k.isMultiple(of: 2) else { throw .oddNeighbourCount(k) }
        guard (0...1).contains(beta) else { throw .probabilityOutOfRange(beta) }
        var lists = [[Int]](repeating: [], count: n)
        let offsets = stride(from: 1, through: k / 2, by: 1)
        for offset in offsets {
            for i in 0..<n {
                let j = (i + offset) % n
                lists[i].append(j)
                lists[j].append(i)
            }
        }
        for offset in offsets {
            for i in 0..<n {
                let j = (i + offset) % n
                guard unitInterval(&rng) < beta, lists[i].count < n - 1 else { continue }
                var target = Int(rng.next(upperBound: UInt64(n)))
                while target == i || lists[i].contains(target) { target = Int(rng.next(upperBound: UInt64(n))) }
                lists[i].removeAll { $0 == j }
                lists[j].removeAll { $0 == i }
                lists[i].append(target)
                lists[target].append(i)
            }
        }
        var graph = Graph(nodeCount: n)
        graph.adjacency = lists
        return graph
    }

    /// A graph read from an edge list: one link per line, two 0-based node indices separated by
    /// white space or a comma (`3 7`, `3,7`); `#` starts a comment, and blank lines are skipped.
    /// Links given twice count once. The node count is `nodeCount` when given (an index at or
    /// beyond it is an error), else the largest index plus one (at most ``edgeListNodeLimit``).
    public static func edgeList(_ text: String, nodeCount: Int?) throws(TopologyError) -> Graph {
        if let nodeCount, nodeCount < 0 { throw .negativeNodeCount(nodeCount) }
        let limit = nodeCount ?? edgeListNodeLimit
        var links: [(Int, Int)] = []
        for (offset, rawLine) in text.split(omittingEmptySubsequences: false, whereSeparator: \.isNewline).enumerated() {
            let line = offset + 1
            let content = rawLine.prefix { $0 != "#" }
            let fields = content.split { $0 == "," || $0.isWhitespace }
            if fields.isEmpty { continue }
            guard fields.count == 2 else {
                throw .invalidEdge(line: line, problem: "expected two node indices, found \(fields.count) fields")
            }
            var ends: [Int] = []
            for field in fields {
                guard let index = Int(field), index >= 0 else {
                    throw .invalidEdge(line: line, problem: "'\(field)' is not a node index (a whole number from 0)")
                }
                guard index < limit else {
                    throw .invalidEdge(line: line, problem: nodeCount == nil
                        ? "node \(index) is beyond the limit of \(limit) nodes"
                        : "node \(index) is beyond the node count \(limit)")
                }
                ends.append(index)
            }
            guard ends[0] != ends[1] else { throw .invalidEdge(line: line, problem: "node \(ends[0]) is linked to itself") }
            links.append((ends[0], ends[1]))
        }
        var graph = Graph(nodeCount: nodeCount ?? links.reduce(0) { max($0, $1.0 + 1, $1.1 + 1) })
        for (a, b) in links { graph.connect(a, b) }
        return graph
    }

    /// Whether every node can reach every other (true for zero or one node).
    public var isConnected: Bool {
        guard nodeCount > 1 else { return true }
        var reached = [Bool](repeating: false, count: nodeCount)
        reached[0] = true
        var frontier = [0]
        var reachedCount = 1
        while let node = frontier.popLast() {
            for next in adjacency[node] where !reached[next] {
                reached[next] = true
                reachedCount += 1
                frontier.append(next)
            }
        }
        return reachedCount == nodeCount
    }

    /// The number of links.
    public var edgeCount: Int { adjacency.reduce(0) { $0 + $1.count } / 2 }
}

/// A uniform double in [0, 1) from the top 53 bits.
private func unitInterval(_ rng: inout SplitMix64) -> Double { Double(rng.next() >> 11) * 0x1p-53 }

/// A uniform double in (0, 1], whose logarithm is finite.
private func unitIntervalAboveZero(_ rng: inout SplitMix64) -> Double { Double((rng.next() >> 11) + 1) * 0x1p-53 }

/// Fisher–Yates, written out so a graph does not depend on the standard library's shuffle.
private func shuffle(_ items: inout [Int], rng: inout SplitMix64) {
    guard items.count > 1 else { return }
    for i in stride(from: items.count - 1, to: 0, by: -1) {
        items.swapAt(i, Int(rng.next(upperBound: UInt64(i + 1))))
    }
}
