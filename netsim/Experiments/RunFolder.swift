import Foundation

/// What a run was and what came of it: `manifest.json` in the run's folder. `netsim run
/// --manifest` runs its scenario again and checks the trace hash; a sweep writes one per job
/// before running it (no outcome yet).
public struct RunManifest: @unchecked Sendable {
    /// The resolved scenario (``Scenario/tree``).
    public var scenario: [String: Any]
    /// Where the scenario's relative file names (edge lists, traces, data) are resolved.
    public var baseDirectory: String
    public var toolVersion: String
    public var gitCommit: String
    /// The outcome; nil before the run.
    public var traceHash: String?
    public var rows: Int?
    public var completed: Bool?
    /// The last round run (the scenario's last unless stopped): a stopped run is repeated to it.
    public var lastRound: Int?

    public init(scenario: [String: Any], baseDirectory: String, toolVersion: String, gitCommit: String) {
        self.scenario = scenario
        self.baseDirectory = baseDirectory
        self.toolVersion = toolVersion
        self.gitCommit = gitCommit
    }

    public var json: String {
        var object: [String: Any] = ["scenario": scenario, "base_directory": baseDirectory, "tool_version": toolVersion,
                                     "git_commit": gitCommit]
        if let s = scenario["seed"] { object["seed"] = s }
        if let traceHash { object["trace_hash"] = traceHash }
        if let rows { object["rows"] = rows }
        if let completed { object["completed"] = completed }
        if let lastRound { object["last_round"] = lastRound }
        let data = (try? JSONSerialization.data(withJSONObject: object, options: [.sortedKeys, .prettyPrinted, .withoutEscapingSlashes])) ?? Data()
        return String(decoding: data, as: UTF8.self) + "\n"
    }

    public static func load(_ path: String) throws(ScenarioError) -> RunManifest {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ScenarioError("--manifest \(path): cannot read it")
        }
        guard let object = (try? JSONSerialization.jsonObject(with: data)) as? [String: Any],
              let scenario = object["scenario"] as? [String: Any] else {
            throw ScenarioError("--manifest \(path): not a run manifest (a JSON object with a 'scenario' table, as netsim run writes)")
        }
        var manifest = RunManifest(scenario: scenario, baseDirectory: object["base_directory"] as? String ?? parentPath(path),
                                   toolVersion: object["tool_version"] as? String ?? "", gitCommit: object["git_commit"] as? String ?? "")
        manifest.traceHash = object["trace_hash"] as? String
        manifest.rows = object["rows"] as? Int
        manifest.completed = object["completed"] as? Bool
        manifest.lastRound = object["last_round"] as? Int
        return manifest
    }

    static func parentPath(_ path: String) -> String { URL(fileURLWithPath: path).deletingLastPathComponent().path }
}

/// A run's folder: `scenario.json` (the resolved scenario), `rounds.csv` (written as the run
/// goes) and `manifest.json` (at the end, or when the run is stopped).
public final class RunFolder {
    public let path: String
    private let csv: FileHandle

    /// Makes the folder (refusing one that already holds a run) and starts `rounds.csv`.
    public init(_ path: String, scenario: Scenario) throws(ScenarioError) {
        self.path = path
        let files = FileManager.default
        if files.fileExists(atPath: path + "/rounds.csv") {
            throw ScenarioError("--out \(path) already holds a run (rounds.csv); choose another folder or remove it")
        }
        do { try files.createDirectory(atPath: path, withIntermediateDirectories: true) } catch {
            throw ScenarioError("--out \(path): cannot create the folder (\(error.localizedDescription))")
        }
        try Self.write(scenario.json, to: path + "/scenario.json")
        guard files.createFile(atPath: path + "/rounds.csv", contents: Data((RoundRow.columns.joined(separator: ",") + "\n").utf8)),
              let handle = FileHandle(forWritingAtPath: path + "/rounds.csv") else {
            throw ScenarioError("--out \(path): cannot write rounds.csv there")
        }
        handle.seekToEndOfFile()
        csv = handle
    }

    public func append(_ row: RoundRow) { csv.write(Data((row.csv + "\n").utf8)) }

    public func finish(_ manifest: RunManifest) throws(ScenarioError) {
        csv.closeFile()
        try Self.write(manifest.json, to: path + "/manifest.json")
    }

    public static func write(_ text: String, to file: String) throws(ScenarioError) {
        do { try text.write(toFile: file, atomically: true, encoding: .utf8) } catch {
            throw ScenarioError("\(file): cannot write it (\(error.localizedDescription))")
        }
    }
}

/// A `rounds.csv` read back: its columns by name, a value per row (nil for an empty field).
public struct RoundsTable: Sendable {
    public let columns: [String]
    public let rows: [[Double?]]

    public init(csv text: String, source: String) throws(ScenarioError) {
        var lines = text.split(separator: "\n").map(String.init)
        guard !lines.isEmpty else { throw ScenarioError("\(source): empty, not a rounds.csv") }
        columns = lines.removeFirst().split(separator: ",", omittingEmptySubsequences: false).map(String.init)
        var rows: [[Double?]] = []
        for (i, line) in lines.enumerated() {
            let fields = line.split(separator: ",", omittingEmptySubsequences: false)
            guard fields.count == columns.count else {
                throw ScenarioError("\(source), line \(i + 2): \(fields.count) fields, the header has \(columns.count)")
            }
            rows.append(fields.map { Double($0) })
        }
        self.rows = rows
    }

    /// Reads `RUN/rounds.csv`, or the CSV file itself.
    public static func load(_ run: String) throws(ScenarioError) -> RoundsTable {
        var isDirectory: ObjCBool = false
        let exists = FileManager.default.fileExists(atPath: run, isDirectory: &isDirectory)
        let path = (exists && isDirectory.boolValue) || (!exists && !run.hasSuffix(".csv")) ? run + "/rounds.csv" : run
        guard let data = FileManager.default.contents(atPath: path) else {
            throw ScenarioError("\(path): cannot read it (give a run folder written by netsim run, or its rounds.csv)")
        }
        return try RoundsTable(csv: String(decoding: data, as: UTF8.self), source: path)
    }

    /// The values of `column`, row by row.
    public func values(_ column: String) -> [Double?]? {
        columns.firstIndex(of: column).map { k in rows.map { $0[k] } }
    }
}
