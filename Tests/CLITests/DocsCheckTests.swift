import Foundation
import Testing

/// Runs the examples the documentation shows, so a command that stops working fails here.
/// A fenced block whose info string is `sh check` is run with bash (`set -euo pipefail`),
/// the blocks of one file in order, in one empty directory that is also `HOME`, with the
/// built `peer` and `netsim` first on the `PATH`.
@Suite("documented commands")
struct DocsCheckTests {
    static let packageRoot = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent().deletingLastPathComponent()

    /// The `sh check` blocks of a Markdown file, in order.
    static func checkedBlocks(in markdown: String) -> [String] {
        var blocks: [String] = []
        var current: [Substring]?
        for line in markdown.split(separator: "\n", omittingEmptySubsequences: false) {
            let fence = line.trimmingCharacters(in: .whitespaces)
            if let lines = current {
                if fence == "```" {
                    blocks.append(lines.joined(separator: "\n"))
                    current = nil
                } else {
                    current = lines + [line]
                }
            } else if fence == "```sh check" {
                current = []
            }
        }
        return blocks
    }

    @Test("the checked examples of each document run", arguments: ["README.md", "docs/cli.md", "docs/researchers.md", "docs/deployment.md"])
    func examplesRun(document: String) throws {
        let markdown = try String(contentsOf: Self.packageRoot.appendingPathComponent(document), encoding: .utf8)
        let blocks = Self.checkedBlocks(in: markdown)
        #expect(!blocks.isEmpty, "\(document) has no `sh check` block")
        let scratch = try Scratch()
        let path = CommandRunner.binDirectory.path + ":" + (ProcessInfo.processInfo.environment["PATH"] ?? "/usr/bin:/bin")
        for block in blocks {
            let bash = Process()
            bash.executableURL = URL(fileURLWithPath: "/bin/bash")
            bash.arguments = ["-euo", "pipefail", "-c", block]
            bash.currentDirectoryURL = scratch.url
            bash.environment = ProcessInfo.processInfo.environment.merging(["PATH": path, "HOME": scratch.url.path]) { $1 }
            let log = scratch.url.appendingPathComponent(".block.log")
            FileManager.default.createFile(atPath: log.path, contents: nil)
            let handle = try FileHandle(forWritingTo: log)
            bash.standardOutput = handle
            bash.standardError = handle
            bash.standardInput = FileHandle.nullDevice
            try bash.run()
            bash.waitUntilExit()
            try handle.close()
            let output = try String(contentsOf: log, encoding: .utf8)
            #expect(bash.terminationStatus == 0, "a checked example in \(document) failed (status \(bash.terminationStatus)):\n\(block)\n--- output:\n\(output)")
        }
    }

    @Test("only fenced `sh check` blocks are taken")
    func blockExtraction() {
        let markdown = "text\n```sh check\npeer id\nnetsim --help\n```\n```sh\nnot run\n```\n  ```sh check\nsecond\n  ```\n"
        #expect(Self.checkedBlocks(in: markdown) == ["peer id\nnetsim --help", "second"])
    }
}
