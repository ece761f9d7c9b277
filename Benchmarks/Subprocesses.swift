import Foundation

/// A benchmark step that could not be carried out, with what went wrong.
struct BenchFailure: Error, CustomStringConvertible {
    let description: String
    init(_ description: String) { self.description = description }
}

/// The package's own programs and the Python baselines, run from a benchmark.
enum Subprocess {
    /// The path of the package's program `name` (`peer`), built next to this benchmark.
    static func sibling(_ name: String) -> String {
        let me = Bundle.main.executableURL ?? URL(fileURLWithPath: CommandLine.arguments[0])
        return me.deletingLastPathComponent().appendingPathComponent(name).path
    }

    /// A started process of `executable`; its standard output goes to `stdout` (a pipe by
    /// default), its standard error to `stderr` (this process's by default).
    static func start(_ executable: String, _ arguments: [String], environment: [String: String]? = nil,
                      stdout: Any = Pipe(), stderr: Any? = nil) throws -> Process {
        let process = Process()
        process.executableURL = URL(fileURLWithPath: executable)
        process.arguments = arguments
        if let environment { process.environment = environment }
        process.standardOutput = stdout
        if let stderr { process.standardError = stderr }
        process.standardInput = FileHandle.nullDevice
        try process.run()
        return process
    }

    /// Everything a process started by ``start`` writes on its standard output pipe, once it ended.
    static func output(of process: Process) -> (status: Int32, stdout: String) {
        let data = (process.standardOutput as? Pipe)?.fileHandleForReading.readDataToEndOfFile() ?? Data()
        process.waitUntilExit()
        return (process.terminationStatus, String(decoding: data, as: UTF8.self))
    }

    /// Runs `peer ARGUMENTS` to its end and returns its standard output; throws when it fails
    /// (its standard error is this process's, so its message is shown).
    @discardableResult
    static func peer(_ arguments: [String], stderr: Any? = nil) throws -> String {
        let (status, stdout) = output(of: try start(sibling("peer"), arguments, stderr: stderr))
        guard status == 0 else { throw BenchFailure("peer \(arguments.joined(separator: " ")) exited with status \(status)") }
        return stdout
    }

    /// Stops `processes` with SIGTERM, all at once, and with SIGKILL those still running
    /// after `grace` seconds.
    static func stop(_ processes: [Process], grace: Double = 10) {
        for process in processes where process.isRunning { process.terminate() }
        let deadline = Date().addingTimeInterval(grace)
        while processes.contains(where: \.isRunning), Date() < deadline { usleep(20_000) }
        for process in processes where process.isRunning { kill(process.processIdentifier, SIGKILL) }
        for process in processes { process.waitUntilExit() }
    }

    /// A file for a started process's output, in `directory`.
    static func log(_ name: String, in directory: URL) throws -> FileHandle {
        let path = directory.appendingPathComponent(name).path
        guard FileManager.default.createFile(atPath: path, contents: nil), let handle = FileHandle(forWritingAtPath: path) else {
            throw BenchFailure("cannot create \(path)")
        }
        return handle
    }

    /// The first line of the file at `path` that contains `text`, once `process` wrote it;
    /// throws when the process ends first or `timeout` seconds pass.
    static func waitForLine(containing text: String, in path: String, from process: Process, timeout: Double = 30) throws -> String {
        let deadline = Date().addingTimeInterval(timeout)
        while Date() < deadline {
            let contents = (try? String(contentsOfFile: path, encoding: .utf8)) ?? ""
            if let line = contents.split(separator: "\n").first(where: { $0.contains(text) }) { return String(line) }
            guard process.isRunning else { throw BenchFailure("\(process.executableURL?.lastPathComponent ?? "a process") ended before writing '\(text)': \(contents.suffix(500))") }
            usleep(20_000)
        }
        throw BenchFailure("no line with '\(text)' in \(path) within \(Int(timeout)) s")
    }

    /// A new, empty directory under /tmp (short, for the peers' control sockets).
    static func scratchDirectory(_ prefix: String) throws -> URL {
        var template = Array("/tmp/\(prefix)-XXXXXX".utf8CString)
        guard let made = template.withUnsafeMutableBufferPointer({ $0.baseAddress.flatMap { mkdtemp($0) } }) else {
            throw BenchFailure("mkdtemp: \(String(cString: strerror(errno)))")
        }
        return URL(fileURLWithPath: String(cString: made), isDirectory: true)
    }

    /// Runs `scripts/SCRIPT` with python3 and decodes the one JSON object it prints last; nil
    /// (with a message on stderr) when python3, the script or its output fails, so a suite
    /// still reports its own figures. `environment` replaces this process's environment.
    static func pythonBaseline(_ script: String, _ arguments: [String], environment: [String: String]) -> [String: Any]? {
        let inRepository = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .appendingPathComponent("scripts/\(script)").path
        let path = FileManager.default.fileExists(atPath: "scripts/\(script)") ? "scripts/\(script)" : inRepository
        do {
            let (status, stdout) = output(of: try start("/usr/bin/env", ["python3", path] + arguments, environment: environment))
            if status == 0, let line = stdout.split(separator: "\n").last,
               let object = try? JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any] {
                return object
            }
            FileHandle.standardError.write(Data("\(script) failed (exit \(status)); its baseline is left out\n".utf8))
        } catch {
            FileHandle.standardError.write(Data("\(script) did not start (\(error)); its baseline is left out\n".utf8))
        }
        return nil
    }
}
