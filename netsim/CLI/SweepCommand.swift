import ArgumentParser
import CommandSupport
import Foundation
import Experiments

/// `netsim sweep`: a grid of parameter values and seeds, one `netsim run` per point.
struct SweepCommand: ParsableCommand {
    static let configuration = CommandConfiguration(
        commandName: "sweep",
        abstract: "Run a scenario over a grid of parameters and seeds in parallel processes, then summarise across seeds.",
        discussion: """
        Every job is a folder DIR/runs/job-N with its manifest; DIR/jobs.csv lists the jobs and \
        their values. Without --emit, the jobs run here (--jobs at a time) and the summary (the \
        last row of each run, mean and standard deviation across seeds) is written to \
        DIR/summary.csv and DIR/summary.md and printed as Markdown. With --emit slurm or \
        --emit parallel, the jobs are written as a Slurm job array (DIR/sweep.slurm, submit with \
        sbatch) or a GNU parallel job file (DIR/jobs.parallel, run with parallel < FILE), one \
        `netsim run --manifest` per job; `netsim sweep --collect DIR` then builds the summary.
        Example:
          netsim sweep netsim/scenarios/pushsum-loss.toml --out sweep --grid links.loss=0,0.2,0.4 --seeds 1-3 --jobs 2
        """)

    @Argument(help: "The scenario file.") var scenario: String?
    @Option(help: "The sweep's folder.") var out: String?
    @Option(help: "KEY=V1,V2,...: values of a scenario key to sweep (repeatable: the grid is every combination).") var grid: [String] = []
    @Option(help: "Seeds of every grid point: a list (1,2,3) or a range (1-5). Default: the scenario's seed.") var seeds: String?
    @Option(name: .customLong("set"), help: "KEY=VALUE: override a scenario key in every job (repeatable).") var overrides: [String] = []
    @Option(parsing: .unconditional, help: "Jobs run at once (processes).") var jobs = 2
    @Option(help: "Write the jobs for a cluster engine instead of running them: slurm or parallel.") var emit: String?
    @Option(help: "Summarise the finished runs of a sweep folder (after --emit).") var collect: String?

    func validate() throws {
        if collect != nil {
            guard scenario == nil, out == nil else { throw ValidationError("--collect DIR takes no SCENARIO or --out") }
            return
        }
        guard scenario != nil, out != nil else { throw ValidationError("give a SCENARIO and --out DIR (or --collect DIR)") }
        guard jobs >= 1 else { throw ValidationError("--jobs must be at least 1, got \(jobs)") }
        if let emit, !["slurm", "parallel"].contains(emit) { throw ValidationError("--emit is slurm or parallel, got '\(emit)'") }
        for assignment in overrides {
            do { _ = try ScenarioDocument.split(assignment) } catch { throw ValidationError(error.description) }
        }
        for g in grid { _ = try Self.axis(g) }
        if let seeds { _ = try Self.seedList(seeds) }
    }

    /// `KEY=V1,V2,...`.
    static func axis(_ text: String) throws -> (key: String, values: [String]) {
        guard let equals = text.firstIndex(of: "="), equals != text.startIndex else {
            throw ValidationError("--grid expects KEY=V1,V2,... (e.g. links.loss=0,0.2,0.4), got '\(text)'")
        }
        let values = text[text.index(after: equals)...].split(separator: ",").map(String.init)
        guard !values.isEmpty else { throw ValidationError("--grid \(text): no values after '='") }
        return (String(text[..<equals]), values)
    }

    static func seedList(_ text: String) throws -> [UInt64] {
        let parts = text.split(separator: "-")
        if parts.count == 2, let low = UInt64(parts[0]), let high = UInt64(parts[1]), low <= high, high - low < 10_000 {
            return Array(low...high)
        }
        let list = text.split(separator: ",").map { UInt64($0) }
        guard !list.isEmpty, list.allSatisfy({ $0 != nil }) else {
            throw ValidationError("--seeds is a list (1,2,3) or a range (1-5) of whole numbers, got '\(text)'")
        }
        return list.compactMap { $0 }
    }

    func run() throws {
        if let collect { return try Self.summarise(collect) }
        guard let scenario, let out else { return }
        let axes = try grid.map(Self.axis)
        var points: [[(String, String)]] = [[]]
        for axis in axes { points = points.flatMap { p in axis.values.map { p + [(axis.key, $0)] } } }
        let seedValues: [UInt64?] = try seeds.map { try Self.seedList($0).map { Optional($0) } } ?? [nil]

        // Every job is resolved (and refused, naming the key) before any runs.
        var jobList: [(folder: String, values: [(String, String)], seed: UInt64)] = []
        var manifests: [RunManifest] = []
        for point in points {
            for seed in seedValues {
                var assignments = overrides + point.map { "\($0.0)=\($0.1)" }
                if let seed { assignments.append("seed=\(seed)") }
                let resolved: (Scenario, base: URL, expected: RunCommand.Expectation?)
                do {
                    resolved = try RunCommand.resolve(scenario: scenario, manifest: nil, overrides: assignments)
                    _ = try ScenarioRunner(resolved.0, baseDirectory: resolved.base)
                } catch {
                    let job = point.isEmpty ? "" : "job \(point.map { "\($0.0)=\($0.1)" }.joined(separator: " ")): "
                    throw CommandFailure(job + error.description)
                }
                let folder = "\(out)/runs/job-\(String(format: "%03d", jobList.count))"
                jobList.append((folder, point, resolved.0.seed))
                manifests.append(RunManifest(scenario: resolved.0.tree, baseDirectory: resolved.base.path,
                                             toolVersion: BuildInfo.version, gitCommit: BuildInfo.gitCommit))
            }
        }
        if FileManager.default.fileExists(atPath: out + "/jobs.csv") {
            throw CommandFailure("--out \(out) already holds a sweep (jobs.csv); choose another folder or remove it")
        }
        do {
            for (job, manifest) in zip(jobList, manifests) {
                try FileManager.default.createDirectory(atPath: job.folder, withIntermediateDirectories: true)
                try RunFolder.write(manifest.json, to: job.folder + "/manifest.json")
            }
            var table = (["job", "folder"] + axes.map(\.key) + ["seed"]).joined(separator: ",") + "\n"
            for (k, job) in jobList.enumerated() {
                table += (["\(k)", job.folder] + job.values.map(\.1) + ["\(job.seed)"]).joined(separator: ",") + "\n"
            }
            try RunFolder.write(table, to: out + "/jobs.csv")
        } catch let error as ScenarioError {
            throw CommandFailure(error.description)
        } catch {
            throw CommandFailure("--out \(out): cannot write the jobs (\(error.localizedDescription))")
        }

        let netsim = BuildInfo.executable
        // Absolute folders: a cluster engine starts the jobs from a directory of its own.
        let commands = jobList.map { job in
            let folder = URL(fileURLWithPath: job.folder).standardizedFileURL.path
            return "\(Self.quote(netsim)) run --manifest \(Self.quote(folder + "/manifest.json")) --out \(Self.quote(folder)) --quiet"
        }
        if let emit {
            try Self.emit(emit, commands: commands, out: out)
            return
        }
        printNote("sweep: \(jobList.count) jobs, \(jobs) at a time")
        let failed = Self.runAll(jobList.map(\.folder), netsim: netsim, parallel: jobs)
        try Self.summarise(out)
        if !failed.isEmpty {
            throw CommandFailure("\(failed.count) of \(jobList.count) jobs failed: \(failed.joined(separator: ", ")) (see log.txt in each)")
        }
    }

    static func quote(_ text: String) -> String { "'" + text.replacingOccurrences(of: "'", with: "'\\''") + "'" }

    static func emit(_ engine: String, commands: [String], out: String) throws {
        do {
            if engine == "parallel" {
                try RunFolder.write(commands.joined(separator: "\n") + "\n", to: out + "/jobs.parallel")
                printNote("wrote \(out)/jobs.parallel: run it with `parallel --jobs N < \(out)/jobs.parallel`, then `netsim sweep --collect \(out)`")
            } else {
                var script = """
                #!/bin/bash
                #SBATCH --job-name=netsim-sweep
                #SBATCH --array=0-\(commands.count - 1)
                #SBATCH --cpus-per-task=1
                #SBATCH --output=\(out)/runs/slurm-%a.log
                # One netsim run per array task; afterwards: netsim sweep --collect \(out)
                case "$SLURM_ARRAY_TASK_ID" in

                """
                for (k, command) in commands.enumerated() { script += "  \(k)) \(command) ;;\n" }
                script += "  *) echo \"no job $SLURM_ARRAY_TASK_ID\" >&2; exit 1 ;;\nesac\n"
                try RunFolder.write(script, to: out + "/sweep.slurm")
                printNote("wrote \(out)/sweep.slurm: submit it with `sbatch \(out)/sweep.slurm`, then `netsim sweep --collect \(out)`")
            }
        } catch {
            throw CommandFailure(error.description)
        }
    }

    /// Runs each job's `netsim run --manifest` as a process, `parallel` at once; returns the
    /// folders of the jobs that failed.
    static func runAll(_ folders: [String], netsim: String, parallel: Int) -> [String] {
        var failed: [String] = []
        var running: [(Process, String)] = []
        var next = 0
        var done = 0
        while done < folders.count {
            while running.count < parallel, next < folders.count {
                let folder = folders[next]
                next += 1
                let process = Process()
                process.executableURL = URL(fileURLWithPath: netsim)
                process.arguments = ["run", "--manifest", folder + "/manifest.json", "--out", folder, "--quiet"]
                _ = FileManager.default.createFile(atPath: folder + "/log.txt", contents: nil)
                process.standardError = FileHandle(forWritingAtPath: folder + "/log.txt")
                process.standardOutput = FileHandle.nullDevice
                do { try process.run() } catch {
                    printNote("sweep: cannot start \(netsim) for \(folder): \(error.localizedDescription)")
                    failed.append(folder)
                    done += 1
                    continue
                }
                running.append((process, folder))
            }
            guard let finished = running.firstIndex(where: { !$0.0.isRunning }) else {
                usleep(20_000)
                continue
            }
            let (process, folder) = running.remove(at: finished)
            if process.terminationStatus != 0 { failed.append(folder) }
            done += 1
            printNote("sweep: \(done)/\(folders.count) done\(process.terminationStatus != 0 ? " (\(folder) failed)" : "")")
        }
        return failed
    }

    /// Builds DIR/summary.csv and DIR/summary.md from the last rows of the jobs that ran to the
    /// end, grouped by grid point across seeds, and prints the Markdown table.
    static func summarise(_ directory: String) throws {
        guard let data = FileManager.default.contents(atPath: directory + "/jobs.csv") else {
            throw CommandFailure("\(directory): no jobs.csv; is it a folder written by netsim sweep?")
        }
        var lines = String(decoding: data, as: UTF8.self).split(separator: "\n").map { $0.split(separator: ",", omittingEmptySubsequences: false).map(String.init) }
        guard let header = lines.first, header.count >= 3 else { throw CommandFailure("\(directory)/jobs.csv: no header") }
        lines.removeFirst()
        let keys = Array(header[2..<(header.count - 1)])
        let metrics = ["consensus_error", "target_error", "accuracy_mean", "accuracy_min", "accuracy_max", "loss", "bytes_sent",
                       "messages_sent", "messages_dropped", "live_nodes"]
        var groups: [(values: [String], finals: [[Double?]])] = []
        var missing: [String] = []
        for job in lines where job.count == header.count {
            let folder = job[1]
            let values = Array(job[2..<(job.count - 1)])
            // A run stopped early (or not run yet) would bring a row from before its end.
            guard (try? RunManifest.load(folder + "/manifest.json"))?.completed == true,
                  let table = try? RoundsTable.load(folder), let last = table.rows.last else {
                missing.append(folder)
                continue
            }
            let final = metrics.map { m in table.columns.firstIndex(of: m).flatMap { last[$0] } }
            if let g = groups.firstIndex(where: { $0.values == values }) { groups[g].finals.append(final) } else { groups.append((values, [final])) }
        }
        if !missing.isEmpty { printNote("no finished run yet in \(missing.count) job(s): \(missing.joined(separator: ", "))") }
        var csv = (keys + ["seeds"] + metrics.flatMap { ["\($0)_mean", "\($0)_std"] }).joined(separator: ",") + "\n"
        var md = "| " + (keys + ["seeds"] + metrics).joined(separator: " | ") + " |\n|" + String(repeating: " --- |", count: keys.count + 1 + metrics.count) + "\n"
        for group in groups {
            var csvFields = group.values + ["\(group.finals.count)"]
            var mdFields = group.values + ["\(group.finals.count)"]
            for m in metrics.indices {
                let xs = group.finals.compactMap { $0[m] }
                guard !xs.isEmpty else {
                    csvFields += ["", ""]
                    mdFields.append("")
                    continue
                }
                let mean = xs.reduce(0, +) / Double(xs.count)
                let std = xs.count > 1 ? (xs.reduce(0) { $0 + ($1 - mean) * ($1 - mean) } / Double(xs.count - 1)).squareRoot() : 0
                csvFields += ["\(mean)", "\(std)"]
                mdFields.append(String(format: "%.4g ± %.2g", mean, std))
            }
            csv += csvFields.joined(separator: ",") + "\n"
            md += "| " + mdFields.joined(separator: " | ") + " |\n"
        }
        do {
            try RunFolder.write(csv, to: directory + "/summary.csv")
            try RunFolder.write(md, to: directory + "/summary.md")
        } catch { throw CommandFailure(error.description) }
        print(md, terminator: "")
    }
}
