import ArgumentParser
import CommandSupport
import Foundation
import Gossip
import Learner
import Simulation

/// `netsim`: run many nodes of the Murmuration protocol in virtual time.
@main
struct NetSimCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "netsim",
        abstract: "Deterministic network simulator for the Murmuration gossip protocol.",
        subcommands: [RunCommand.self, SweepCommand.self, PlotCommand.self, Average.self, RelayCommand.self]
    )

    /// Runs under the conventions of docs/cli.md: `error: ...` on stderr, exit 64 or 1.
    static func main() {
        BLASKernel.selectForThisCPU()
        // Many nodes share the process: one thread each product, and reproducible runs.
        BLAS.setThreadCount(1)
        CommandConventions.main(NetSimCommand.self)
    }
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
    @Option(name: .customLong("metrics-every"), parsing: .unconditional,
            help: "Print a row every K rounds (the error metric reads every node's state; K > 1 saves that time).") var metricsEvery = 1

    func validate() throws {
        guard nodes >= 2 else { throw ValidationError("--nodes must be at least 2, got \(nodes)") }
        guard (0...1).contains(loss) else { throw ValidationError("--loss is a probability from 0 to 1, got \(loss)") }
        guard (0...1).contains(duplication) else { throw ValidationError("--duplication is a probability from 0 to 1, got \(duplication)") }
        guard rounds >= 1 else { throw ValidationError("--rounds must be at least 1, got \(rounds)") }
        guard metricsEvery >= 1 else { throw ValidationError("--metrics-every must be at least 1, got \(metricsEvery)") }
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
            links: LinkPolicy(default: model), seed: seed, confinedToGraph: false)
        sim.startAll()
        print("round,time_s,max_relative_error,messages_sent,messages_dropped")
        let end = Instant.zero + settings.tickInterval * rounds
        sim.run(until: end, every: settings.tickInterval * metricsEvery) { sim in
            let round = Int(sim.now.nanoseconds / settings.tickInterval.nanosecondsClamped)
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

/// `netsim relay`: an unstable link between real peers, on one machine, without root.
struct RelayCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "relay",
        abstract: "Relay real peers' traffic (UDP and TCP) through modelled lossy, slow links.",
        discussion: """
        Each --link LISTEN=TARGET listens on LISTEN (UDP and TCP on one port; port 0 picks one) and \
        forwards to a peer at TARGET; the peer advertises LISTEN (`peer join --advertise`). Every \
        datagram, each way, is lost, delayed, jittered or duplicated as the simulator's link model \
        draws it; TCP is delayed by the latency, and stalls or resets with --tcp-stall and --tcp-reset. \
        --isolate HOST@FROM-UNTIL cuts a host off from everyone between two moments (seconds since \
        the relay started): a partition that heals. Standard error names each link's port; on SIGINT or \
        SIGTERM the relay prints what the links did as one JSON object on standard output and exits 0.

        Example:
          netsim relay --link 127.0.0.1:8001=127.0.0.1:7001 --link 127.0.0.1:8002=127.0.0.1:7002 --loss 0.3 --latency 70 --jitter 60
        """)

    @Option(help: "LISTEN=TARGET, numeric HOST:PORT each (repeatable).") var link: [String] = []
    @Option(parsing: .unconditional, help: "Probability that a datagram is lost (0...1).") var loss = 0.0
    @Option(parsing: .unconditional, help: "One-way latency in milliseconds.") var latency = 0
    @Option(parsing: .unconditional, help: "Extra delay in milliseconds: drawn from 0...JITTER, or exponentially with mean JITTER (see --jitter-distribution).") var jitter = 0
    @Option(name: .customLong("jitter-distribution"), help: "uniform or exponential.") var jitterDistribution = "uniform"
    @Option(parsing: .unconditional, help: "Probability that a datagram is delivered twice (0...1).") var duplication = 0.0
    @Option(parsing: .unconditional, help: "Probability that a datagram is held back 50 ms and overtaken (0...1).") var reorder = 0.0
    @Option(parsing: .unconditional, help: "Bytes per second each direction of a link carries (0: unlimited); datagrams wait their turn.") var bandwidth = 0.0
    @Option(name: .customLong("burst-enter"), parsing: .unconditional, help: "Burst loss (Gilbert–Elliott): probability per datagram of entering a bad spell, where every datagram is lost (0: i.i.d. --loss only).") var burstEnter = 0.0
    @Option(name: .customLong("burst-exit"), parsing: .unconditional, help: "Burst loss: probability per datagram of leaving a bad spell (1 / mean burst length).") var burstExit = 0.5
    @Option(name: .customLong("tcp-reset"), parsing: .unconditional, help: "Probability that a relayed TCP chunk resets its connection (both ends closed).") var tcpReset = 0.0
    @Option(name: .customLong("tcp-stall"), parsing: .unconditional, help: "Probability that a relayed TCP chunk stalls its direction for --tcp-stall-ms.") var tcpStall = 0.0
    @Option(name: .customLong("tcp-stall-ms"), parsing: .unconditional, help: "How long a TCP stall holds a direction, in milliseconds.") var tcpStallMs: UInt64 = 2_000
    @Option(help: "HOST@FROM-UNTIL: drop every datagram and connection from or to HOST between FROM and UNTIL seconds after the relay started (repeatable).") var isolate: [String] = []
    @Option(parsing: .unconditional, help: "Seed of the link draws.") var seed: UInt64 = 1

    func validate() throws {
        guard !link.isEmpty else { throw ValidationError("give at least one --link LISTEN=TARGET") }
        for l in link { _ = try Self.parse(l) }
        for (name, p) in [("--loss", loss), ("--duplication", duplication), ("--reorder", reorder), ("--burst-enter", burstEnter), ("--burst-exit", burstExit),
                        ("--tcp-reset", tcpReset), ("--tcp-stall", tcpStall)] {
            guard (0...1).contains(p) else { throw ValidationError("\(name) is a probability from 0 to 1, got \(p)") }
        }
        guard latency >= 0, jitter >= 0 else { throw ValidationError("--latency and --jitter are milliseconds, 0 or more") }
        guard LinkModel.JitterShape(rawValue: jitterDistribution) != nil else {
            throw ValidationError("--jitter-distribution is uniform or exponential, got '\(jitterDistribution)'")
        }
        guard bandwidth >= 0, bandwidth.isFinite else { throw ValidationError("--bandwidth is bytes per second, 0 (unlimited) or more, got \(bandwidth)") }
        if burstEnter > 0 { guard burstExit > 0 else { throw ValidationError("--burst-exit must be above 0 when --burst-enter is set, or a bad spell never ends") } }
        for i in isolate { _ = try Self.isolation(i) }
    }

    /// `HOST@FROM-UNTIL`, seconds since the relay started.
    static func isolation(_ text: String) throws -> Relay.Isolation {
        let parts = text.split(separator: "@")
        let window = parts.count == 2 ? parts[1].split(separator: "-").map { Double($0) } : []
        guard parts.count == 2, !parts[0].isEmpty, window.count == 2, let from = window[0], let until = window[1], from >= 0, until > from, until.isFinite else {
            throw ValidationError("--isolate expects HOST@FROM-UNTIL with seconds FROM < UNTIL, e.g. 127.0.0.2@0-30; got '\(text)'")
        }
        return Relay.Isolation(host: String(parts[0]), fromMilliseconds: UInt64(from * 1_000), untilMilliseconds: UInt64(until * 1_000))
    }

    static func parse(_ text: String) throws -> Relay.Link {
        let parts = text.split(separator: "=")
        guard parts.count == 2, let listen = endpoint(parts[0]), let target = endpoint(parts[1]), target.port != 0 else {
            throw ValidationError("--link expects LISTEN=TARGET with numeric HOST:PORT each, e.g. 127.0.0.1:8001=127.0.0.1:7001; got '\(text)'")
        }
        return Relay.Link(listen: listen, target: target)
    }

    static func endpoint(_ text: Substring) -> Endpoint? {
        guard let colon = text.lastIndex(of: ":"), let port = UInt16(text[text.index(after: colon)...]) else { return nil }
        var host = String(text[..<colon])
        if host.hasPrefix("[") && host.hasSuffix("]") { host = String(host.dropFirst().dropLast()) }
        return host.isEmpty ? nil : Endpoint(host: host, port: port)
    }

    func run() throws {
        let links = try link.map(Self.parse)
        // In a bad spell every datagram is lost; outside it, --loss applies.
        let burst = burstEnter > 0 ? GilbertElliott(goodToBad: burstEnter, badToGood: burstExit, lossInGood: loss, lossInBad: 1) : nil
        var model = LinkModel(loss: loss, burst: burst, latency: .milliseconds(latency), jitter: .milliseconds(jitter),
                              bandwidth: bandwidth > 0 ? bandwidth : nil, duplication: duplication, reorder: reorder)
        model.jitterShape = LinkModel.JitterShape(rawValue: jitterDistribution) ?? .uniform
        let relay: Relay
        let faults = Relay.StreamFaults(resetChance: tcpReset, stallChance: tcpStall, stallMilliseconds: tcpStallMs)
        let isolations = try isolate.map(Self.isolation)
        do { relay = try Relay(links: links, model: model, streamFaults: faults, isolations: isolations, seed: seed) } catch {
            throw CommandFailure("cannot listen: \(error)")
        }
        for (l, port) in zip(links, relay.ports) {
            printNote("relaying \(Endpoint(host: l.listen.host, port: port)) -> \(l.target)")
        }
        let stop: (Int32) -> Void = { _ in relay.stop() }
        let watchers = [try SignalWatcher(loop: relay.loop, signal: SIGINT, stop), try SignalWatcher(loop: relay.loop, signal: SIGTERM, stop)]
        relay.run()
        for w in watchers { w.close() }
        let c = relay.counters
        let report: [String: Any] = ["datagrams": c.datagrams, "dropped": c.dropped, "duplicated": c.duplicated,
                                     "dropRate": c.dropRate, "tcpConnections": c.tcpConnections, "tcpBytes": c.tcpBytes,
                                     "tcpResets": c.tcpResets, "tcpStalls": c.tcpStalls, "isolated": c.isolated]
        let data = try JSONSerialization.data(withJSONObject: report, options: [.sortedKeys])
        print(String(decoding: data, as: UTF8.self))
    }
}
