import ArgumentParser
import CommandSupport
import Foundation
import Experiments
import Synchronization

/// Set by SIGINT or SIGTERM: the run stops after the round in hand and keeps what it computed.
/// A second signal ends the process at once (a million-node round takes minutes), keeping the
/// rows already written.
let stopRequested = Atomic<Bool>(false)

/// `netsim run`: one experiment from a scenario file, into one folder.
struct RunCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "run",
        abstract: "Run a scenario (TOML or JSON) and write rounds.csv, scenario.json and manifest.json into --out.",
        discussion: """
        KEY in --set is the dotted path of a scenario key: seed=3, nodes.count=64, links.loss=0.2, \
        topology.regions.0.count=20. Keys the scenario leaves open are drawn from its seed; the \
        resolved scenario is written to DIR/scenario.json and into DIR/manifest.json, from which \
        `netsim run --manifest DIR/manifest.json --out DIR2` repeats the run exactly (and checks \
        its trace hash). Standard output stays empty; progress and the trace hash go to standard \
        error. Ctrl-C stops after the round in hand, with a row for it: rounds.csv keeps every row \
        computed, and the manifest says completed: false and the last round run, to which \
        --manifest repeats it. Scenario keys: docs/researchers.md.
        """)

    @Argument(help: "The scenario file (.toml, or .json).") var scenario: String?
    @Option(help: "The run's folder (created; must not hold a run already).") var out: String
    @Option(name: .customLong("set"), help: "KEY=VALUE: override a scenario key (repeatable).") var overrides: [String] = []
    @Option(help: "Repeat the run a manifest describes (instead of SCENARIO).") var manifest: String?
    @Flag(help: "No progress bar.") var quiet = false

    func validate() throws {
        guard (scenario == nil) != (manifest == nil) else {
            throw ValidationError("give a SCENARIO file or --manifest FILE (one of them)")
        }
        for assignment in overrides {
            do { _ = try ScenarioDocument.split(assignment) } catch { throw ValidationError(error.description) }
        }
    }

    func run() throws {
        let loaded: (Scenario, base: URL, expected: Expectation?)
        do { loaded = try Self.resolve(scenario: scenario, manifest: manifest, overrides: overrides) } catch {
            throw CommandFailure(error.description)
        }
        let (resolved, base, expected) = loaded
        if let expected, expected.stoppedAfter == nil, expected.stoppedEarly {
            printNote("the manifest's run was stopped early and does not say after which round; running to the end, with nothing to compare")
        }
        let runner: ScenarioRunner
        let folder: RunFolder
        do {
            runner = try ScenarioRunner(resolved, baseDirectory: base)
            folder = try RunFolder(out, scenario: resolved)
        } catch {
            throw CommandFailure(error.description)
        }
        Self.catchStopSignals()
        let progress = ProgressBar(total: resolved.rounds, enabled: !quiet)
        let stopAfter = expected?.stoppedAfter
        runner.shouldStop = { round in
            progress.update(round)
            return round == stopAfter || stopRequested.load(ordering: .relaxed)
        }
        let result: RunResult
        do {
            result = try runner.run(folder.append)
        } catch {
            progress.finish()
            throw CommandFailure(error.description)
        }
        progress.finish()
        var record = RunManifest(scenario: resolved.tree, baseDirectory: base.path, toolVersion: BuildInfo.version, gitCommit: BuildInfo.gitCommit)
        record.traceHash = result.traceHash
        record.rows = result.rows
        record.completed = result.completed
        record.lastRound = result.lastRound
        do { try folder.finish(record) } catch { throw CommandFailure(error.description) }
        let ending = result.completed ? "finished" : "stopped after round \(result.lastRound)"
        printNote("\(ending): \(result.rows) rows in \(out)/rounds.csv; trace \(result.traceHash)")
        // A manifest's run is compared once this run has got as far: to the end, or to the
        // round the manifest's run was stopped after.
        if let expected, expected.stoppedEarly ? result.lastRound == stopAfter : result.completed {
            guard expected.traceHash == result.traceHash else {
                throw CommandFailure("the run differs from the manifest's: trace \(result.traceHash), manifest \(expected.traceHash) (this is \(BuildInfo.gitCommit); check the tool version and commit it names)")
            }
            printNote("reproduced: the trace hash matches the manifest" + (expected.stoppedEarly ? ", up to the round its run was stopped after" : ""))
        }
    }

    /// What a manifest's run ended with, for its repetition to be checked against.
    struct Expectation {
        var traceHash: String
        /// The manifest's run was stopped before its last round.
        var stoppedEarly: Bool
        /// The round it was stopped after (nil for manifests that do not say).
        var stoppedAfter: Int?
    }

    /// The scenario of a file with overrides, or of a manifest; its base directory; what a
    /// manifest's run ended with (not when overrides change the run).
    static func resolve(scenario: String?, manifest: String?, overrides: [String]) throws(ScenarioError) -> (Scenario, base: URL, expected: Expectation?) {
        var document: ScenarioDocument
        var base: URL
        var expected: Expectation?
        if let manifest {
            let record = try RunManifest.load(manifest)
            document = ScenarioDocument(root: record.scenario, source: manifest)
            base = URL(fileURLWithPath: record.baseDirectory, isDirectory: true)
            if overrides.isEmpty, let hash = record.traceHash {
                let stopped = record.completed == false
                expected = Expectation(traceHash: hash, stoppedEarly: stopped, stoppedAfter: stopped ? record.lastRound : nil)
            }
        } else {
            let path = scenario ?? ""
            document = try ScenarioDocument.load(path)
            base = URL(fileURLWithPath: path).deletingLastPathComponent()
        }
        for assignment in overrides { try document.set(assignment) }
        var system = SystemRandomNumberGenerator()
        return (try Scenario(document, drawnSeed: system.next()), base, expected)
    }

    static func catchStopSignals() {
        let handler: @convention(c) (Int32) -> Void = { signal in
            // Only async-signal-safe work here: one lock-free exchange, and `_exit` the second time.
            if stopRequested.exchange(true, ordering: .relaxed) { _exit(128 + signal) }
        }
        signal(SIGINT, handler)
        signal(SIGTERM, handler)
        // A process may start with them blocked (its parent's mask is inherited).
        var stops = sigset_t()
        sigemptyset(&stops)
        sigaddset(&stops, SIGINT)
        sigaddset(&stops, SIGTERM)
        pthread_sigmask(SIG_UNBLOCK, &stops, nil)
    }
}

/// A progress bar on standard error, drawn only when it is a terminal.
final class ProgressBar {
    private let total: Int
    private let enabled: Bool
    private var shown = -1

    init(total: Int, enabled: Bool) {
        self.total = max(1, total)
        self.enabled = enabled && isatty(STDERR_FILENO) == 1
    }

    func update(_ done: Int) {
        guard enabled else { return }
        let percent = min(100, done * 100 / total)
        guard percent != shown else { return }
        shown = percent
        let filled = percent * 30 / 100
        let bar = String(repeating: "#", count: filled) + String(repeating: " ", count: 30 - filled)
        FileHandle.standardError.write(Data("\r[\(bar)] \(percent)%  round \(done)/\(total)".utf8))
    }

    func finish() {
        guard enabled, shown >= 0 else { return }
        FileHandle.standardError.write(Data("\n".utf8))
    }
}

/// The tool's version and the commit it was built from, for manifests.
enum BuildInfo {
    static let version = "netsim 0.5.0"

    /// This executable's absolute path (as typed, `netsim` may have come through `PATH`).
    static let executable: String = {
        (try? FileManager.default.destinationOfSymbolicLink(atPath: "/proc/self/exe"))
            ?? URL(fileURLWithPath: CommandLine.arguments[0]).resolvingSymlinksInPath().path
    }()

    /// The commit of the repository the executable was built in (`.build/…/netsim`), with
    /// `-dirty` when the work tree has changes; `unknown` outside a repository.
    static let gitCommit: String = {
        var directory = URL(fileURLWithPath: executable).deletingLastPathComponent()
        while directory.path != "/" {
            if FileManager.default.fileExists(atPath: directory.appendingPathComponent(".git").path) {
                guard let head = git(["rev-parse", "HEAD"], in: directory), !head.isEmpty else { return "unknown" }
                let dirty = git(["status", "--porcelain", "--untracked-files=no"], in: directory).map { !$0.isEmpty } ?? false
                return head + (dirty ? "-dirty" : "")
            }
            directory.deleteLastPathComponent()
        }
        return "unknown"
    }()

    private static func git(_ arguments: [String], in directory: URL) -> String? {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: "/usr/bin/git")
        process.arguments = ["-C", directory.path] + arguments
        let pipe = Pipe()
        process.standardOutput = pipe
        process.standardError = FileHandle.nullDevice
        guard (try? process.run()) != nil else { return nil }
        let data = pipe.fileHandleForReading.readDataToEndOfFile()
        process.waitUntilExit()
        guard process.terminationStatus == 0 else { return nil }
        return String(decoding: data, as: UTF8.self).trimmingCharacters(in: .whitespacesAndNewlines)
    }
}
