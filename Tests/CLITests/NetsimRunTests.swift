import Foundation
import Testing

/// `netsim run`, `plot` and `sweep` as researchers use them: scenario files, `--set`, run
/// folders, manifests, charts and sweeps, each command a separate process.
@Suite("netsim run")
struct NetsimRunTests {
    static let scenarios = DocsCheckTests.packageRoot.appendingPathComponent("netsim/scenarios")

    static func scenario(_ name: String) -> String { scenarios.appendingPathComponent(name + ".toml").path }

    /// Each example at a size that runs in seconds; learning ones on the synthetic blobs.
    static let reduced: [String: [String]] = [
        "pushsum-loss": ["nodes.count=120", "rounds=40"],
        "compressed-gossip": ["nodes.count=80", "nodes.dimension=64", "rounds=40"],
        "gossip-vs-fedavg": ["nodes.count=12", "rounds=30", "nodes.dataset=blobs", "metrics.eval_nodes=4"],
        "dpsgd-topologies": ["nodes.count=16", "rounds=30", "nodes.dataset=blobs", "topology.kind=torus", "metrics.eval_nodes=4"],
        "edge-deployment": ["rounds=60", "nodes.dataset=blobs", "topology.regions.0.count=10", "topology.regions.1.count=4",
                            "topology.regions.2.count=4", "partitions.0.start_s=4", "partitions.0.heal_s=8", "links.flaps.0.period_s=3",
                            "links.flaps.0.down_s=1", "churn.rate=0.01", "churn.mean_offline_s=2"],
    ]

    static func run(_ name: String, out: String, extra: [String] = [], in scratch: Scratch) throws -> RunResult {
        let sets = (reduced[name] ?? []) + extra
        return try CommandRunner.run("netsim", ["run", scenario(name), "--out", out] + sets.flatMap { ["--set", $0] }, in: scratch.url)
    }

    static func file(_ path: String) throws -> String { try String(contentsOfFile: path, encoding: .utf8) }

    static func traceHash(_ result: RunResult) -> String? {
        result.stderr.split(separator: "\n").first { $0.contains("trace ") }?.split(separator: " ").last.map(String.init)
    }

    /// The rounds.csv columns docs/researchers.md documents, in its table's order.
    static func documentedColumns() throws -> [String] {
        let text = try String(contentsOf: DocsCheckTests.packageRoot.appendingPathComponent("docs/researchers.md"), encoding: .utf8)
        guard let section = text.components(separatedBy: "## Reading the outputs").dropFirst().first else { return [] }
        return section.split(separator: "\n").prefix { !$0.hasPrefix("## ") }.compactMap { line -> String? in
            guard line.hasPrefix("| `"), let end = line.dropFirst(3).firstIndex(of: "`") else { return nil }
            return String(line.dropFirst(3)[..<end])
        }
    }

    @Test("one scenario and seed, run twice as separate processes: byte-identical CSV and one trace hash; another seed, another run",
          arguments: ["pushsum-loss", "edge-deployment"])
    func reproducible(name: String) throws {
        let scratch = try Scratch()
        let churn = name == "pushsum-loss" ? ["links.duplication=0.05", "churn.rate=0.02", "churn.mean_offline_s=1"] : []
        let first = try Self.run(name, out: "a", extra: churn, in: scratch)
        let second = try Self.run(name, out: "b", extra: churn, in: scratch)
        #expect(first.status == 0 && second.status == 0, "\(first.stderr)\(second.stderr)")
        let a = try Self.file(scratch.path("a/rounds.csv")), b = try Self.file(scratch.path("b/rounds.csv"))
        #expect(a == b && a.split(separator: "\n").count > 5)
        #expect(Self.traceHash(first) != nil && Self.traceHash(first) == Self.traceHash(second))
        #expect(try Self.file(scratch.path("a/scenario.json")) == Self.file(scratch.path("b/scenario.json")))
        #expect(first.stdout.isEmpty, "stdout stays empty: the data is in the folder")

        let other = try Self.run(name, out: "c", extra: churn + ["seed=2"], in: scratch)
        #expect(other.status == 0, "\(other.stderr)")
        #expect(Self.traceHash(other) != Self.traceHash(first), "another seed, another run")
        #expect(try Self.file(scratch.path("c/rounds.csv")) != a)
    }

    @Test("algorithm.share_fraction sets how much of its mass a push-sum node moves per transfer: another run, in the resolved scenario")
    func shareFraction() throws {
        let scratch = try Scratch()
        let classic = try Self.run("pushsum-loss", out: "half", in: scratch)
        let third = try Self.run("pushsum-loss", out: "third", extra: ["algorithm.share_fraction=0.3"], in: scratch)
        #expect(classic.status == 0 && third.status == 0, "\(classic.stderr)\(third.stderr)")
        #expect(Self.traceHash(third) != Self.traceHash(classic))
        let resolved = try #require(try JSONSerialization.jsonObject(with: Data(Self.file(scratch.path("third/scenario.json")).utf8)) as? [String: Any])
        let algorithm = try #require(resolved["algorithm"] as? [String: Any])
        #expect(algorithm["share_fraction"] as? Double == 0.3 && algorithm["sparse_share_fraction"] as? Double == 0.75)
    }

    @Test("a seed is taken exactly, from the file or --set, up to 2⁶⁴−1")
    func largeSeeds() throws {
        let scratch = try Scratch()
        let file = try scratch.write("seeded.toml", "seed = 9007199254740993\nrounds = 5\n[nodes]\ncount = 50\n")
        let fromFile = try CommandRunner.netsim("run", file, "--out", "file", in: scratch.url)
        let fromSet = try CommandRunner.netsim("run", file, "--out", "set", "--set", "seed=9007199254740993", in: scratch.url)
        let neighbour = try CommandRunner.netsim("run", file, "--out", "neighbour", "--set", "seed=9007199254740992", in: scratch.url)
        let largest = try CommandRunner.netsim("run", file, "--out", "largest", "--set", "seed=18446744073709551615", in: scratch.url)
        for result in [fromFile, fromSet, neighbour, largest] { #expect(result.status == 0, "\(result.stderr)") }
        #expect(Self.traceHash(fromFile) != nil && Self.traceHash(fromFile) == Self.traceHash(fromSet))
        #expect(Self.traceHash(neighbour) != Self.traceHash(fromFile), "2⁵³ and 2⁵³+1 are two seeds, not one rounded")
        for (folder, seed) in [("file", "9007199254740993"), ("neighbour", "9007199254740992"), ("largest", "18446744073709551615")] {
            let manifest = try #require(try JSONSerialization.jsonObject(with: Data(Self.file(scratch.path("\(folder)/manifest.json")).utf8)) as? [String: Any])
            #expect(manifest["seed"] as? String == seed)
        }
        expectError(try CommandRunner.netsim("run", file, "--out", "over", "--set", "seed=18446744073709551616", in: scratch.url),
                    status: 1, mentions: ["seed", "0 to 18446744073709551615"])
    }

    @Test("the manifest repeats the run exactly and checks its trace hash")
    func manifestReproduces() throws {
        let scratch = try Scratch()
        let first = try Self.run("pushsum-loss", out: "a", in: scratch)
        #expect(first.status == 0, "\(first.stderr)")
        let manifest = try #require(try JSONSerialization.jsonObject(with: Data(Self.file(scratch.path("a/manifest.json")).utf8)) as? [String: Any])
        #expect(manifest["trace_hash"] as? String == Self.traceHash(first))
        #expect(manifest["completed"] as? Bool == true && manifest["seed"] as? String == "1")
        #expect(manifest["tool_version"] is String && manifest["git_commit"] is String)
        #expect((manifest["scenario"] as? [String: Any])?["nodes"] != nil, "the resolved scenario")
        let again = try CommandRunner.netsim("run", "--manifest", scratch.path("a/manifest.json"), "--out", "b", in: scratch.url)
        #expect(again.status == 0, "\(again.stderr)")
        #expect(again.stderr.contains("reproduced: the trace hash matches the manifest"))
        #expect(try Self.file(scratch.path("a/rounds.csv")) == Self.file(scratch.path("b/rounds.csv")))
        // A folder holding a run is not overwritten.
        let clash = try CommandRunner.netsim("run", "--manifest", scratch.path("a/manifest.json"), "--out", "b", in: scratch.url)
        expectError(clash, status: 1, mentions: ["--out", "already holds a run"])
    }

    @Test("every example scenario runs at a reduced size and writes the documented columns",
          arguments: ["pushsum-loss", "compressed-gossip", "gossip-vs-fedavg", "dpsgd-topologies", "edge-deployment"])
    func exampleRuns(name: String) throws {
        let documented = try Self.documentedColumns()
        #expect(documented.count >= 10, "docs/researchers.md documents the columns")
        let scratch = try Scratch()
        let result = try Self.run(name, out: "run", in: scratch)
        #expect(result.status == 0, "\(result.stderr)")
        let lines = try Self.file(scratch.path("run/rounds.csv")).split(separator: "\n")
        #expect(lines.first.map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) } == documented)
        #expect(lines.count >= 3)
        for line in lines.dropFirst() {
            let fields = line.split(separator: ",", omittingEmptySubsequences: false)
            #expect(fields.count == documented.count && fields.allSatisfy { $0.isEmpty || Double($0) != nil }, "not a row: \(line)")
        }
        let last = lines.last.map { $0.split(separator: ",", omittingEmptySubsequences: false) } ?? []
        let column = { (name: String) in documented.firstIndex(of: name).flatMap { last.indices.contains($0) ? Double(last[$0]) : nil } }
        if ["pushsum-loss", "compressed-gossip"].contains(name) {
            #expect((column("target_error") ?? 1) < 0.05, "averaging converges: \(last)")
        } else {
            #expect((column("accuracy_mean") ?? 0) > 0.5, "learning learns (three classes): \(last)")
        }
    }

    @Test("stochastic gradient push, gossip learning and D-PSGD run over the protocol's own peer sampling: each node the learning peer `peer join --data` runs, on a full GossipNode",
          arguments: ["sgp", "gossip-learning", "dpsgd"])
    func learningOverSampling(algorithm: String) throws {
        let scratch = try Scratch()
        let result = try Self.run("pushsum-loss", out: "run", extra: ["algorithm.name=\(algorithm)", "algorithm.tick_ms=50", "topology.kind=sampling",
                                                                      "nodes.count=16", "nodes.dataset=blobs", "nodes.partition=dirichlet:0.3",
                                                                      "rounds=100", "metrics.every=25"], in: scratch)
        #expect(result.status == 0, "\(result.stderr)")
        let last = try Self.file(scratch.path("run/rounds.csv")).split(separator: "\n").last?.split(separator: ",", omittingEmptySubsequences: false) ?? []
        let columns = try Self.documentedColumns()
        let accuracy = columns.firstIndex(of: "accuracy_min").flatMap { last.indices.contains($0) ? Double(last[$0]) : nil }
        #expect((accuracy ?? 0) > 0.9, "every node learns the three blobs: \(last)")
        expectError(try Self.run("pushsum-loss", out: "x", extra: ["algorithm.name=fedavg", "topology.kind=sampling"], in: scratch),
                    status: 1, mentions: ["topology.kind", "'sampling'", "push-sum, sgp, gossip-learning and dpsgd"])
    }

    @Test("a churn trace takes nodes offline and back at its times; a bad row is refused, naming the line")
    func churnTrace() throws {
        let scratch = try Scratch()
        try scratch.write("trace.csv", "node,offline_s,online_s\n# node 3 is away for 1.5 s, node 5 for good\n3,1.0,2.5\n5,0.5,\n")
        let result = try Self.run("pushsum-loss", out: "run", extra: ["churn.trace=\(scratch.path("trace.csv"))", "nodes.count=10",
                                                                      "rounds=20", "metrics.every=4"], in: scratch)
        #expect(result.status == 0, "\(result.stderr)")
        let live = try Self.file(scratch.path("run/rounds.csv")).split(separator: "\n").dropFirst().map { $0.split(separator: ",").last.map(String.init) ?? "" }
        #expect(live == ["9", "8", "8", "9", "9"], "live nodes at 0.8, 1.6, 2.4, 3.2 and 4 s")
        try scratch.write("bad.csv", "3,soon,1\n")
        expectError(try Self.run("pushsum-loss", out: "x", extra: ["churn.trace=\(scratch.path("bad.csv"))"], in: scratch), status: 1,
                    mentions: ["churn.trace", "bad.csv", "line 1", "node,offline_s,online_s"])
    }

    @Test("an invalid scenario or --set is refused, naming the key, the file and what is allowed")
    func invalidScenario() throws {
        let scratch = try Scratch()
        let path = try scratch.write("bad.toml", "seed = 1\n[links]\nlos = 0.2\n")
        expectError(try CommandRunner.netsim("run", path, "--out", "x", in: scratch.url), status: 1,
                    mentions: ["bad.toml", "unknown key 'links.los'", "loss"])
        let typed = try scratch.write("typed.toml", "[nodes]\ncount = \"many\"\n")
        expectError(try CommandRunner.netsim("run", typed, "--out", "x", in: scratch.url), status: 1,
                    mentions: ["typed.toml", "nodes.count", "whole number", "'many'"])
        expectError(try CommandRunner.netsim("run", Self.scenario("pushsum-loss"), "--out", "x", "--set", "links.loss=1.5", in: scratch.url),
                    status: 1, mentions: ["pushsum-loss.toml", "links.loss", "0.0 to 1.0", "1.5"])
        expectError(try CommandRunner.netsim("run", Self.scenario("pushsum-loss"), "--out", "x", "--set", "algorithm.sparse_share_fraction=1", in: scratch.url),
                    status: 1, mentions: ["algorithm.sparse_share_fraction", "0.01 to 0.99", "1"])
        expectError(try CommandRunner.netsim("run", Self.scenario("pushsum-loss"), "--out", "x", "--set", "algorithm.name=magic", in: scratch.url),
                    status: 1, mentions: ["algorithm.name", "push-sum", "'magic'"])
        expectError(try CommandRunner.netsim("run", Self.scenario("dpsgd-topologies"), "--out", "x", "--set", "algorithm.compression=topk:0.1", in: scratch.url),
                    status: 1, mentions: ["algorithm.compression", "dpsgd sends whole models", "fp32, fp16 or int8"])
        expectError(try CommandRunner.netsim("run", Self.scenario("pushsum-loss"), "--out", "x", "--set", "nodes", in: scratch.url),
                    status: 64, mentions: ["--set", "KEY=VALUE"])
        // The model and the split are checked with the scenario, before any folder is made.
        expectError(try CommandRunner.netsim("run", Self.scenario("dpsgd-topologies"), "--out", "x", "--set", "nodes.model=mlp:0", in: scratch.url),
                    status: 1, mentions: ["dpsgd-topologies.toml", "nodes.model", "softmax or mlp:H1", "'mlp:0'"])
        expectError(try CommandRunner.netsim("run", Self.scenario("dpsgd-topologies"), "--out", "x", "--set", "nodes.partition=bogus", in: scratch.url),
                    status: 1, mentions: ["dpsgd-topologies.toml", "nodes.partition", "dirichlet:ALPHA", "'bogus'"])
        expectError(try CommandRunner.netsim("run", Self.scenario("dpsgd-topologies"), "--out", "x", "--set", "nodes.dataset=missing.csv", in: scratch.url),
                    status: 1, mentions: ["nodes.dataset", "missing.csv", "no such file"])
        _ = try scratch.write("triangle.txt", "0 1\n1 2\n2 0\n")
        let edges = try scratch.write("edges.toml", "[nodes]\ncount = 5\n[topology]\nkind = \"edges\"\nfile = \"triangle.txt\"\n")
        expectError(try CommandRunner.netsim("run", edges, "--out", "x", in: scratch.url), status: 1,
                    mentions: ["topology.file", "triangle.txt", "node 3 and 1 more", "no link"])
        let broken = try scratch.write("broken.toml", "[nodes\ncount = 3\n")
        expectError(try CommandRunner.netsim("run", broken, "--out", "x", in: scratch.url), status: 1, mentions: ["broken.toml", "not valid TOML", "line"])
        #expect(!FileManager.default.fileExists(atPath: scratch.path("x")), "nothing written before the checks pass")
    }

    @Test("plot turns runs into one SVG chart, a curve each")
    func plot() throws {
        let scratch = try Scratch()
        #expect(try Self.run("pushsum-loss", out: "acked", in: scratch).status == 0)
        #expect(try Self.run("pushsum-loss", out: "plain", extra: ["algorithm.loss_recovery=none"], in: scratch).status == 0)
        let chart = try CommandRunner.netsim("plot", "acked", "plain", "--y", "target_error", "--log-y", in: scratch.url)
        #expect(chart.status == 0, "\(chart.stderr)")
        #expect(chart.stdout.hasPrefix("<svg") && chart.stdout.hasSuffix("</svg>\n"))
        #expect(chart.stdout.components(separatedBy: "<polyline").count == 3)
        #expect(chart.stdout.contains(">acked<") && chart.stdout.contains(">plain<"))
        expectError(try CommandRunner.netsim("plot", "acked", "--y", "accuracy", in: scratch.url), status: 64,
                    mentions: ["'accuracy' is not a rounds.csv column", "accuracy_mean"])
        expectError(try CommandRunner.netsim("plot", "missing", in: scratch.url), status: 1, mentions: ["missing/rounds.csv"])
    }

    @Test("sweep runs a grid over seeds in parallel processes and summarises across seeds; --emit writes cluster job files; --collect summarises")
    func sweep() throws {
        let scratch = try Scratch()
        let base = ["sweep", Self.scenario("pushsum-loss"), "--set", "nodes.count=60", "--set", "rounds=20",
                    "--grid", "algorithm.loss_recovery=acknowledged,none", "--seeds", "1-2"]
        let result = try CommandRunner.run("netsim", base + ["--out", "s", "--jobs", "2"], in: scratch.url)
        #expect(result.status == 0, "\(result.stderr)")
        let summary = try Self.file(scratch.path("s/summary.csv")).split(separator: "\n")
        #expect(summary.count == 3, "a header and a row per grid point: \(summary)")
        #expect(summary.first?.hasPrefix("algorithm.loss_recovery,seeds,consensus_error_mean,consensus_error_std") == true)
        #expect(summary.dropFirst().allSatisfy { $0.split(separator: ",")[1] == "2" }, "two seeds per point")
        #expect(result.stdout.hasPrefix("| algorithm.loss_recovery | seeds |"), "the Markdown table is the data")
        #expect(FileManager.default.fileExists(atPath: scratch.path("s/runs/job-003/rounds.csv")))

        let emitted = try CommandRunner.run("netsim", base + ["--out", "p", "--emit", "parallel"], in: scratch.url)
        #expect(emitted.status == 0, "\(emitted.stderr)")
        let jobs = try Self.file(scratch.path("p/jobs.parallel")).split(separator: "\n")
        #expect(jobs.count == 4 && jobs.allSatisfy { $0.contains(" run --manifest ") })
        let slurm = try CommandRunner.run("netsim", base + ["--out", "q", "--emit", "slurm"], in: scratch.url)
        #expect(slurm.status == 0, "\(slurm.stderr)")
        #expect(try Self.file(scratch.path("q/sweep.slurm")).contains("#SBATCH --array=0-3"))
        // What the cluster engine would do, from a directory of its own: every job line, then --collect.
        for job in jobs {
            let shell = try CommandRunner.start("bash", ["-c", String(job)], in: URL(fileURLWithPath: "/"), executable: "/bin/bash").wait()
            #expect(shell.status == 0, "\(shell.stderr)")
        }
        let collected = try CommandRunner.netsim("sweep", "--collect", "p", in: scratch.url)
        #expect(collected.status == 0, "\(collected.stderr)")
        // The same jobs give the same summary, however they were run.
        #expect(try Self.file(scratch.path("p/summary.csv")) == Self.file(scratch.path("s/summary.csv")))
        // A job whose run was stopped early is left out of the summary, and named.
        let stoppedJob = scratch.path("p/runs/job-000/manifest.json")
        try Self.file(stoppedJob).replacingOccurrences(of: "\"completed\" : true", with: "\"completed\" : false")
            .write(toFile: stoppedJob, atomically: true, encoding: .utf8)
        let partial = try CommandRunner.netsim("sweep", "--collect", "p", in: scratch.url)
        #expect(partial.status == 0 && partial.stderr.contains("no finished run yet in 1 job(s)"), "\(partial.stderr)")
        let seedCounts = try Self.file(scratch.path("p/summary.csv")).split(separator: "\n").dropFirst().map { $0.split(separator: ",")[1] }
        #expect(seedCounts.sorted() == ["1", "2"], "\(seedCounts)")
        expectError(try CommandRunner.run("netsim", base + ["--out", "s"], in: scratch.url), status: 1, mentions: ["already holds a sweep"])
        expectError(try CommandRunner.run("netsim", ["sweep", Self.scenario("pushsum-loss"), "--out", "z", "--grid", "links.loss=0,7"], in: scratch.url),
                    status: 1, mentions: ["job links.loss=7", "links.loss"])
    }

    @Test("Ctrl-C stops a run after the round in hand, keeps what was computed, and its manifest repeats it to that round")
    func interrupt() throws {
        let scratch = try Scratch()
        // Rows every 50 rounds of a million: the stop comes after the round in hand, not at a row.
        let running = try CommandRunner.start("netsim", ["run", Self.scenario("pushsum-loss"), "--out", "run", "--set", "rounds=1000000",
                                                         "--set", "metrics.every=50", "--set", "nodes.count=200"], in: scratch.url)
        let csv = scratch.path("run/rounds.csv")
        while ((try? Self.file(csv))?.split(separator: "\n").count ?? 0) < 3 && running.process.isRunning { usleep(20_000) }
        kill(running.process.processIdentifier, SIGINT)
        let result = try Self.endWithin60Seconds(running)
        #expect(result.status == 0, "\(result.stderr)")
        #expect(result.stderr.contains("stopped after round"))
        let manifest = try #require(try JSONSerialization.jsonObject(with: Data(Self.file(scratch.path("run/manifest.json")).utf8)) as? [String: Any])
        #expect(manifest["completed"] as? Bool == false)
        let lines = try Self.file(csv).split(separator: "\n")
        #expect(lines.count - 1 >= 2 && manifest["rows"] as? Int == lines.count - 1, "every computed row kept: \(lines.count - 1)")
        let lastRound = try #require(manifest["last_round"] as? Int)
        #expect(lines.last?.split(separator: ",").first.flatMap { Int($0) } == lastRound, "the last row is the round it stopped after")
        #expect(lastRound < 1_000_000)

        let again = try CommandRunner.netsim("run", "--manifest", scratch.path("run/manifest.json"), "--out", "again", in: scratch.url)
        #expect(again.status == 0, "\(again.stderr)")
        #expect(again.stderr.contains("reproduced: the trace hash matches the manifest, up to the round its run was stopped after"), "\(again.stderr)")
        #expect(try Self.file(scratch.path("again/rounds.csv")) == Self.file(csv))
    }

    @Test("a second Ctrl-C ends a run at once, with 130, keeping the rows written")
    func secondInterrupt() throws {
        let scratch = try Scratch()
        // Rounds of ten virtual minutes, 3,000 ticks of each of 1,000 nodes: the first Ctrl-C
        // waits seconds for the round in hand.
        let running = try CommandRunner.start("netsim", ["run", Self.scenario("pushsum-loss"), "--out", "run", "--set", "rounds=1000",
                                                         "--set", "round_ms=600000", "--set", "algorithm.tick_ms=200"], in: scratch.url)
        let csv = scratch.path("run/rounds.csv")
        while (try? Self.file(csv)) == nil && running.process.isRunning { usleep(20_000) }
        usleep(500_000)  // the run catches signals once its folder is made
        kill(running.process.processIdentifier, SIGINT)
        usleep(300_000)
        #expect(running.process.isRunning, "the first Ctrl-C waits for the round in hand")
        kill(running.process.processIdentifier, SIGINT)
        let result = try Self.endWithin60Seconds(running)
        #expect(result.status == 130, "\(result.stderr)")
        #expect(try Self.file(csv).hasPrefix("round,"), "the header written before the stop stays")
        #expect(!FileManager.default.fileExists(atPath: scratch.path("run/manifest.json")))
    }

    /// Waits for a run that was told to stop; one that ignored the signal would go on for a
    /// million rounds, so after a minute it is killed (and its status fails the test).
    static func endWithin60Seconds(_ running: RunningCommand) throws -> RunResult {
        var waited = 0
        while running.process.isRunning && waited < 3_000 { usleep(20_000); waited += 1 }
        if running.process.isRunning { kill(running.process.processIdentifier, SIGKILL) }
        return try running.wait()
    }
}
