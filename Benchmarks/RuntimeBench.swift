import Crypto
import DeterministicRandom
import Foundation
import Gossip

/// `murmur-bench runtime`: real peers through the whole stack.
///
/// - Throughput: two ``NodeRuntime``s on loopback, each on its own thread with its own loop,
///   averaging 1,048,576-element vectors with a 1 ms tick: every transfer is a 4 MiB share
///   signed, framed, encrypted, sent over TCP, decrypted, verified and applied. Figure: MB/s of
///   applied shares, beside the crypto suite's seal+open of a 4 MiB delta measured in the same
///   run (one transfer costs one seal and one open). Target ≥ 0.8 of it.
/// - Memory: resident memory of `peer join` processes: an idle peer alone (target ≤ 16 MiB),
///   and a peer averaging 1,000,000 elements with 8 neighbours (target ≤ 64 MiB).
enum RuntimeBench {
    static let dimension = 1 << 20
    static let seconds = 8.0

    static func run() throws {
        var report = BenchReport(suite: "runtime")
        let cryptoRate = try sealOpenRate()
        let (rate, applied) = try throughput()
        report.add(BenchFigure(name: "4 MiB shares between two peers", value: rate, unit: "MB/s", baseline: cryptoRate, ratio: rate / cryptoRate,
                               note: "\(applied) shares applied in \(Int(seconds)) s over loopback; baseline: crypto seal+open of a 4 MiB delta; target ratio ≥ 0.8"))
        let idle = try residentMemory(peers: 1, dimension: nil)
        report.add(BenchFigure(name: "resident memory, idle peer", value: Double(idle.resident) / Double(1 << 20), unit: "MiB",
                               note: "peer join alone, no vector, after 3 s; \(mebibytes(idle.anonymous)) of it the process's own (RssAnon), the rest shared-library code; target ≤ 16 MiB"))
        let busy = try residentMemory(peers: 9, dimension: 1_000_000)
        report.add(BenchFigure(name: "resident memory, averaging 1M elements", value: Double(busy.resident) / Double(1 << 20), unit: "MiB",
                               note: "peer join with 8 neighbours, 1,000,000-element vector, after 12 s; \(mebibytes(busy.anonymous)) RssAnon; target ≤ 64 MiB"))
        report.finish()
    }

    /// MB/s of one seal + one open of a 4 MiB delta through the project's crypto API (the
    /// crypto suite's round trip), measured here in the same run.
    static func sealOpenRate() throws -> Double {
        let identity = try Identity.generate()
        let receiver = try Identity.generate()
        let wireA = try SecureWire(identity: identity, keyring: NetworkKeyring(current: NetworkKey.generate()), replayGuard: .forDatagrams(startedAt: 0))
        let wireB = SecureWire(identity: receiver, sharingKeysWith: wireA, replayGuard: .forDatagrams(startedAt: 0))
        // A real 4 MiB share: what an averager's tick sends to its one neighbour.
        var averager = PushSumAverager(peer: identity.peerID, initial: [Float](repeating: 0.25, count: dimension), sampleCount: 1,
                                       neighbours: [PeerAddress(peer: receiver.peerID, endpoint: Endpoint(host: "127.0.0.1", port: 1))],
                                       rng: SplitMix64(seed: 1))
        guard let transfer = averager.onTimer(.tick, at: .zero).compactMap({ if case .send(let m, _, _) = $0 { return m } else { return nil } }).first else {
            throw CryptoError.primitiveFailed("averager sent nothing")
        }
        var best = Double.infinity
        for _ in 0..<5 {
            let t0 = DispatchTime.now().uptimeNanoseconds
            let bytes = try wireA.encodeSession(transfer, to: receiver.peerID)
            _ = try wireB.decodeAveragingSession(bytes, from: identity.peerID)
            best = min(best, Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9)
        }
        return Double(dimension * 4) / 1e6 / best
    }

    /// Two runtimes averaging 4 MiB shares as fast as the stack allows.
    static func throughput() throws -> (rate: Double, applied: Int) {
        let key = try NetworkKey.generate()
        let settings: OverlaySettings = {
            var s = OverlaySettings.local
            s.averaging.tickInterval = .milliseconds(1)
            s.averaging.retransmitInterval = .seconds(2)
            s.discovery.beaconEndpoint = nil
            return s
        }()
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("murmur-runtime-bench-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: base) }
        let done = DispatchGroup()
        final class Results: @unchecked Sendable { let lock = NSLock(); var applied = [0, 0]; var port: UInt16 = 0; let started = DispatchSemaphore(value: 0) }
        let results = Results()
        for i in 0..<2 {
            done.enter()
            let thread = Thread {
                defer { done.leave() }
                do {
                    let dir = base + "/\(i)"
                    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                    let identity = try Identity.generate()
                    var s = settings
                    if i == 1 { s.discovery.bootstrap = [Endpoint(host: "127.0.0.1", port: results.port)] }
                    var rng = SplitMix64(seed: UInt64(i + 1))
                    let vector = (0..<dimension).map { _ in Float(rng.next() >> 40) / Float(1 << 24) }
                    let averager = PushSumAverager(peer: identity.peerID, initial: vector, sampleCount: 1, settings: s.averaging, rng: SplitMix64(seed: UInt64(i + 7)))
                    let runtime = try NodeRuntime(identity: identity, keyring: NetworkKeyring(current: key),
                                                  configuration: .init(listen: Endpoint(host: "127.0.0.1", port: 0), settings: s, dataDirectory: dir),
                                                  averager: averager, seed: UInt64(i + 11))
                    try runtime.start()
                    if i == 0 {
                        results.port = runtime.endpoint.port
                        results.started.signal()
                    }
                    try runtime.loop.after(milliseconds: UInt64(seconds * 1000)) { runtime.stop() }
                    runtime.run()
                    let applied = runtime.node.averager?.counters.applied ?? 0
                    results.lock.withLock { results.applied[i] = applied }
                } catch {
                    FileHandle.standardError.write(Data("runtime bench: node \(i): \(error)\n".utf8))
                }
            }
            thread.start()
            if i == 0 { results.started.wait() }
        }
        done.wait()
        let applied = results.applied.reduce(0, +)
        return (Double(applied * dimension * 4) / 1e6 / seconds, applied)
    }

    /// "12.3 MiB".
    static func mebibytes(_ bytes: Int) -> String { String(format: "%.1f MiB", Double(bytes) / Double(1 << 20)) }

    /// Resident memory of peer 0 of `peers` `peer join` processes on loopback (a ring of
    /// bootstrap addresses through peer 0), each averaging `dimension` elements if given: all
    /// of it (VmRSS) and the process's own anonymous pages (RssAnon), without the code of
    /// shared libraries.
    static func residentMemory(peers: Int, dimension: Int?) throws -> (resident: Int, anonymous: Int) {
        let peer = URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent().appendingPathComponent("peer").path
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("murmur-rss-bench-\(UUID().uuidString)")
        try FileManager.default.createDirectory(at: base, withIntermediateDirectories: true)
        defer { try? FileManager.default.removeItem(at: base) }
        let keygen = Process()
        keygen.executableURL = URL(fileURLWithPath: peer)
        keygen.arguments = ["network-key", "new", "--out", base.appendingPathComponent("net.key").path]
        keygen.standardError = FileHandle.nullDevice
        keygen.standardOutput = FileHandle.nullDevice
        try keygen.run()
        keygen.waitUntilExit()
        var processes: [Process] = []
        defer { for p in processes where p.isRunning { p.terminate(); p.waitUntilExit() } }
        for i in 0..<peers {
            let p = Process()
            p.executableURL = URL(fileURLWithPath: peer)
            let port = 19_400 + i
            var args = ["join", "--dir", base.appendingPathComponent("k\(i)").path, "--network-key", base.appendingPathComponent("net.key").path,
                        "--listen", "127.0.0.1:\(port)", "--data-dir", base.appendingPathComponent("d\(i)").path, "--profile", "local",
                        "--log-level", "error"]
            if i > 0 { args += ["--bootstrap", "127.0.0.1:19400"] }
            if let dimension { args += ["--vector", "random:\(dimension):\(i)", "--samples", "\(i + 1)"] }
            p.arguments = args
            p.standardOutput = FileHandle.nullDevice
            p.standardError = FileHandle.nullDevice
            try p.run()
            processes.append(p)
            usleep(200_000)
        }
        sleep(dimension == nil ? 3 : 12)
        let pid = "\(processes[0].processIdentifier)"
        return (residentBytes(process: pid, field: "VmRSS:"), residentBytes(process: pid, field: "RssAnon:"))
    }
}
