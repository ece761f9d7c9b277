import ArgumentParser
import Gossip
import Simulation

/// `netsim`: run many nodes of the Murmuration protocol in virtual time.
@main
struct NetSimCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "netsim",
        abstract: "Deterministic network simulator for the Murmuration gossip protocol.",
        subcommands: [Average.self]
    )
}

/// `netsim average`: push-sum averaging on a random graph, consensus error per round as CSV.
struct Average: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Average vectors over a lossy random network; print the error per round as CSV.")

    @Option(help: "Number of nodes.") var nodes = 1000
    @Option(help: "Probability that a message is lost (0...1).") var loss = 0.0
    @Option(help: "Probability that a message is delivered twice (0...1).") var duplication = 0.0
    @Option(help: "Seed of the run; one seed gives one run.") var seed: UInt64 = 1
    @Option(help: "Averaging rounds (ticks) to simulate.") var rounds = 100
    @Option(help: "Elements per averaged vector.") var dimension = 8
    @Option(help: "Random links added per node on top of a ring.") var links = 4
    @Flag(help: "Plain push-sum: no acknowledgements, lost messages lose their mass.") var plain = false

    func validate() throws {
        guard nodes >= 2 else { throw ValidationError("--nodes must be at least 2") }
        guard (0...1).contains(loss), (0...1).contains(duplication) else {
            throw ValidationError("--loss and --duplication are probabilities between 0 and 1")
        }
        guard rounds >= 1, dimension >= 1, links >= 0 else {
            throw ValidationError("--rounds and --dimension must be positive, --links not negative")
        }
    }

    func run() throws {
        var rng = SplitMix64(seed: seed)
        var graph = Graph(nodeCount: nodes)
        graph.addCluster(0..<nodes, extraLinksPerNode: links, rng: &rng)
        let samples = SampleCounts.pareto(count: nodes, rng: &rng)
        let vectors = (0..<nodes).map { _ in
            (0..<dimension).map { _ in 1 + Float(rng.next(upperBound: UInt32(1 << 20))) / Float(1 << 18) }
        }
        let mean = AveragingMetrics.weightedMean(vectors, weights: samples)
        var settings = PushSumAverager.Settings()
        settings.lossRecovery = plain ? .none : .acknowledged
        let model = LinkModel(loss: loss, latency: .milliseconds(10), jitter: .milliseconds(20), duplication: duplication)
        let sim = Simulator.averaging(
            over: graph, initial: { vectors[$0] }, samples: samples, settings: settings,
            links: LinkPolicy(default: model), seed: seed)
        sim.startAll()
        print("round,time_s,max_relative_error,messages_sent,messages_dropped")
        var round = 0
        let end = Instant.zero + settings.tickInterval * rounds
        sim.run(until: end, every: settings.tickInterval) { sim in
            round += 1
            let error = AveragingMetrics.maxRelativeError(sim, to: mean, nodes: 0..<sim.nodeCount)
            print("\(round),\(Double(sim.now.nanoseconds) / 1e9),\(error),\(sim.counters.sent),\(sim.counters.totalDropped)")
            return true
        }
        print("# trace \(sim.traceHash)")
    }
}
