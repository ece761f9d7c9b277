import Crypto
import Foundation
import Gossip
import Simulation

/// `gossip`: push-sum averaging of model-sized vectors on 10,000 simulated nodes, with
/// signing and sealing off and on, against a plain loop doing only the averaging arithmetic
/// on the same pairs in the same run.
enum GossipBench {
    /// The network of issue 3's benchmark.
    static let defaultNodes = 10_000
    /// Parameters of a 784×10 softmax model plus biases (Fashion-MNIST), the project's model.
    static let dimension = 7_850
    /// Averaging rounds with crypto off.
    static let rounds = 100
    /// Rounds with signing and sealing on: each transfer then costs two BLAKE2b passes, an
    /// Ed25519 signature and verification and an AEAD seal and open of 31 kB, about ten
    /// times the arithmetic, so ten rounds keep the run to tens of seconds.
    static let cryptoRounds = 10
    /// Random links per node on top of a ring: a view of about 18 peers.
    static let extraLinksPerNode = 8
    /// A LAN-like link with a little loss, so retransmission is exercised.
    static let link = LinkModel(loss: 0.01, latency: .milliseconds(10), jitter: .milliseconds(10))

    struct Outcome {
        var seconds: Double
        var pairs: [(from: Int32, to: Int32)]
        var maxRelativeError: Double
        var counters: NetworkCounters
    }

    static func nodeCount() -> Int {
        ProcessInfo.processInfo.environment["GOSSIP_BENCH_NODES"].flatMap(Int.init) ?? defaultNodes
    }

    /// Node `i`'s initial vector, the same in the simulation and the plain loop.
    static func initialVector(_ i: Int) -> [Float] {
        var rng = SplitMix64(seed: UInt64(i) &* 0x9E37_79B9_7F4A_7C15 &+ 1)
        return (0..<dimension).map { _ in 1 + Float(rng.next(upperBound: UInt32(1 << 16))) / Float(1 << 14) }
    }

    static func sampleCounts(_ n: Int) -> [Double] {
        var rng = SplitMix64(seed: 42)
        return SampleCounts.pareto(count: n, rng: &rng)
    }

    static func simulate(nodes n: Int, rounds: Int, crypto: Bool) throws -> Outcome {
        var rng = SplitMix64(seed: 7)
        var graph = Graph(nodeCount: n)
        graph.addCluster(0..<n, extraLinksPerNode: extraLinksPerNode, rng: &rng)
        let samples = sampleCounts(n)
        let settings = PushSumAverager.Settings()
        // With crypto every node signs as itself; without, synthetic identities suffice.
        let identities = crypto ? try (0..<n).map(benchIdentity) : []
        let peers = crypto ? identities.map(\.peerID) : (0..<n).map(SimAddress.peer)
        var peerIndex: [PeerID: Int32] = [:]
        for (i, p) in peers.enumerated() { peerIndex[p] = Int32(i) }
        // Nodes send only to their view, so no topology filter is needed on top.
        let sim = Simulator.averaging(
            over: graph, initial: initialVector, samples: samples, settings: settings,
            links: LinkPolicy(default: link), seed: 11, confinedToGraph: false, peers: peers)
        var pairs: [(from: Int32, to: Int32)] = []
        pairs.reserveCapacity(n * rounds + n)
        sim.onEvent = { node, event, _ in
            if case .transferApplied(let from, _) = event, let i = peerIndex[from] {
                pairs.append((i, Int32(node)))
            }
        }
        if crypto {
            let key = try NetworkKey(bytes: [UInt8](repeating: 7, count: NetworkKey.length))
            sim.wire = SecureWireMode.averaging(sim, wires: try SecureWireMode.wires(identities: identities, keyring: NetworkKeyring(current: key)))
        }
        sim.startAll()
        sim.run(until: .zero)
        let start = DispatchTime.now().uptimeNanoseconds
        sim.run(until: .zero + settings.tickInterval * rounds)
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        var mean = [Double](repeating: 0, count: dimension)
        var total = 0.0
        for i in 0..<n {
            guard let node = sim.node(i) else { continue }
            node.withValue { v, w in
                for k in 0..<dimension { mean[k] += v[k] }
                total += w
            }
        }
        mean = mean.map { $0 / total }
        let error = AveragingMetrics.maxRelativeError(sim, to: mean, nodes: 0..<n)
        return Outcome(seconds: seconds, pairs: pairs, maxRelativeError: error, counters: sim.counters)
    }

    /// The averaging arithmetic alone, as the averager does it: for each applied transfer, half
    /// of the sender's weight, and half of its value as a scaled `Float` share, moves to the receiver.
    static func plainLoop(nodes n: Int, pairs: [(from: Int32, to: Int32)]) -> Double {
        let samples = sampleCounts(n)
        var values = [Double](repeating: 0, count: n * dimension)
        var weights = samples
        for i in 0..<n {
            let x = initialVector(i)
            for k in 0..<dimension { values[i * dimension + k] = Double(x[k]) * samples[i] }
        }
        let start = DispatchTime.now().uptimeNanoseconds
        values.withUnsafeMutableBufferPointer { v in
            guard let base = v.baseAddress else { return }
            for (from, to) in pairs {
                let a = base + Int(from) * dimension
                let b = base + Int(to) * dimension
                let w = weights[Int(from)] * 0.5
                let scale = PushSumAverager.scale(forWeight: w)
                let factor = 0.5 / scale
                for k in 0..<dimension {
                    let share = Float(a[k] * factor)
                    a[k] -= Double(share) * scale
                    b[k] += Double(share) * scale
                }
                weights[Int(from)] -= w
                weights[Int(to)] += w
            }
        }
        let seconds = Double(DispatchTime.now().uptimeNanoseconds - start) / 1e9
        // Keep the result observable so the loop is not optimised away.
        if values[0] == .infinity || weights[0] < 0 { print("unexpected plain-loop state") }
        return seconds
    }

    static func run() throws {
        let n = nodeCount()
        var report = BenchReport(suite: "gossip")
        print("gossip: \(n) nodes, \(dimension)-element vectors, \(rounds) rounds (crypto off), \(cryptoRounds) rounds (crypto on)")

        let off = try simulate(nodes: n, rounds: rounds, crypto: false)
        let simPeak = peakResidentBytes()
        let plainSeconds = plainLoop(nodes: n, pairs: off.pairs)
        let nodeRounds = Double(n * rounds)
        let offRate = nodeRounds / off.seconds
        let plainRate = nodeRounds / plainSeconds
        report.add(BenchFigure(
            name: "node-rounds/s, crypto off", value: offRate, unit: "node-rounds/s", baseline: plainRate,
            ratio: offRate / plainRate,
            note: "baseline: plain loop over the same \(off.pairs.count) transfers; target ratio >= 0.333 (within 3x)"))
        report.add(BenchFigure(name: "wall time to simulate, crypto off", value: off.seconds, unit: "s", baseline: plainSeconds,
                               ratio: plainSeconds / off.seconds, note: "wall-clock seconds to simulate \(rounds) rounds; baseline: plain loop"))
        report.add(BenchFigure(name: "max relative error after \(rounds) rounds", value: off.maxRelativeError, unit: "",
                               note: "vs the network's weighted mean"))
        report.add(BenchFigure(name: "messages, crypto off", value: Double(off.counters.sent), unit: "messages",
                               note: "\(off.counters.dropped(.loss)) lost, \(off.counters.bytesSent / 1_000_000) MB"))

        let on = try simulate(nodes: n, rounds: cryptoRounds, crypto: true)
        let onRate = Double(n * cryptoRounds) / on.seconds
        report.add(BenchFigure(
            name: "node-rounds/s, secure wire", value: onRate, unit: "node-rounds/s", baseline: offRate,
            ratio: onRate / offRate,
            note: "\(cryptoRounds) rounds; SecureWire: every transfer an Ed25519-signed envelope checked against the session's peer; baseline: crypto off"))
        report.add(BenchFigure(name: "rejected in wire mode", value: Double(on.counters.dropped(.rejected)), unit: "messages",
                               note: "envelope refusals (wrong author or recipient, bad signature); expected 0"))
        let peak = peakResidentBytes()
        report.add(BenchFigure(name: "peak memory (simulation, crypto off)", value: Double(simPeak) / Double(1 << 30), unit: "GiB",
                               note: "VmHWM after the crypto-off run; target < 8 GiB"))
        report.add(BenchFigure(name: "peak memory (whole run)", value: Double(peak) / Double(1 << 30), unit: "GiB",
                               note: "includes the plain loop's arrays"))
        report.finish()
    }
}

/// Node `i`'s identity in the signed benchmark runs.
func benchIdentity(_ i: Int) throws -> Identity {
    var seed = [UInt8](repeating: 0, count: Identity.seedLength)
    withUnsafeBytes(of: UInt64(i).littleEndian) { seed.replaceSubrange(0..<8, with: $0) }
    return try Identity(seed: seed)
}
