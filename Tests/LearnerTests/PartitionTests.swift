import Testing
@testable import Learner

struct PartitionTests {
    /// 10 classes × 500 samples, interleaved.
    static let labels: [Int32] = (0..<5000).map { Int32($0 % 10) }

    static func assertEverySampleOnce(_ p: Partition) {
        let all = p.indices.flatMap { $0 }
        #expect(all.count == labels.count)
        #expect(Set(all).count == labels.count)
    }

    /// Mean over peers of the largest class share.
    static func meanDominantShare(_ p: Partition) -> Double {
        let shares = p.histograms.compactMap { h -> Double? in
            let total = h.reduce(0, +)
            return total > 0 ? Double(h.max() ?? 0) / Double(total) : nil
        }
        return shares.reduce(0, +) / Double(shares.count)
    }

    @Test func dirichlet_smallAlphaSkewed_largeAlphaNearUniform() throws {
        let skewed = try Partition(labels: Self.labels, classCount: 10, peers: 20, scheme: .dirichlet(alpha: 0.1), seed: 1)
        let even = try Partition(labels: Self.labels, classCount: 10, peers: 20, scheme: .dirichlet(alpha: 1000), seed: 1)
        Self.assertEverySampleOnce(skewed)
        Self.assertEverySampleOnce(even)
        #expect(Self.meanDominantShare(skewed) > 0.5)
        #expect(Self.meanDominantShare(even) < 0.2)
        for h in even.histograms { #expect(h.allSatisfy { $0 > 0 }) }
    }

    @Test func iid_equalSharesOfEveryClass() throws {
        let p = try Partition(labels: Self.labels, classCount: 10, peers: 7, scheme: .iid, seed: 2)
        Self.assertEverySampleOnce(p)
        #expect(p.indices.map(\.count).max()! - p.indices.map(\.count).min()! <= 1)
    }

    @Test func shards_kClassesPerPeerAtMost() throws {
        let p = try Partition(labels: Self.labels, classCount: 10, peers: 10, scheme: .shards(perPeer: 2), seed: 3)
        Self.assertEverySampleOnce(p)
        for h in p.histograms { #expect(h.filter { $0 > 0 }.count <= 2) }
    }

    @Test func powerLaw_sizesSkewedAndNonEmpty() throws {
        let p = try Partition(labels: Self.labels, classCount: 10, peers: 10, scheme: .powerLaw(exponent: 1.5), seed: 4)
        Self.assertEverySampleOnce(p)
        let sizes = p.indices.map(\.count)
        #expect(sizes.min()! >= 1)
        #expect(sizes.max()! > 5 * sizes.min()!)
    }

    /// Pareto sizes with shape 1.2 over 24 peers: a heavy tail (the largest peer holds several
    /// times the median), IID labels, every peer non-empty.
    @Test func pareto_sizesHeavyTailedAndNonEmpty() throws {
        let p = try Partition(labels: Self.labels, classCount: 10, peers: 24, scheme: .pareto(alpha: 1.2), seed: 6)
        Self.assertEverySampleOnce(p)
        let sizes = p.indices.map(\.count).sorted()
        #expect(sizes[0] >= 1)
        #expect(sizes[23] > 3 * sizes[12], "sizes \(sizes)")
        #expect(try PartitionScheme(parsing: "pareto:1.2") == .pareto(alpha: 1.2))
    }

    @Test(arguments: ["iid", "dirichlet:0.5", "shards:2", "powerlaw:1", "pareto:1.5"])
    func partition_sameSeed_sameAssignment(spec: String) throws {
        let scheme = try PartitionScheme(parsing: spec)
        let a = try Partition(labels: Self.labels, classCount: 10, peers: 8, scheme: scheme, seed: 5)
        let b = try Partition(labels: Self.labels, classCount: 10, peers: 8, scheme: scheme, seed: 5)
        let c = try Partition(labels: Self.labels, classCount: 10, peers: 8, scheme: scheme, seed: 6)
        #expect(a == b)
        #expect(a.indices != c.indices)
        #expect(a.summary().contains("8 peers"))
    }

    @Test func parse_badSchemes_areRefused() {
        for spec in ["dirichlet:0", "dirichlet", "shards:1.5", "powerlaw:-1", "pareto:0", "random"] {
            #expect(throws: LearnerError.self) { try PartitionScheme(parsing: spec) }
        }
    }
}
