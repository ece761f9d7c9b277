import ArgumentParser
import Foundation

/// The conventions every Murmuration command follows (see docs/cli.md): data on standard
/// output, commentary, progress and errors on standard error; one error form, `error: ...`;
/// exit status 64 for a usage error, 1 for a failure.
public enum CommandConventions {
    /// Exit status of a usage error (EX_USAGE from sysexits.h, as ArgumentParser uses).
    public static let usageExitCode: Int32 = 64

    /// Parses the process's arguments for `root`, runs the chosen command and exits: 0 after
    /// success or `--help`, 64 after a usage error, 1 (or the command's own `ExitCode`) after
    /// a failure, with the message on standard error in the `error: ...` form.
    /// `expand` may rewrite the arguments first (a config file's keys become flags); an error
    /// it throws is reported like any failure.
    public static func main<Root: ParsableCommand>(_ root: Root.Type, expand: ([String]) throws -> [String] = { $0 }) -> Never {
        do {
            let arguments = try expand(Array(CommandLine.arguments.dropFirst()))
            var command = try root.parseAsRoot(arguments)
            try command.run()
            exit(0)
        } catch {
            let code = root.exitCode(for: error)
            let message = root.fullMessage(for: error)
            if code == .success {
                // --help and --version: what the user asked for, so it is data.
                if !message.isEmpty { print(message) }
                exit(0)
            }
            if !message.isEmpty { printError(message) }
            exit(code.rawValue)
        }
    }

    /// Writes `message` to standard error as `error: message`, whatever prefix it came with.
    public static func printError(_ message: String) {
        var text = message
        for prefix in ["Error: ", "error: "] where text.hasPrefix(prefix) { text.removeFirst(prefix.count) }
        if text.hasSuffix("\n") { text.removeLast() }
        printNote("error: " + text)
    }
}

/// Writes one line of commentary or progress to standard error, unbuffered, so a script
/// watching it sees the line at once and standard output stays data only.
public func printNote(_ line: String) {
    FileHandle.standardError.write(Data((line + "\n").utf8))
}

/// A failure a person can act on: printed as `error: description`, exit status 1.
public struct CommandFailure: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

/// Refuses, before any long work, an output file given to `flag` that could not be written
/// at the end: a directory in its place, or a parent directory that is missing or read-only.
public func checkWritableFile(_ path: String, flag: String) throws {
    var isDirectory: ObjCBool = false
    if FileManager.default.fileExists(atPath: path, isDirectory: &isDirectory), isDirectory.boolValue {
        throw CommandFailure("\(flag) \(path) is a directory; name the file to write, e.g. \(path)/\(flag.drop { $0 == "-" })")
    }
    let directory = parentDirectory(of: path)
    guard access(directory, W_OK) == 0 else {
        throw CommandFailure("\(flag) \(path): directory \(directory) does not exist or is not writable")
    }
}

/// The directory part of `path`: "." for a bare file name, "/" for a file in the root.
/// (Foundation's `deletingLastPathComponent` traps on some short names on Linux.)
public func parentDirectory(of path: String) -> String {
    guard let slash = path.lastIndex(of: "/") else { return "." }
    return slash == path.startIndex ? "/" : String(path[..<slash])
}
