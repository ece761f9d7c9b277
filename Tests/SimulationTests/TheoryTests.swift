import Crypto
import Foundation
import Testing
import Gossip
@testable import Simulation

// MARK: Randomized pairwise gossip against Boyd, Ghosh, Prabhakar and Shah (2006)

/// The eigenvalues of a symmetric `n × n` matrix (row-major), largest first, by cyclic
/// Jacobi rotations until the off-diagonal mass is negligible.
private func symmetricEigenvalues(_ matrix: [Double], size n: Int) -> [Double] {
    var a = matrix
    for _ in 0..<64 {
        var offDiagonal = 0.0
        var diagonal = 0.0
        for p in 0..<n {
            diagonal += a[p * n + p] * a[p * n + p]
            for q in (p + 1)..<max(p + 1, n) { offDiagonal += a[p * n + q] * a[p * n + q] }
        }
        if offDiagonal <= 1e-30 * diagonal { break }
        for p in 0..<n {
            for q in (p + 1)..<max(p + 1, n) where a[p * n + q] != 0 {
                // The rotation in the (p, q) plane that zeroes a[p][q] (Golub and Van Loan, 8.5).
                let theta = (a[q * n + q] - a[p * n + p]) / (2 * a[p * n + q])
                let t = (theta >= 0 ? 1.0 : -1.0) / (abs(theta) + (theta * theta + 1).squareRoot())
                let c = 1 / (t * t + 1).squareRoot()
                let s = t * c
                for k in 0..<n {
                    let (kp, kq) = (a[k * n + p], a[k * n + q])
                    a[k * n + p] = c * kp - s * kq
                    a[k * n + q] = s * kp + c * kq
                }
                for k in 0..<n {
                    let (pk, qk) = (a[p * n + k], a[q * n + k])
                    a[p * n + k] = c * pk - s * qk
                    a[q * n + k] = s * pk + c * qk
                }
            }
        }
    }
    return (0..<n).map { a[$0 * n + $0] }.sorted(by: >)
}

/// `E[W] = I − (1/2n) · Σᵢⱼ Pᵢⱼ (eᵢ − eⱼ)(eᵢ − eⱼ)ᵀ` of one wake-up of randomized pairwise
/// gossip: node `i` wakes with probability `1/n` and picks neighbour `j` with `Pᵢⱼ = 1/deg(i)`.
private func expectedExchangeMatrix(_ graph: Graph) -> [Double] {
    let n = graph.nodeCount
    var m = [Double](repeating: 0, count: n * n)
    for i in 0..<n { m[i * n + i] = 1 }
    for i in 0..<n {
        let w = 1 / (Double(graph.adjacency[i].count) * 2 * Double(n))
        for j in graph.adjacency[i] {
            m[i * n + i] -= w
            m[j * n + j] -= w
            m[i * n + j] += w
            m[j * n + i] += w
        }
    }
    return m
}

/// The least-squares slope of `ys` against their positions.
private func fittedSlope(_ ys: [Double]) -> Double {
    let meanX = Double(ys.count - 1) / 2
    let meanY = ys.reduce(0, +) / Double(ys.count)
    var covariance = 0.0
    var variance = 0.0
    for (x, y) in ys.enumerated() {
        covariance += (Double(x) - meanX) * (y - meanY)
        variance += (Double(x) - meanX) * (Double(x) - meanX)
    }
    return covariance / variance
}

/// Boyd et al.'s theory of randomized pairwise gossip checked on the simulator running
/// ``PairwiseAverager``: the per-round decay rate of the consensus error that λ₂, the
/// second-largest eigenvalue of `E[W]` (computed here by Jacobi rotations), predicts.
///
/// Links have no latency, so an exchange is atomic; every node wakes on a Poisson clock of
/// mean `tickInterval`, so one round (one `tickInterval`) holds `n` wake-ups on average and λ₂
/// predicts a per-round factor of `λ₂ⁿ` (the exact Poisson factor `e^(−n(1−λ₂))` differs from
/// it by at most 0.2 % here, 1.6 % on the complete graph). What is compared is the decay
/// exponent, `ln` of the per-round factor, fitted over rounds after a burn-in to `ln` of the
/// squared consensus error `Σᵢ (xᵢ − x̄)²` averaged over 12 seeds × 4 vector coordinates.
///
/// Which power of the error λ₂ⁿ describes depends on the spectrum, and the test says so per
/// graph. Since each `W` is a projection, `E‖e'‖² = ‖e‖² − eᵀ(I − E[W])e` for the current error
/// `e = x − x̄`: the squared error shrinks by at least λ₂ per wake-up (Boyd's bound), exactly λ₂
/// for an error along the slowest eigenvector. On the complete graph every direction orthogonal
/// to the consensus is such an eigenvector, so the squared error follows λ₂ⁿ per round itself.
/// On a ring, a torus or a random regular graph the error settles into the slowest eigenvectors
/// and follows the mean dynamics `E[x(t)] − x̄ = E[W]ᵗ (x(0) − x̄)`: its norm shrinks by λ₂ per
/// wake-up, its square by λ₂², twice the bound's exponent (each exchange also leaves an
/// unevenness around the pair it equalised, and removing that costs about as much again). That
/// is Boyd et al.'s lower bound on the averaging time, `½ log ε⁻¹ / log λ₂⁻¹`. So the test
/// compares the error norm's exponent there, the squared error's on the complete graph; the
/// squared error's against `n · ln λ₂` on the other three is off by a factor of 2.0 ± 0.1.
struct PairwiseGossipTheoryTests {
    /// A graph, how long its slowest modes take to dominate, and which error λ₂ⁿ describes.
    enum Case: String, CaseIterable, Sendable {
        case ring32, torus8x8, randomRegular100, complete32

        func graph() throws -> Graph {
            switch self {
            case .ring32: return .ring(32)
            case .torus8x8: return .torus(rows: 8, columns: 8)
            case .randomRegular100:
                var rng = SplitMix64(seed: 2024)
                return try .randomRegular(100, degree: 4, rng: &rng)
            case .complete32:
                var rng = SplitMix64(seed: 1)
                return .erdosRenyi(32, probability: 1, rng: &rng)
            }
        }

        /// Rounds before the fit: by then the next-slowest modes have decayed (the ring's is
        /// four times faster than its slowest, so 100 rounds leave e⁻¹¹ of its energy; the
        /// torus's twice, so 20 rounds leave e⁻⁶; the complete graph has a single rate).
        var burnIn: Int {
            switch self {
            case .ring32: return 100
            case .torus8x8, .randomRegular100: return 20
            case .complete32: return 0
            }
        }

        /// The last round of the fit.
        var rounds: Int {
            switch self {
            case .ring32: return 300
            case .torus8x8, .randomRegular100: return 70
            case .complete32: return 10
            }
        }

        /// The squared error's exponent per round in units of `n · ln λ₂`: 2 where the error
        /// lives in the slowest eigenvectors (so its norm decays by λ₂ⁿ), 1 where every
        /// direction is one (so its square does).
        var squaredErrorExponentInUnitsOfLambda2: Double { self == .complete32 ? 1 : 2 }

        var comparedQuantity: String { self == .complete32 ? "squared error" : "error norm" }
    }

    static let seeds: [UInt64] = Array(1...12)
    static let dimension = 4

    /// `Σᵢ (xᵢ − x̄)²` at every round from 0 to `rounds`, averaged over seeds and coordinates.
    static func meanSquaredErrors(on graph: Graph, rounds: Int) -> [Double] {
        let n = graph.nodeCount
        let peers = (0..<n).map(SimAddress.peer)
        let tick = PairwiseAverager.Settings().tickInterval
        var totals = [Double](repeating: 0, count: rounds + 1)
        for seed in seeds {
            var values = SplitMix64(seed: seed &* 7919)
            let initial = (0..<n).map { _ in (0..<dimension).map { _ in Float(values.next() >> 40) / 0x1p24 } }
            let mean = (0..<dimension).map { k in initial.reduce(0.0) { $0 + Double($1[k]) } / Double(n) }
            let sim = Simulator<PairwiseAverager>(
                nodeCount: n, seed: seed, links: LinkPolicy(default: LinkModel(loss: 0, latency: .zero)), topology: graph.topology
            ) { context in
                PairwiseAverager(
                    peer: peers[context.index], initial: initial[context.index],
                    neighbours: graph.neighbourAddresses(context.index, peers: peers), rng: SplitMix64(seed: context.seed))
            }
            sim.startAll()
            for round in 0...rounds {
                sim.run(until: .zero + tick * round)
                for i in 0..<n {
                    guard let node = sim.node(i) else { continue }
                    for k in 0..<dimension { totals[round] += (node.value[k] - mean[k]) * (node.value[k] - mean[k]) }
                }
            }
        }
        return totals.map { $0 / Double(seeds.count * dimension) }
    }

    @Test(arguments: Case.allCases)
    func decayRateMatchesTheSecondEigenvalue(_ shape: Case) throws {
        let graph = try shape.graph()
        let n = graph.nodeCount
        let eigenvalues = symmetricEigenvalues(expectedExchangeMatrix(graph), size: n)
        // E[W] is stochastic: its largest eigenvalue, of the consensus direction, is 1.
        #expect(abs(eigenvalues[0] - 1) < 1e-9)
        let lambda2 = eigenvalues[1]
        let predicted = Double(n) * log(lambda2)
        let errors = Self.meanSquaredErrors(on: graph, rounds: shape.rounds)
        let squaredExponent = fittedSlope(errors[shape.burnIn...].map { log($0) })
        let measured = squaredExponent / shape.squaredErrorExponentInUnitsOfLambda2
        print("""
            pairwise gossip, \(shape.rawValue): λ₂ \(lambda2); per-round exponent of the \(shape.comparedQuantity): \
            predicted n·ln λ₂ = \(predicted), measured \(measured) (ratio \(measured / predicted)); \
            squared error \(errors[shape.burnIn]) → \(errors[shape.rounds]) over rounds \(shape.burnIn)–\(shape.rounds)
            """)
        #expect(abs(measured / predicted - 1) < 0.2, "measured \(measured), predicted \(predicted)")
        // The fit saw a real decay, far above Double rounding.
        #expect(errors[shape.rounds] < errors[shape.burnIn] * 1e-3)
        #expect(errors[shape.rounds] > 1e-20)
    }
}

// MARK: Push-sum over peer sampling against Kempe, Dobra and Gehrke (2003)

/// Kempe, Dobra and Gehrke: push-sum with uniformly random targets reaches relative error ε in
/// O(log n + log 1/ε) rounds. Here it runs over the protocol's own peer sampling (``GossipNode``
/// with Cyclon views and SWIM membership, built by ``OverlayWorld``, every node averaging with
/// a ``PushSumAverager`` and default LAN settings, 200 ms ticks), and ten times the nodes may
/// cost less than half as many rounds again to bring every node within 10⁻⁶ of the mean.
///
/// A round is one averaging tick. Rounds are counted from time 0, when every node starts and
/// begins averaging: each starts with a peer cache (what a previous run would have persisted)
/// holding 24 peers drawn uniformly, so its view is full and random from its first tick and
/// Cyclon's shuffles keep it random. A cold start instead, 2,000 nodes joining through node 0
/// at once, measures the join surge rather than the mixing, and stalls: node 0 and the peers its
/// join replies hand out are in nearly every early view, their tables of 1,024 senders fill, later
/// senders' transfers are refused unacknowledged, and those senders, holding their one
/// transfer in flight, stop pushing for the 600 s sender retention.
struct PushSumScalingTheoryTests {
    static let viewSize = OverlaySettings.lan.sampling.viewSize

    /// Rounds until the largest relative error over all nodes is at most 10⁻⁶; nil if not
    /// within 200 rounds.
    static func roundsToConverge(nodes n: Int, seed: UInt64) -> Int? {
        let world = OverlayWorld()
        var rng = SplitMix64(seed: seed)
        let vectors = (0..<n).map { _ in (0..<2).map { _ in Float(rng.next() >> 40) / 0x1p24 } }
        let samples = [Double](repeating: 1, count: n)
        let mean = AveragingMetrics.weightedMean(vectors, weights: samples)
        world.averaging = { (vectors[$0], samples[$0]) }
        // Each node's first record, as it signs it at its first start (sequence 1).
        let records = (0..<n).map { AddressRecord(signedBy: world.identity($0), endpoints: [SimAddress.endpoint($0)], sequence: 1) }
        for i in 0..<n { world.caches[i] = randomPeerCache(of: i, records: records, viewSize: viewSize, seed: seed) }
        let sim = world.simulator(nodeCount: n, seed: seed, links: LinkPolicy(default: LinkModel(latency: .milliseconds(2), jitter: .milliseconds(3))))
        sim.startAll()
        let tick = world.settings.averaging.tickInterval
        var round = 0
        var converged: Int?
        sim.run(until: .zero + tick * 200, every: tick) { sim in
            round += 1
            let worst = (0..<n).reduce(0.0) { worst, i in
                guard let averager = sim.node(i)?.averager else { return .infinity }
                return max(worst, AveragingMetrics.relativeError(of: averager, to: mean))
            }
            if worst <= 1e-6 { converged = round }
            return converged == nil
        }
        return converged
    }

    @Test func roundsToConvergeGrowLogarithmically() throws {
        let start = ContinuousClock.now
        let small = try #require(Self.roundsToConverge(nodes: 200, seed: 5), "200 nodes did not converge")
        let large = try #require(Self.roundsToConverge(nodes: 2000, seed: 5), "2,000 nodes did not converge")
        print("push-sum over Cyclon views, rounds to relative error 1e-6: 200 nodes \(small), 2,000 nodes \(large) (ratio \(Double(large) / Double(small))); \(ContinuousClock.now - start)")
        #expect(Double(large) < 1.5 * Double(small))
        // log₂(10⁶) ≈ 20 halvings at the least; a stalled or linear-time run would take far longer.
        #expect(small >= 20 && small <= 80)
    }
}
