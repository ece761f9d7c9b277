import Foundation
import Testing

/// What one run of a command left behind.
struct RunResult {
    let status: Int32
    let stdout: String
    let stderr: String

    /// The stderr lines that report an error; the conventions allow exactly one form.
    var errorLines: [Substring] { stderr.split(separator: "\n").filter { $0.hasPrefix("error: ") } }
}

/// Runs the built `peer` and `netsim` as a user would: a separate process, arguments as
/// typed, standard output and standard error kept apart.
enum CommandRunner {
    /// The directory of the built executables. `swift build --build-tests` puts them beside
    /// the test bundle (`.build/release` or `.build/debug`); a clean clone has them there once
    /// `make test` has built.
    static let binDirectory: URL = {
        let bundleDirectory = Bundle.main.executableURL?.deletingLastPathComponent()
        let packageBuild = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent(".build/release")
        return [bundleDirectory, packageBuild].compactMap { $0 }
            .first { FileManager.default.isExecutableFile(atPath: $0.appendingPathComponent("peer").path) } ?? packageBuild
    }()

    static func executable(_ name: String) -> URL { binDirectory.appendingPathComponent(name) }

    /// Starts `tool` with `arguments` in `directory`; its output goes to files in `directory`
    /// (so neither pipe can fill and stall it).
    /// `executable` overrides where the program is (a system tool wrapping ours, say).
    static func start(_ tool: String, _ arguments: [String], in directory: URL, environment: [String: String] = [:],
                      executable override: String? = nil) throws -> RunningCommand {
        let path = override.map { URL(fileURLWithPath: $0) } ?? executable(tool)
        guard FileManager.default.isExecutableFile(atPath: path.path) else {
            throw CommandNotBuilt(path: path.path)
        }
        let id = UUID().uuidString
        let out = directory.appendingPathComponent(".\(tool)-\(id).out"), err = directory.appendingPathComponent(".\(tool)-\(id).err")
        FileManager.default.createFile(atPath: out.path, contents: nil)
        FileManager.default.createFile(atPath: err.path, contents: nil)
        let process = Process()
        process.executableURL = path
        process.arguments = arguments
        process.currentDirectoryURL = directory
        process.environment = ProcessInfo.processInfo.environment.merging(environment) { $1 }
        process.standardInput = FileHandle.nullDevice
        process.standardOutput = try FileHandle(forWritingTo: out)
        process.standardError = try FileHandle(forWritingTo: err)
        try process.run()
        return RunningCommand(process: process, stdoutFile: out, stderrFile: err)
    }

    /// Runs `tool` to completion.
    static func run(_ tool: String, _ arguments: [String], in directory: URL, environment: [String: String] = [:]) throws -> RunResult {
        try start(tool, arguments, in: directory, environment: environment).wait()
    }

    static func peer(_ arguments: String..., in directory: URL) throws -> RunResult { try run("peer", arguments, in: directory) }
    static func netsim(_ arguments: String..., in directory: URL) throws -> RunResult { try run("netsim", arguments, in: directory) }
}

/// The executables were not found: the message says how to build them.
struct CommandNotBuilt: Error, CustomStringConvertible {
    let path: String
    var description: String { "\(path) is not built; run `make test` (or `swift build -c release -Xswiftc -enable-testing --build-tests`) first" }
}

/// A command started by ``CommandRunner/start(_:_:in:environment:)``.
struct RunningCommand {
    let process: Process
    let stdoutFile: URL
    let stderrFile: URL

    var stderrSoFar: String { (try? String(contentsOf: stderrFile, encoding: .utf8)) ?? "" }

    /// Waits for the first stderr line containing `marker` while the command runs; nil if it
    /// exits without printing one. The command's own --timeout bounds the wait.
    func waitForStderrLine(containing marker: String) -> String? {
        while true {
            if let line = stderrSoFar.split(separator: "\n").first(where: { $0.contains(marker) }) { return String(line) }
            guard process.isRunning else { return nil }
            usleep(20_000)
        }
    }

    func wait() throws -> RunResult {
        process.waitUntilExit()
        let stdout = try String(contentsOf: stdoutFile, encoding: .utf8)
        let stderr = try String(contentsOf: stderrFile, encoding: .utf8)
        try? FileManager.default.removeItem(at: stdoutFile)
        try? FileManager.default.removeItem(at: stderrFile)
        return RunResult(status: process.terminationStatus, stdout: stdout, stderr: stderr)
    }
}

/// A fresh directory for one test, removed when the test ends.
final class Scratch {
    let url: URL

    init() throws {
        url = FileManager.default.temporaryDirectory.appendingPathComponent("murmuration-cli-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: url, withIntermediateDirectories: true)
    }

    deinit { try? FileManager.default.removeItem(at: url) }

    func path(_ name: String) -> String { url.appendingPathComponent(name).path }

    /// Writes `text` to `name` in the directory; returns its path.
    @discardableResult
    func write(_ name: String, _ text: String) throws -> String {
        try text.write(toFile: path(name), atomically: true, encoding: .utf8)
        return path(name)
    }
}

/// Checks a usage error or failure by the conventions: the exit status, nothing on stdout,
/// one `error:` line naming what is wrong (every piece of `mentions` appears in it).
func expectError(_ result: RunResult, status: Int32, mentions: [String], sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(result.status == status, "exit status \(result.status), expected \(status); stderr: \(result.stderr)", sourceLocation: sourceLocation)
    #expect(result.stdout.isEmpty, "stdout must stay data only, got: \(result.stdout)", sourceLocation: sourceLocation)
    #expect(result.errorLines.count == 1, "expected one `error:` line, stderr: \(result.stderr)", sourceLocation: sourceLocation)
    #expect(!result.stderr.contains("Error:"), "the capitalised ArgumentParser form leaked: \(result.stderr)", sourceLocation: sourceLocation)
    let message = result.errorLines.first.map(String.init) ?? ""
    for piece in mentions {
        #expect(message.contains(piece), "'\(message)' should mention '\(piece)'", sourceLocation: sourceLocation)
    }
}
