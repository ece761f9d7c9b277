import Foundation
import Testing

/// The `releases` section of a peer's status: the active version of `name`, and counters.
func release(_ status: [String: Any], _ name: String) -> (active: Int?, held: [Int]) {
    let releases = status["releases"] as? [String: Any]
    let model = (releases?["models"] as? [String: Any])?[name] as? [String: Any]
    return (model?["active"] as? Int, model?["held"] as? [Int] ?? [])
}

func releaseCounter(_ status: [String: Any], _ key: String) -> Int { (status["releases"] as? [String: Any])?[key] as? Int ?? 0 }

func releaseRefusals(_ status: [String: Any], _ reason: String) -> Int {
    ((status["releases"] as? [String: Any])?["refused"] as? [String: Any])?[reason] as? Int ?? 0
}

/// Model releases between real `peer join` processes: published through one peer's control
/// socket, spread by gossip, fetched in verified chunks.
@Suite("model releases over real peers", .serialized)
struct ReleaseTests {
    /// A publisher's identity in `k0`, and its ID.
    static func publisher(_ net: PeerNetwork) throws -> String {
        #expect(try CommandRunner.peer("keygen", "--dir", "k0", in: net.scratch.url).status == 0)
        let id = try CommandRunner.peer("id", "--dir", "k0", "--quiet", in: net.scratch.url)
        return id.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
    }

    /// An MLP trained for one epoch (`m1.model`) and a fine-tuning of it (`m2.model`), same size.
    static func trainModels(_ net: PeerNetwork) throws {
        let first = try CommandRunner.peer("train", "--data", "fashion-mnist", "--model", "mlp:128", "--epochs", "1", "--normalize", "standardize",
                                           "--out", "m1.model", in: net.scratch.url)
        #expect(first.status == 0, "\(first.stderr)")
        let second = try CommandRunner.peer("train", "--data", "fashion-mnist", "--model", "mlp:128", "--epochs", "1", "--init-model", "m1.model",
                                            "--lr", "0.001", "--momentum", "0", "--out", "m2.model", in: net.scratch.url)
        #expect(second.status == 0, "\(second.stderr)")
    }

    func bytes(_ net: PeerNetwork, _ path: String) -> Data? { FileManager.default.contents(atPath: net.scratch.path(path)) }

    @Test("a release published at one of eight peers reaches all eight, one started after it and one partitioned through netsim relay included; the next travels as a smaller delta; a rollback reaches all")
    func releaseReachesEveryPeer() throws {
        let net = try PeerNetwork()
        let publisher = try Self.publisher(net)
        try Self.trainModels(net)
        // Every peer behind the relay; peer 7 on its own address, cut off for the first 45 s.
        let base = 12_000 + Int(getpid() % 300) * 20
        let hosts = (0..<8).map { $0 == 7 ? "127.0.0.2" : "127.0.0.1" }
        let links = (0..<8).map { "127.0.0.1:\(base + 10 + $0)=\(hosts[$0]):\(base + $0)" }
        let healAt = 45.0
        let relayStarted = Date()
        let relay = try CommandRunner.start("netsim", ["relay", "--latency", "5", "--isolate", "127.0.0.2@0-\(Int(healAt))"] + links.flatMap { ["--link", $0] },
                                            in: net.scratch.url)
        defer { if relay.process.isRunning { kill(relay.process.processIdentifier, SIGKILL) } }
        #expect(relay.waitForStderrLine(containing: "127.0.0.1:\(base + 17) -> ") != nil, "\(relay.stderrSoFar)")
        func start(_ i: Int) throws {
            var extra = ["--advertise", "127.0.0.1:\(base + 10 + i)", "--no-beacons", "--profile", "local", "--publisher", publisher]
            if i > 0 { extra += ["--bootstrap", "127.0.0.1:\(base + 10)"] }
            try net.start(i, listen: "\(hosts[i]):\(base + i)", extra: extra, workload: [])
        }
        let late = 6, partitioned = 7
        for i in 0..<8 where i != late { try start(i) }
        let connected = Array(0..<6)
        #expect(try net.waitUntil(connected, seconds: 40) { members($0).values.filter { $0 == "alive" }.count >= 5 })

        let published = try CommandRunner.peer("publish", "m1.model", "--name", "fashion", "--version", "1", "--data-dir", "d0", in: net.scratch.url)
        #expect(published.status == 0, "\(published.stderr)")
        let hash = published.stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        #expect(hash.count == 64)
        #expect(try net.waitUntil(connected, seconds: 40) { release($0, "fashion").active == 1 })
        try start(late)
        #expect(try net.waitUntil([late], seconds: 40) { release($0, "fashion").active == 1 })
        // Still cut off: it has heard of nothing.
        let isolatedStatus = try net.status(partitioned)
        #expect(Date().timeIntervalSince(relayStarted) < healAt, "the spread took too long to see the partition")
        #expect(release(isolatedStatus, "fashion").active == nil)
        #expect(members(isolatedStatus).isEmpty)
        let everyone = Array(0..<8)
        #expect(try net.waitUntil(everyone, seconds: 120) { release($0, "fashion").active == 1 }, "statuses: \(everyone.map { (try? net.status($0)) ?? [:] })")
        let original = try #require(bytes(net, "m1.model"))
        for i in everyone {
            #expect(bytes(net, "d\(i)/releases/fashion/1.model") == original, "peer \(i)'s copy differs")
            let listed = try CommandRunner.peer("models", "--data-dir", "d\(i)", "--json", in: net.scratch.url)
            #expect(listed.stdout.contains(hash), "\(listed.stdout)")
        }

        // Version 2, a fine-tuning: peers holding version 1 fetch only its delta.
        let fileBytesBefore = try everyone.map { releaseCounter(try net.status($0), "file_bytes_received") }
        let second = try CommandRunner.peer("publish", "m2.model", "--name", "fashion", "--version", "2", "--data-dir", "d0", "--json", in: net.scratch.url)
        #expect(second.status == 0, "\(second.stderr)")
        let answer = try #require(JSONSerialization.jsonObject(with: Data(second.stdout.utf8)) as? [String: Any])
        let deltaSize = try #require(answer["delta_bytes"] as? Int)
        let fileSize = try #require(answer["bytes"] as? Int)
        #expect(deltaSize < fileSize)
        #expect(try net.waitUntil(everyone, seconds: 60) { release($0, "fashion").active == 2 })
        let tuned = try #require(bytes(net, "m2.model"))
        var moved = 0
        for i in everyone {
            let status = try net.status(i)
            #expect(bytes(net, "d\(i)/releases/fashion/2.model") == tuned, "peer \(i)'s copy of v2 differs")
            #expect(releaseCounter(status, "file_bytes_received") == fileBytesBefore[i], "peer \(i) fetched whole-file chunks for v2")
            if i != 0 { #expect(releaseCounter(status, "delta_bytes_received") == deltaSize) }
            moved += releaseCounter(status, "delta_bytes_received")
        }
        print("release v2 as a delta: \(deltaSize) bytes against \(fileSize); \(moved) bytes moved to 7 peers instead of \(7 * fileSize)")

        // A rollback takes every peer back to version 1.
        let rollback = try CommandRunner.peer("rollback", "fashion", "2", "--data-dir", "d3", in: net.scratch.url)
        expectError(rollback, status: 1, mentions: ["not a publisher"])
        #expect(try CommandRunner.peer("rollback", "fashion", "2", "--data-dir", "d0", in: net.scratch.url).status == 0)
        #expect(try net.waitUntil(everyone, seconds: 60) { release($0, "fashion").active == 1 })
        let counters = try RelayTests.stop(relay)
        #expect((counters["isolated"] as? Int ?? 0) > 0, "\(counters)")
    }

    @Test("a release from a peer that is no configured publisher, and an older version a returning peer still holds, are refused and counted; nothing is activated")
    func refusedReleases() throws {
        let net = try PeerNetwork()
        let publisher = try Self.publisher(net)
        try Self.trainModels(net)
        #expect(try CommandRunner.peer("keygen", "--dir", "k2", in: net.scratch.url).status == 0)
        let rogue = try CommandRunner.peer("id", "--dir", "k2", "--quiet", in: net.scratch.url).stdout.trimmingCharacters(in: .whitespacesAndNewlines)
        let trustPublisher = ["--publisher", publisher, "--no-beacons"]
        try net.start(0, extra: trustPublisher, workload: [])
        try net.start(1, extra: trustPublisher, workload: [])
        // Peer 2 trusts itself as well, so it publishes; the others do not trust it.
        try net.start(2, extra: trustPublisher + ["--publisher", rogue], workload: [])
        #expect(try net.waitUntil([0, 1, 2], seconds: 30) { members($0).values.filter { $0 == "alive" }.count == 2 })
        let own = try CommandRunner.peer("publish", "m1.model", "--name", "rogue", "--version", "1", "--data-dir", "d2", in: net.scratch.url)
        #expect(own.status == 0, "\(own.stderr)")
        #expect(try net.waitUntil([0, 1], seconds: 30) { releaseRefusals($0, "untrustedPublisher") >= 1 })

        // Versions 1 to 4 of a trusted model: version 1 is dropped everywhere (three are kept).
        #expect(try CommandRunner.peer("publish", "m1.model", "--name", "fashion", "--version", "1", "--data-dir", "d0", in: net.scratch.url).status == 0)
        #expect(try net.waitUntil([1], seconds: 30) { release($0, "fashion").active == 1 })
        // A device that goes offline now keeps version 1.
        let offline = net.scratch.path("d3/releases/fashion")
        try FileManager.default.createDirectory(atPath: offline, withIntermediateDirectories: true)
        for file in ["1.manifest", "1.model"] {
            try FileManager.default.copyItem(atPath: net.scratch.path("d1/releases/fashion/\(file)"), toPath: offline + "/" + file)
        }
        _ = try net.scratch.write("d3/releases/state.json", #"{"active": {"fashion": 1}, "history": []}"#)
        for version in 2...4 {
            let model = version % 2 == 0 ? "m2.model" : "m1.model"
            #expect(try CommandRunner.peer("publish", model, "--name", "fashion", "--version", "\(version)", "--data-dir", "d0", in: net.scratch.url).status == 0)
            #expect(try net.waitUntil([0, 1, 2], seconds: 30) { release($0, "fashion").active == version })
        }
        #expect(try net.waitUntil([0, 1, 2], seconds: 10) { release($0, "fashion").held == [2, 3, 4] })
        // An older version published now is refused by the peer asked to publish it.
        let older = try CommandRunner.peer("publish", "m1.model", "--name", "fashion", "--version", "1", "--data-dir", "d0", in: net.scratch.url)
        expectError(older, status: 1, mentions: ["not newer than the active version 4"])
        // The device comes back holding version 1: the others refuse it and count it; it takes version 4.
        try net.start(3, extra: trustPublisher, workload: [])
        #expect(try net.waitUntil([3], seconds: 40) { release($0, "fashion").active == 4 })
        #expect(try net.waitUntil([0, 1, 2], seconds: 30) { releaseRefusals($0, "olderThanActive") >= 1 }, "statuses: \([0, 1, 2].map { (try? net.status($0)) ?? [:] })")
        for i in 0..<3 {
            let status = try net.status(i)
            #expect(release(status, "fashion").active == 4)
            #expect(release(status, "fashion").held == [2, 3, 4])
            if i < 2 { #expect(release(status, "rogue").active == nil && release(status, "rogue").held.isEmpty) }
        }

        // A release predicts offline from a peer's files, and seeds training on local data.
        let predicted = try CommandRunner.peer("predict", "--release", "fashion", "--data-dir", "d3", "--input", "fashion-mnist", "--summary-only", in: net.scratch.url)
        #expect(predicted.status == 0 && predicted.stderr.contains("release fashion v4") && predicted.stderr.contains("accuracy 0.8"), "\(predicted.stderr)")
        expectError(try CommandRunner.peer("predict", "--release", "fashion@9", "--data-dir", "d3", "--input", "fashion-mnist", in: net.scratch.url),
                    status: 1, mentions: ["fashion v9"])
        #expect(try CommandRunner.peer("leave", "--data-dir", "d3", in: net.scratch.url).status == 0)
        _ = try net.processes[3]?.wait()
        try net.start(3, extra: trustPublisher + ["--eval-interval", "1"], workload: ["--data", "fashion-mnist", "--init-model", "fashion"])
        let fineTuning = try net.waitUntil([3], seconds: 40) { (($0["learning"] as? [String: Any])?["accuracy"] as? Double ?? 0) >= 0.8 }
        #expect(fineTuning, "a peer starting from release v4 should test at 0.8 or more at once: \((try? net.status(3))?["learning"] ?? "no status")")
    }
}
