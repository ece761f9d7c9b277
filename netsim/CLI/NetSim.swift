import ArgumentParser
import CommandSupport
import Foundation
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

    /// Runs under the conventions of docs/cli.md: `error: ...` on stderr, exit 64 or 1.
    static func main() { CommandConventions.main(NetSimCommand.self) }
}

/// `netsim average`: push-sum averaging on a random graph, consensus error per round as CSV.
struct Average: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Average vectors over a lossy random network; print the error per round as CSV.",
        discussion: """
        Standard output is the CSV only. The run's trace hash (equal hashes: identical runs) goes \
        to standard error as `trace HEX`, and to FILE with --trace FILE. Links have 10 ms latency \
        and up to 20 ms jitter; loss and duplication are the faults this command injects \
        (partitions and churn are exercised by the simulator's tests, see docs/simulator.md).
        """)

    // Numbers are parsed unconditionally, so `--loss -0.1` reaches validate() instead of
    // being taken for a flag.
    @Option(parsing: .unconditional, help: "Number of nodes.") var nodes = 1000
    @Option(parsing: .unconditional, help: "Probability that a message is lost (0...1).") var loss = 0.0
    @Option(parsing: .unconditional, help: "Probability that a message is delivered twice (0...1).") var duplication = 0.0
    @Option(parsing: .unconditional, help: "Seed of the run (0 to 2^64-1); one seed gives one run.") var seed: UInt64 = 1
    @Option(parsing: .unconditional, help: "Averaging rounds (ticks) to simulate.") var rounds = 100
    @Option(parsing: .unconditional, help: "Elements per averaged vector.") var dimension = 8
    @Option(parsing: .unconditional, help: "Random links added per node on top of a ring (fewer than --nodes).") var links = 4
    @Flag(help: "Plain push-sum: no acknowledgements, lost messages lose their mass.") var plain = false
    @Option(help: "Also write the run's trace hash (hex, one line) to this file.") var trace: String?

    func validate() throws {
        guard nodes >= 2 else { throw ValidationError("--nodes must be at least 2, got \(nodes)") }
        guard (0...1).contains(loss) else { throw ValidationError("--loss is a probability from 0 to 1, got \(loss)") }
        guard (0...1).contains(duplication) else { throw ValidationError("--duplication is a probability from 0 to 1, got \(duplication)") }
        guard rounds >= 1 else { throw ValidationError("--rounds must be at least 1, got \(rounds)") }
        guard dimension >= 1 else { throw ValidationError("--dimension must be at least 1, got \(dimension)") }
        guard links >= 0, links < nodes else {
            throw ValidationError("--links must be from 0 to \(nodes - 1) (fewer than --nodes: each node has only \(nodes - 1) others to link to), got \(links)")
        }
    }

    func run() throws {
        if let trace { try checkWritableFile(trace, flag: "--trace") }
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
        printNote("trace \(sim.traceHash)")
        if let trace {
            do {
                try "\(sim.traceHash)\n".write(toFile: trace, atomically: true, encoding: .utf8)
            } catch {
                throw CommandFailure("--trace \(trace): cannot write it (\(error.localizedDescription))")
            }
        }
    }
}
