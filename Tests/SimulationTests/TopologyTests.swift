import Testing
import Gossip
@testable import Simulation

/// Whether `graph` is undirected and simple: every link listed at both ends, once, never to itself.
private func isSimple(_ graph: Graph) -> Bool {
    for (node, neighbours) in graph.adjacency.enumerated() {
        guard Set(neighbours).count == neighbours.count, !neighbours.contains(node) else { return false }
        for other in neighbours where !graph.adjacency[other].contains(node) { return false }
    }
    return true
}

private func degrees(_ graph: Graph) -> Set<Int> { Set(graph.adjacency.map(\.count)) }

@Test func ringLinksEachNodeToItsTwoNeighbours() {
    let ring = Graph.ring(10)
    #expect(degrees(ring) == [2])
    #expect(ring.edgeCount == 10)
    #expect(Set(ring.adjacency[0]) == [1, 9])
    #expect(ring.isConnected)
    #expect(isSimple(ring))
    #expect(Graph.ring(2).edgeCount == 1)
    #expect(Graph.ring(1).edgeCount == 0)
}

@Test func torusGivesFourNeighboursWrappingAround() {
    let torus = Graph.torus(rows: 4, columns: 5)
    #expect(torus.nodeCount == 20)
    #expect(degrees(torus) == [4])
    #expect(torus.edgeCount == 40)
    // Node (1, 0) = 5: up (0, 0), down (2, 0), left wraps to (1, 4), right (1, 1).
    #expect(Set(torus.adjacency[5]) == [0, 10, 9, 6])
    #expect(torus.isConnected)
    #expect(isSimple(torus))
}

@Test func randomRegularGraphsHaveTheDegreeAtEveryNode() throws {
    // Degree 4 by the pairing model, 7 by Steger–Wormald, 9 of 11 as the complement of a 2-regular graph.
    for (n, degree) in [(100, 4), (60, 7), (12, 9), (7, 0)] {
        var rng = SplitMix64(seed: 11)
        let graph = try Graph.randomRegular(n, degree: degree, rng: &rng)
        #expect(graph.nodeCount == n)
        #expect(degrees(graph) == [degree], "n \(n), degree \(degree)")
        #expect(graph.edgeCount == n * degree / 2)
        #expect(isSimple(graph))
    }
    var rng = SplitMix64(seed: 3)
    #expect(try Graph.randomRegular(200, degree: 3, rng: &rng).isConnected)
    #expect(try Graph.randomRegular(5, degree: 4, rng: &rng).edgeCount == 10)
}

@Test func randomRegularIsDeterministicForASeed() throws {
    var first = SplitMix64(seed: 42)
    var second = SplitMix64(seed: 42)
    var other = SplitMix64(seed: 43)
    let graph = try Graph.randomRegular(50, degree: 6, rng: &first)
    #expect(try Graph.randomRegular(50, degree: 6, rng: &second).adjacency == graph.adjacency)
    #expect(try Graph.randomRegular(50, degree: 6, rng: &other).adjacency != graph.adjacency)
}

/// Of the 70 labelled 2-regular graphs on 6 nodes, 10 are two triangles and 60 a hexagon: a
/// uniform draw gives two triangles 1/7 of the time (7,000 draws: 1,000, standard deviation 29).
@Test func randomRegularIsUniformOnSmallGraphs() throws {
    var rng = SplitMix64(seed: 5)
    var triangles = 0
    for _ in 0..<7000 {
        let graph = try Graph.randomRegular(6, degree: 2, rng: &rng)
        if !graph.isConnected { triangles += 1 }
    }
    #expect((880...1120).contains(triangles), "two triangles \(triangles) times in 7,000")
}

@Test func randomRegularRefusesImpossibleDegrees() {
    var rng = SplitMix64(seed: 1)
    #expect(throws: TopologyError.oddDegreeSum(nodeCount: 5, degree: 3)) { try Graph.randomRegular(5, degree: 3, rng: &rng) }
    #expect(throws: TopologyError.degreeOutOfRange(degree: 4, nodeCount: 4)) { try Graph.randomRegular(4, degree: 4, rng: &rng) }
    #expect(throws: TopologyError.degreeOutOfRange(degree: -1, nodeCount: 4)) { try Graph.randomRegular(4, degree: -1, rng: &rng) }
    #expect(throws: TopologyError.negativeNodeCount(-2)) { try Graph.randomRegular(-2, degree: 0, rng: &rng) }
    #expect(TopologyError.oddDegreeSum(nodeCount: 5, degree: 3).description.contains("must be even"))
}

@Test func erdosRenyiHasTheExpectedLinkCount() {
    var rng = SplitMix64(seed: 7)
    // p · n(n − 1)/2 = 9,995 links expected, standard deviation about 100.
    let graph = Graph.erdosRenyi(2000, probability: 0.005, rng: &rng)
    #expect((9500...10500).contains(graph.edgeCount), "\(graph.edgeCount) links")
    #expect(isSimple(graph))
    #expect(Graph.erdosRenyi(20, probability: 0, rng: &rng).edgeCount == 0)
    #expect(Graph.erdosRenyi(20, probability: 1, rng: &rng).edgeCount == 190)
    // Geometric skipping: 200,000 nodes cost their links (about 200,000), not 2·10¹⁰ pair draws.
    let large = Graph.erdosRenyi(200_000, probability: 1e-5, rng: &rng)
    #expect((195_000...205_000).contains(large.edgeCount), "\(large.edgeCount) links")
}

/// Every pair is linked with the same probability: each of the 45 pairs of 10 nodes, over 4,000
/// graphs at p = 0.3, is linked about 1,200 times (standard deviation 29).
@Test func erdosRenyiLinksEveryPairAlike() {
    var rng = SplitMix64(seed: 8)
    var counts = [[Int]](repeating: [Int](repeating: 0, count: 10), count: 10)
    for _ in 0..<4000 {
        let graph = Graph.erdosRenyi(10, probability: 0.3, rng: &rng)
        for (a, neighbours) in graph.adjacency.enumerated() { for b in neighbours { counts[a][b] += 1 } }
    }
    for a in 0..<10 {
        for b in 0..<10 where a != b { #expect((1080...1320).contains(counts[a][b]), "pair \(a)-\(b): \(counts[a][b])") }
    }
}

@Test func erdosRenyiIsDeterministicForASeed() {
    var first = SplitMix64(seed: 9)
    var second = SplitMix64(seed: 9)
    #expect(Graph.erdosRenyi(500, probability: 0.02, rng: &first).adjacency
        == Graph.erdosRenyi(500, probability: 0.02, rng: &second).adjacency)
}

@Test func wattsStrogatzRewiresKeepingTheLinkCount() throws {
    var rng = SplitMix64(seed: 4)
    let lattice = try Graph.wattsStrogatz(100, neighbours: 6, rewiring: 0, rng: &rng)
    #expect(degrees(lattice) == [6])
    #expect(Set(lattice.adjacency[0]) == [1, 2, 3, 97, 98, 99])
    let rewired = try Graph.wattsStrogatz(100, neighbours: 6, rewiring: 0.3, rng: &rng)
    #expect(rewired.edgeCount == 300)
    #expect(isSimple(rewired))
    let moved = (0..<100).reduce(0) { $0 + Set(rewired.adjacency[$1]).subtracting(lattice.adjacency[$1]).count } / 2
    // About 30 % of the 300 links leave the lattice (a few land back on it).
    #expect((60...120).contains(moved), "\(moved) links rewired")
    let random = try Graph.wattsStrogatz(100, neighbours: 6, rewiring: 1, rng: &rng)
    #expect(random.edgeCount == 300)
    #expect(isSimple(random))
    var again = SplitMix64(seed: 4)
    _ = try Graph.wattsStrogatz(100, neighbours: 6, rewiring: 0, rng: &again)
    #expect(try Graph.wattsStrogatz(100, neighbours: 6, rewiring: 0.3, rng: &again).adjacency == rewired.adjacency)
}

@Test func wattsStrogatzRefusesBadParameters() {
    var rng = SplitMix64(seed: 1)
    #expect(throws: TopologyError.oddNeighbourCount(3)) { try Graph.wattsStrogatz(10, neighbours: 3, rewiring: 0.1, rng: &rng) }
    #expect(throws: TopologyError.degreeOutOfRange(degree: 10, nodeCount: 10)) {
        try Graph.wattsStrogatz(10, neighbours: 10, rewiring: 0.1, rng: &rng)
    }
    #expect(throws: TopologyError.probabilityOutOfRange(1.5)) { try Graph.wattsStrogatz(10, neighbours: 2, rewiring: 1.5, rng: &rng) }
}

@Test func edgeListReadsLinksCommentsAndBlankLines() throws {
    let text = "# a triangle and a tail\n0 1\n1,2\r\n\n  2\t0  # closing the triangle\n3, 2\n1 0\n"
    let graph = try Graph.edgeList(text, nodeCount: nil)
    #expect(graph.nodeCount == 4)
    #expect(graph.edgeCount == 4)
    #expect(Set(graph.adjacency[2]) == [1, 0, 3])
    #expect(graph.isConnected)
    let padded = try Graph.edgeList(text, nodeCount: 6)
    #expect(padded.nodeCount == 6)
    #expect(!padded.isConnected)
    #expect(try Graph.edgeList("# nothing\n", nodeCount: nil).nodeCount == 0)
}

@Test func edgeListErrorsNameTheLineAndTheProblem() {
    let cases: [(String, Int?, Int, String)] = [
        ("0 1\n1 2 3\n", nil, 2, "two node indices"),
        ("0 1\n\n1 x\n", nil, 3, "'x' is not a node index"),
        ("0 -1\n", nil, 1, "'-1' is not a node index"),
        ("0 1\n4 2\n", 4, 2, "beyond the node count 4"),
        ("# loop\n3 3\n", nil, 2, "linked to itself"),
        ("0 99999999\n", nil, 1, "beyond the limit"),
    ]
    for (text, nodeCount, line, problem) in cases {
        do {
            _ = try Graph.edgeList(text, nodeCount: nodeCount)
            Issue.record("accepted \(text.debugDescription)")
        } catch {
            #expect(error.description.hasPrefix("edge list line \(line): "), "\(error)")
            #expect(error.description.contains(problem), "\(error)")
        }
    }
}

@Test func connectivityFindsASplitGraph() {
    var graph = Graph(nodeCount: 6)
    for (a, b) in [(0, 1), (1, 2), (3, 4), (4, 5)] { graph.connect(a, b) }
    #expect(!graph.isConnected)
    graph.connect(2, 3)
    #expect(graph.isConnected)
    #expect(Graph(nodeCount: 0).isConnected)
    #expect(Graph(nodeCount: 1).isConnected)
}
