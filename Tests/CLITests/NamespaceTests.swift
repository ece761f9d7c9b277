import Foundation
import Testing

/// Whether this machine can make network namespaces with kernel packet loss: root, iproute2
/// and nftables (`make deps` installs both; CI runs as root).
let namespacesAvailable: Bool = geteuid() == 0
    && (FileManager.default.isExecutableFile(atPath: "/usr/sbin/ip") || FileManager.default.isExecutableFile(atPath: "/sbin/ip"))
let nftAvailable = FileManager.default.isExecutableFile(atPath: "/usr/sbin/nft")

/// Runs a system command; throws with its output if it fails.
@discardableResult
func system(_ arguments: [String]) throws -> String {
    let process = Process()
    process.executableURL = URL(fileURLWithPath: "/usr/bin/env")
    process.arguments = arguments
    let pipe = Pipe()
    process.standardOutput = pipe
    process.standardError = pipe
    try process.run()
    let output = String(decoding: pipe.fileHandleForReading.readDataToEndOfFile(), as: UTF8.self)
    process.waitUntilExit()
    guard process.terminationStatus == 0 else {
        throw CommandFailed(command: arguments.joined(separator: " "), output: output)
    }
    return output
}

struct CommandFailed: Error, CustomStringConvertible {
    let command: String
    let output: String
    var description: String { "\(command) failed: \(output)" }
}

/// Three hosts in their own network namespaces, joined by a bridge in a fourth, each dropping
/// `lossPercent` % of the packets it sends (nftables, in the kernel). Addresses are in
/// 198.18.0.0/24 (the benchmarking range), on these namespaces only.
final class TestHosts {
    let count: Int
    let tag = "murm\(getpid() % 10_000)"

    init(count: Int, lossPercent: Int) throws {
        self.count = count
        do {
            try system(["ip", "netns", "add", "\(tag)-br"])
            try system(["ip", "-n", "\(tag)-br", "link", "add", "br0", "type", "bridge"])
            try system(["ip", "-n", "\(tag)-br", "link", "set", "br0", "up"])
            for i in 1...count {
                let host = "\(tag)-h\(i)"
                try system(["ip", "netns", "add", host])
                try system(["ip", "link", "add", "\(tag)v\(i)", "type", "veth", "peer", "name", "\(tag)e\(i)"])
                try system(["ip", "link", "set", "\(tag)v\(i)", "netns", host])
                try system(["ip", "link", "set", "\(tag)e\(i)", "netns", "\(tag)-br"])
                try system(["ip", "-n", "\(tag)-br", "link", "set", "\(tag)e\(i)", "master", "br0", "up"])
                try system(["ip", "-n", host, "addr", "add", "\(address(i))/24", "dev", "\(tag)v\(i)"])
                try system(["ip", "-n", host, "link", "set", "\(tag)v\(i)", "up", "multicast", "on"])
                try system(["ip", "-n", host, "link", "set", "lo", "up"])
                try system(["ip", "-n", host, "route", "add", "224.0.0.0/4", "dev", "\(tag)v\(i)"])
                try system(["ip", "netns", "exec", host, "nft", "add", "table", "inet", "t"])
                try system(["ip", "netns", "exec", host, "nft", "add", "chain", "inet", "t", "out", "{ type filter hook output priority 0 ; }"])
                try system(["ip", "netns", "exec", host, "nft", "add", "rule", "inet", "t", "out", "numgen", "random", "mod", "100", "<", "\(lossPercent)", "drop"])
            }
        } catch {
            remove()
            throw error
        }
    }

    func address(_ i: Int) -> String { "198.18.0.\(i)" }
    func namespace(_ i: Int) -> String { "\(tag)-h\(i)" }

    func remove() {
        for i in 1...count { _ = try? system(["ip", "netns", "del", "\(tag)-h\(i)"]) }
        _ = try? system(["ip", "netns", "del", "\(tag)-br"])
    }

    deinit { remove() }
}

@Suite("real hosts: network namespaces with kernel packet loss", .serialized)
struct NamespaceTests {
    @Test("three hosts with 20 % kernel packet loss and no bootstrap address find each other by multicast and converge exactly",
          .enabled(if: namespacesAvailable && nftAvailable, "needs root, iproute2 and nftables (make deps installs them; CI runs as root): skipped here"))
    func lossyHostsConverge() throws {
        let hosts = try TestHosts(count: 3, lossPercent: 20)
        let scratch = try Scratch()
        #expect(try CommandRunner.peer("network-key", "new", "--out", "net.key", in: scratch.url).status == 0)
        var processes: [RunningCommand] = []
        defer { for p in processes where p.process.isRunning { kill(p.process.processIdentifier, SIGKILL) } }
        let peer = CommandRunner.executable("peer").path
        var vectors: [[Double]] = [], samples: [Double] = []
        for i in 1...3 {
            let vector = (0..<3).map { Double(i * 5 + $0) }
            vectors.append(vector)
            samples.append(Double(i))
            try scratch.write("v\(i).txt", vector.map { String($0) }.joined(separator: ","))
            processes.append(try CommandRunner.start("peer", [
                "ip", "netns", "exec", hosts.namespace(i), peer, "join", "--dir", "k\(i)", "--network-key", "net.key",
                "--listen", "\(hosts.address(i)):7946", "--data-dir", "d\(i)", "--profile", "local",
                "--vector", "v\(i).txt", "--samples", "\(i)",
            ], in: scratch.url, executable: "/usr/bin/env"))
        }
        let mean = (0..<3).map { k in zip(vectors, samples).reduce(0.0) { $0 + $1.0[k] * $1.1 } / samples.reduce(0, +) }
        let deadline = Date().addingTimeInterval(90)
        var statuses: [[String: Any]] = []
        var done = false
        while Date() < deadline, !done {
            usleep(500_000)
            statuses = (1...3).compactMap { i in
                (try? CommandRunner.peer("status", "--data-dir", "d\(i)", "--json", in: scratch.url))
                    .flatMap { try? JSONSerialization.jsonObject(with: Data($0.stdout.utf8)) as? [String: Any] }
            }
            done = statuses.count == 3 && statuses.allSatisfy { members($0).values.filter { $0 == "alive" }.count == 2 && relativeError($0, to: mean) <= 1e-6 }
        }
        #expect(done, "statuses: \(statuses), logs: \(processes.map(\.stderrSoFar))")
        #expect(statuses.allSatisfy { $0["beacons"] as? Bool == true })
    }
}
