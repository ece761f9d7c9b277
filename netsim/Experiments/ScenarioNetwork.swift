import DeterministicRandom
import Foundation
import Gossip
import Simulation

/// A scenario's network made concrete: the graph (none for the protocol's own peer
/// sampling), each node's region, the link policy and the fault schedule.
struct ScenarioNetwork {
    let graph: Graph?
    /// Region of each node (all 0 outside `regions` topologies).
    let regions: [Int]
    let links: LinkPolicy
    /// The churn trace's `(node, offline_s, online_s)` rows (empty without a trace).
    let churnTrace: [(Int, Double, Double)]

    init(_ scenario: Scenario, baseDirectory: URL) throws(ScenarioError) {
        let t = scenario.topology
        let n = scenario.nodes.count
        var rng = SplitMix64(seed: t.seed)
        var regions = [Int](repeating: 0, count: n)
        var policy = LinkPolicy(default: Self.model(scenario.links))
        do {
            switch t.kind {
            case "sampling":
                graph = nil
            case "complete":
                var g = Graph(nodeCount: n)
                for i in 0..<n { for j in (i + 1)..<n { g.connect(i, j) } }
                graph = g
            case "random-links":
                var g = Graph(nodeCount: n)
                g.addCluster(0..<n, extraLinksPerNode: min(t.extraLinks, n - 1), rng: &rng)
                graph = g
            case "ring":
                graph = Graph.ring(n)
            case "torus":
                let rows = t.rows > 0 ? t.rows : Self.squareRows(n)
                guard n % rows == 0, rows >= 3, n / rows >= 3 else {
                    throw ScenarioError("topology.rows = \(rows) does not divide nodes.count = \(n) into a torus of at least 3 × 3; choose rows that divide the count")
                }
                graph = Graph.torus(rows: rows, columns: n / rows)
            case "random-regular":
                graph = try Graph.randomRegular(n, degree: t.degree, rng: &rng)
            case "erdos-renyi":
                graph = Graph.erdosRenyi(n, probability: t.probability, rng: &rng)
            case "watts-strogatz":
                graph = try Graph.wattsStrogatz(n, neighbours: t.degree, rewiring: t.probability, rng: &rng)
            case "edges":
                let url = URL(fileURLWithPath: t.file, relativeTo: baseDirectory)
                let text: String
                do { text = try String(contentsOf: url, encoding: .utf8) } catch {
                    throw ScenarioError("topology.file \(url.path): cannot read it (\(error.localizedDescription))")
                }
                let g = try Graph.edgeList(text, nodeCount: n)
                // A node the list never names would sit alone for the whole run, sending nothing.
                let isolated = g.adjacency.indices.filter { g.adjacency[$0].isEmpty }
                if let first = isolated.first {
                    let more = isolated.count > 1 ? " and \(isolated.count - 1) more" : ""
                    throw ScenarioError("topology.file \(url.path): node \(first)\(more) of nodes.count = \(n) has no link; every node needs one (does nodes.count match the list?)")
                }
                graph = g
            case "regions":
                var g = Graph(nodeCount: n)
                var start = 0
                var ranges: [Range<Int>] = []
                for (r, region) in t.regions.enumerated() {
                    let range = start..<(start + region.count)
                    g.addCluster(range, extraLinksPerNode: min(region.extraLinks, max(0, region.count - 1)), rng: &rng)
                    for i in range { regions[i] = r }
                    if let links = region.links { policy.setModel(Self.model(links), betweenGroups: r, and: r) }
                    ranges.append(range)
                    start = range.upperBound
                }
                // A chain of regions, each joined to the next by a few links between random members.
                let bridge = t.bridgeLinks.map(Self.model) ?? policy.defaultModel
                for (a, b) in zip(ranges, ranges.dropFirst()) {
                    for _ in 0..<t.bridges {
                        g.connect(a.lowerBound + Int(rng.next(upperBound: UInt64(a.count))), b.lowerBound + Int(rng.next(upperBound: UInt64(b.count))))
                    }
                }
                for a in 0..<t.regions.count { for b in 0..<t.regions.count where a != b { policy.setModel(bridge, betweenGroups: a, and: b) } }
                policy.groups = regions
                graph = g
            default:
                throw ScenarioError("topology.kind '\(t.kind)' is not one of \(Scenario.topologies.joined(separator: ", "))")
            }
        } catch let error as ScenarioError {
            throw error
        } catch {
            throw ScenarioError("topology (\(t.kind)): \(error)")
        }
        if let graph, graph.nodeCount != n {
            throw ScenarioError("topology.file: the edge list has \(graph.nodeCount) nodes but nodes.count is \(n)")
        }
        self.regions = regions
        self.links = policy
        churnTrace = scenario.churn.trace.isEmpty ? [] : try Self.churnTrace(scenario.churn.trace, nodes: n, baseDirectory: baseDirectory)
    }

    /// The most square torus: the largest divisor of `n` not above its square root.
    static func squareRows(_ n: Int) -> Int {
        var rows = Int(Double(n).squareRoot())
        while rows > 1, n % rows != 0 { rows -= 1 }
        return rows
    }

    static func model(_ l: Scenario.LinkSpec) -> LinkModel {
        let burst = l.burstEnter > 0 ? GilbertElliott(goodToBad: l.burstEnter, badToGood: l.burstExit, lossInGood: l.loss, lossInBad: 1) : nil
        var model = LinkModel(loss: l.loss, burst: burst, latency: .nanoseconds(Int64(l.latencyMilliseconds * 1e6)),
                              jitter: .nanoseconds(Int64(l.jitterMilliseconds * 1e6)), bandwidth: l.bandwidth > 0 ? l.bandwidth : nil,
                              duplication: l.duplication, reorder: l.reorder)
        model.jitterShape = LinkModel.JitterShape(rawValue: l.jitterDistribution) ?? .uniform
        return model
    }

    /// Nodes chosen by `fraction` (drawn from `rng`) or, when `region` is named, that region's.
    func members(fraction: Double, region names: [String], of scenario: Scenario, rng: inout SplitMix64) -> [Int] {
        let n = regions.count
        if !names.isEmpty {
            let wanted = scenario.topology.regions.enumerated().filter { names.contains($0.element.name) }.map(\.offset)
            return (0..<n).filter { wanted.contains(regions[$0]) }
        }
        var order = Array(0..<n)
        for i in stride(from: n - 1, to: 0, by: -1) { order.swapAt(i, Int(rng.next(upperBound: UInt64(i + 1)))) }
        return Array(order.prefix(Int((fraction * Double(n)).rounded()))).sorted()
    }

    /// Schedules the scenario's churn, trace, partitions and flapping links on `sim`, and starts
    /// the nodes (one after another, `spacing` apart).
    func schedule<Node: ProtocolNode>(_ scenario: Scenario, on sim: Simulator<Node>, spacing: Duration) {
        let n = scenario.nodes.count
        let end = Double(scenario.rounds * scenario.roundMilliseconds) / 1000
        var rng = SplitMix64(seed: scenario.seed ^ 0xFA17_5EED)
        for i in 0..<n { sim.start(i, at: .zero + spacing * i) }
        let instant = { (seconds: Double) in Instant(nanoseconds: Int64((seconds * 1e9).rounded())) }

        let c = scenario.churn
        if c.rate > 0 {
            let round = Double(scenario.roundMilliseconds) / 1000
            for i in 0..<n {
                var t = c.startSeconds
                while true {
                    // Rounds until this node next goes offline: geometric with chance `rate`.
                    let u = Double((rng.next() >> 11) + 1) * 0x1p-53
                    let skipped = c.rate >= 1 ? 0 : (log(u) / log(1 - c.rate)).rounded(.down)
                    t += (skipped + 1) * round
                    guard t < end else { break }
                    let v = Double((rng.next() >> 11) + 1) * 0x1p-53
                    let back = t + -log(v) * c.meanOfflineSeconds
                    sim.crash(i, at: instant(t), keepState: c.keepState)
                    sim.start(i, at: instant(back))
                    t = back
                }
            }
        }
        for (i, offline, online) in churnTrace {
            sim.crash(i, at: instant(offline), keepState: c.keepState)
            if online.isFinite { sim.start(i, at: instant(online)) }
        }
        for p in scenario.partitions {
            let cut = members(fraction: p.fraction, region: p.regions, of: scenario, rng: &rng)
            var sides = [Int](repeating: 0, count: n)
            for i in cut { sides[i] = 1 }
            sim.partition(sides: sides, from: instant(p.startSeconds), until: instant(p.healSeconds))
        }
        for f in scenario.links.flaps {
            // Each flapping node is cut off alone: its own side, away from every other node.
            let flapping = members(fraction: f.fraction, region: f.region.isEmpty ? [] : [f.region], of: scenario, rng: &rng)
            guard !flapping.isEmpty else { continue }
            var sides = [Int](repeating: 0, count: n)
            for (k, i) in flapping.enumerated() { sides[i] = k + 1 }
            var t = f.startSeconds
            while t < end {
                sim.partition(sides: sides, from: instant(t + f.periodSeconds - f.downSeconds), until: instant(t + f.periodSeconds))
                t += f.periodSeconds
            }
        }
    }

    /// `node,offline_s,online_s` rows (`online_s` empty: never back); `#` comments, a header.
    static func churnTrace(_ path: String, nodes: Int, baseDirectory: URL) throws(ScenarioError) -> [(Int, Double, Double)] {
        let url = URL(fileURLWithPath: path, relativeTo: baseDirectory)
        let text: String
        do { text = try String(contentsOf: url, encoding: .utf8) } catch {
            throw ScenarioError("churn.trace \(url.path): cannot read it (\(error.localizedDescription))")
        }
        var rows: [(Int, Double, Double)] = []
        for (number, line) in text.split(separator: "\n", omittingEmptySubsequences: false).enumerated() {
            let trimmed = line.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty || trimmed.hasPrefix("#") || trimmed.hasPrefix("node") { continue }
            let fields = trimmed.split(separator: ",", omittingEmptySubsequences: false).map { $0.trimmingCharacters(in: .whitespaces) }
            guard fields.count == 3 || fields.count == 2, let node = Int(fields[0]), (0..<nodes).contains(node),
                  let offline = Double(fields[1]), offline >= 0 else {
                throw ScenarioError("churn.trace \(url.path), line \(number + 1): expected node,offline_s,online_s with node 0 to \(nodes - 1), got '\(trimmed)'")
            }
            let online = fields.count == 3 && !fields[2].isEmpty ? Double(fields[2]) : .infinity
            guard let online, online > offline else {
                throw ScenarioError("churn.trace \(url.path), line \(number + 1): online_s must be a time after offline_s, got '\(trimmed)'")
            }
            rows.append((node, offline, online))
        }
        return rows
    }
}
