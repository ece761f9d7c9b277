import Foundation

/// How long a release of the MLP takes to reach every one of 8 real `peer join` processes on
/// loopback (`--profile local --no-beacons`, bootstrapped to peer 0, which publishes): version
/// 1 as a whole file, then a one-epoch fine-tuning of it as version 2, which travels as a
/// delta. Each time runs from the `peer publish` command to the moment the last peer activated
/// the release, as that peer's own release history records it (milliseconds); status polls
/// every 100 ms (all peers at once) only tell when every peer has it.
enum ReleaseSpreadBench {
    static let peerCount = 8
    static let modelName = "mlp"
    static let pollInterval = 0.1
    /// Longest wait for the peers to see each other, and for a release to reach them all.
    static let timeout = 120.0

    /// One release's spread: seconds until the last peer activated it, and until a status
    /// poll saw that; the bytes the other peers received (whole-file chunks and deltas); and
    /// what `peer publish --json` answered.
    struct Spread {
        let seconds: Double
        let polledSeconds: Double
        let fileBytes: Int
        let deltaBytes: Int
        let published: [String: Any]
    }

    /// Trains version 2 from `modelFile` (version 1), starts the peers, publishes both,
    /// adds the figures to `report` and returns the Markdown table of docs/benchmarks.md.
    static func run(modelFile: String, scratch: URL, into report: inout BenchReport) throws -> String {
        let secondFile = scratch.appendingPathComponent("mlp-v2.model").path
        try Subprocess.peer(["train", "--data", "fashion-mnist", "--model", "mlp:128", "--epochs", "1", "--init-model", modelFile,
                             "--lr", "0.001", "--momentum", "0", "--out", secondFile], stderr: try Subprocess.log("train.log", in: scratch))
        let network = Network(scratch)
        try network.start()
        defer { network.stop() }
        let first = try network.spread(modelFile, version: 1)
        let second = try network.spread(secondFile, version: 2)

        let peers = "\(peerCount) peer join processes on loopback, --profile local --no-beacons, published at peer 0; from peer publish to the last activation the peers recorded"
        let firstBytes = first.published["bytes"] as? Int ?? 0
        let deltaBytes = second.published["delta_bytes"] as? Int
        report.add(BenchFigure(name: "release v1 (full file) reaches all \(peerCount) peers", value: first.seconds, unit: "s",
                               note: "\(peers) (polls saw it after \(String(format: "%.2f", first.polledSeconds)) s); \(firstBytes) bytes, \(first.fileBytes) file bytes received by the other \(peerCount - 1)"))
        report.add(BenchFigure(name: "release v2 (delta) reaches all \(peerCount) peers", value: second.seconds, unit: "s",
                               baseline: first.seconds, ratio: first.seconds / second.seconds,
                               note: "\(peers) (polls saw it after \(String(format: "%.2f", second.polledSeconds)) s); delta of \(deltaBytes.map(String.init) ?? "none") bytes against v1; baseline: v1, the full file"))
        let secondMoved = second.fileBytes + second.deltaBytes
        report.add(BenchFigure(name: "release v2 bytes received by the other \(peerCount - 1) peers", value: Double(secondMoved), unit: "bytes",
                               baseline: Double(first.fileBytes), ratio: Double(first.fileBytes) / Double(max(secondMoved, 1)),
                               note: "\(second.deltaBytes) as deltas, \(second.fileBytes) as whole-file chunks; baseline: v1"))
        return """
        | release to all \(peerCount) peers | file | sent as | bytes received by the other \(peerCount - 1) | time |
        |---|---:|---|---:|---:|
        | v1, full | \(DeploymentBench.grouped(firstBytes)) B | whole file | \(DeploymentBench.grouped(first.fileBytes + first.deltaBytes)) | \(String(format: "%.2f s", first.seconds)) |
        | v2, incremental | \(DeploymentBench.grouped(second.published["bytes"] as? Int ?? 0)) B | delta of \(deltaBytes.map { DeploymentBench.grouped($0) } ?? "none") B | \(DeploymentBench.grouped(secondMoved)) | \(String(format: "%.2f s", second.seconds)) |
        """
    }

    /// The peers: their keys, data directories and processes under `scratch`.
    final class Network {
        let scratch: URL
        private(set) var processes: [Process] = []

        init(_ scratch: URL) { self.scratch = scratch }

        func path(_ name: String) -> String { scratch.appendingPathComponent(name).path }
        func dataDirectory(_ peer: Int) -> String { path("d\(peer)") }

        /// A network key, the publisher's identity, then every peer; returns once each sees
        /// all the others alive.
        func start() throws {
            try Subprocess.peer(["network-key", "new", "--out", path("net.key")], stderr: FileHandle.nullDevice)
            try Subprocess.peer(["keygen", "--dir", path("k0")], stderr: FileHandle.nullDevice)
            let publisher = try Subprocess.peer(["id", "--dir", path("k0"), "--quiet"]).trimmingCharacters(in: .whitespacesAndNewlines)
            var bootstrap: [String] = []
            for i in 0..<peerCount {
                let process = try Subprocess.start(Subprocess.sibling("peer"), [
                    "join", "--dir", path("k\(i)"), "--network-key", path("net.key"), "--listen", "127.0.0.1:0",
                    "--data-dir", dataDirectory(i), "--profile", "local", "--no-beacons", "--publisher", publisher,
                ] + bootstrap, stdout: FileHandle.nullDevice, stderr: try Subprocess.log("peer\(i).log", in: scratch))
                processes.append(process)
                // "... listening on HOST:PORT, UDP and TCP ..."
                let line = try Subprocess.waitForLine(containing: "listening on ", in: path("peer\(i).log"), from: process)
                if i == 0, let address = line.components(separatedBy: "listening on ").last?.split(separator: ",").first {
                    bootstrap = ["--bootstrap", String(address)]
                }
            }
            let deadline = Date().addingTimeInterval(timeout)
            while true {
                let all = try statuses(Array(0..<peerCount))
                if all.count == peerCount, all.values.allSatisfy({ alivePeers($0) >= peerCount - 1 }) { return }
                guard Date() < deadline else { throw BenchFailure("the \(peerCount) peers did not all see each other within \(Int(timeout)) s") }
                usleep(UInt32(pollInterval * 1e6))
            }
        }

        func stop() { Subprocess.stop(processes) }

        /// Publishes `file` as `version` at peer 0 and polls until every peer has it active.
        func spread(_ file: String, version: Int) throws -> Spread {
            let before = try statuses(Array(0..<peerCount))
            let start = Date()
            func elapsed() -> Double { Date().timeIntervalSince(start) }
            let answer = try Subprocess.peer(["publish", file, "--name", modelName, "--version", String(version), "--data-dir", dataDirectory(0), "--json"],
                                             stderr: FileHandle.nullDevice)
            guard let published = try? JSONSerialization.jsonObject(with: Data(answer.utf8)) as? [String: Any] else {
                throw BenchFailure("peer publish answered '\(answer)', not a JSON object")
            }
            var waiting = Set(0..<peerCount)
            while !waiting.isEmpty {
                guard elapsed() < timeout else { throw BenchFailure("release v\(version) reached \(peerCount - waiting.count) of \(peerCount) peers in \(Int(timeout)) s") }
                let roundStart = elapsed()
                for (peer, status) in try statuses(waiting.sorted()) where activeVersion(status) == version { waiting.remove(peer) }
                let round = elapsed() - roundStart
                if !waiting.isEmpty, round < pollInterval { usleep(UInt32((pollInterval - round) * 1e6)) }
            }
            let polled = elapsed()
            let activations = try (0..<peerCount).map { try activation(of: version, at: $0) }
            let seconds = (activations.max() ?? start).timeIntervalSince(start)
            let after = try statuses(Array(0..<peerCount))
            func received(_ counter: String) -> Int {
                (0..<peerCount).reduce(0) { $0 + releaseCounter(after[$1], counter) - releaseCounter(before[$1], counter) }
            }
            return Spread(seconds: seconds, polledSeconds: polled, fileBytes: received("file_bytes_received"),
                          deltaBytes: received("delta_bytes_received"), published: published)
        }

        /// When `peer` activated `version`, by its release history (`peer models --json`).
        func activation(of version: Int, at peer: Int) throws -> Date {
            let listing = try Subprocess.peer(["models", "--data-dir", dataDirectory(peer), "--json"])
            let models = (try? JSONSerialization.jsonObject(with: Data(listing.utf8)) as? [String: Any])?["models"] as? [[String: Any]]
            let history = models?.first { $0["name"] as? String == modelName }?["history"] as? [[String: Any]] ?? []
            guard let at = history.last(where: { $0["version"] as? Int == version && $0["event"] as? String == "activated" })?["at"] as? Double else {
                throw BenchFailure("peer \(peer) is running v\(version) of \(modelName) but its history records no activation of it")
            }
            return Date(timeIntervalSince1970: at / 1000)
        }

        /// `peer status --json` of `peers`, asked all at once; a peer that does not answer is left out.
        func statuses(_ peers: [Int]) throws -> [Int: [String: Any]] {
            let asked = try peers.map { peer in
                (peer, try Subprocess.start(Subprocess.sibling("peer"), ["status", "--data-dir", dataDirectory(peer), "--json"], stderr: FileHandle.nullDevice))
            }
            var answers: [Int: [String: Any]] = [:]
            for (peer, process) in asked {
                let (status, stdout) = Subprocess.output(of: process)
                if status == 0, let object = try? JSONSerialization.jsonObject(with: Data(stdout.utf8)) as? [String: Any] { answers[peer] = object }
            }
            return answers
        }

        func alivePeers(_ status: [String: Any]) -> Int {
            (status["members"] as? [[String: Any]] ?? []).filter { $0["state"] as? String == "alive" }.count
        }

        func activeVersion(_ status: [String: Any]) -> Int? {
            let models = (status["releases"] as? [String: Any])?["models"] as? [String: Any]
            return (models?[modelName] as? [String: Any])?["active"] as? Int
        }

        func releaseCounter(_ status: [String: Any]?, _ counter: String) -> Int {
            (status?["releases"] as? [String: Any])?[counter] as? Int ?? 0
        }
    }
}
