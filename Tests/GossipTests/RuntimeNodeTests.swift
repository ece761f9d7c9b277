import Crypto
import DeterministicRandom
import Foundation
@testable import Gossip
import Testing

/// The runtime's pieces that no process test reaches directly: the thread pool and two
/// runtimes in one process averaging shares big enough to be signed and checked off the loop.
@Suite struct RuntimeNodeTests {
    @Test func work_runsOffTheLoopThread_andCompletesOnIt() throws {
        let loop = try EventLoop()
        let loopThread = pthread_self()
        var results: [Int] = []
        var completedOnLoop = true
        for i in 0..<8 {
            try loop.work({ () -> Int in pthread_equal(pthread_self(), loopThread) == 0 ? i : -1 - i }) { value in
                completedOnLoop = completedOnLoop && pthread_equal(pthread_self(), loopThread) != 0
                results.append(value)
            }
        }
        loop.run()
        #expect(results.sorted() == Array(0..<8), "every job ran on a pool thread (negative: on the loop's)")
        #expect(completedOnLoop)
    }

    @Test func pacer_holdsTheRateToTheCap_andSendsDatagramsBeforeWaitingStreamBytes() throws {
        let loop = try EventLoop()
        let pacer = OutboundPacer(loop: loop, bytesPerSecond: 500_000)
        var sent: [(String, UInt64)] = []
        let start = loop.nowMilliseconds
        for i in 0..<20 { pacer.sendStream(size: 25_000) { sent.append(("stream \(i)", loop.nowMilliseconds)) } }
        pacer.sendDatagram(size: 100) { sent.append(("datagram", loop.nowMilliseconds)) }
        loop.run()
        let names = sent.map(\.0)
        #expect(names.count == 21)
        // The bucket (64 KiB) lets three chunks go at once; the datagram goes next, before the
        // sixteen that wait.
        #expect(names.firstIndex(of: "datagram") ?? 99 <= 4, "\(names)")
        #expect(names.filter { $0 != "datagram" } == (0..<20).map { "stream \($0)" }, "stream bytes keep their order")
        // 500,100 bytes at 500 kB/s, less what the full bucket let through at once.
        let elapsed = (sent.last?.1 ?? start) - start
        #expect(elapsed >= 800, "the last chunk went after \(elapsed) ms")
        #expect(pacer.sentBytes == 500_100)
    }

    @Test func pacer_dropsDatagramsBeyondItsQueue_andCountsThem() throws {
        let loop = try EventLoop()
        let pacer = OutboundPacer(loop: loop, bytesPerSecond: 1_000_000)
        var delivered = 0
        let accepted = (0..<400).filter { _ in pacer.sendDatagram(size: 1_000) { delivered += 1 } }.count
        loop.run()
        #expect(accepted < 400 && pacer.droppedDatagrams == 400 - accepted)
        #expect(delivered == accepted, "every datagram it accepted went out")
    }

    @Test func work_pendingWhenTheLoopIsReleased_isWaitedFor() throws {
        var loop: EventLoop? = try EventLoop()
        final class Flag: @unchecked Sendable { var ran = false }
        let flag = Flag()
        try loop?.work({ usleep(50_000); flag.ran = true; return 0 }) { _ in }
        loop = nil
        #expect(flag.ran)
    }

    /// Two peers in one process, each on its own thread and loop, averaging 32,768 elements:
    /// every share is 128 KiB, above ``NodeRuntime/offLoopCodingThreshold``, so each is signed
    /// and verified on the thread pool. Both end at the exact weighted mean.
    @Test(arguments: [nil, 1_000_000.0])
    func twoRuntimes_largeShares_convergeToTheWeightedMean(bandwidth: Double?) throws {
        let dimension = 32_768
        let key = try NetworkKey.generate()
        let settings: OverlaySettings = {
            var s = OverlaySettings.local
            s.discovery.beaconEndpoint = nil
            return s
        }()
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("murmur-runtime-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: base) }
        let vectors: [[Float]] = (0..<2).map { i in
            var rng = SplitMix64(seed: UInt64(i + 1))
            return (0..<dimension).map { _ in Float(rng.next() >> 40) / Float(1 << 24) }
        }
        let samples = [1, 3]
        let expected = (0..<dimension).map { j in (Double(vectors[0][j]) * 1 + Double(vectors[1][j]) * 3) / 4 }

        /// What the two node threads report; both finish at about the same time, so their
        /// writes go under the lock.
        final class Shared: @unchecked Sendable {
            let lock = NSLock()
            var port: UInt16 = 0
            var estimates: [[Double]?] = [nil, nil]
            var codedOffLoop = [0, 0]
            var pacedBytes = [0, 0]
            var errors: [String] = []
            let started = DispatchSemaphore(value: 0)
        }
        let shared = Shared()
        let done = DispatchGroup()
        for i in 0..<2 {
            done.enter()
            Thread {
                defer { done.leave() }
                do {
                    let dir = base + "/\(i)"
                    try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
                    let identity = try Identity.generate()
                    var s = settings
                    if i == 1 { s.discovery.bootstrap = [Endpoint(host: "127.0.0.1", port: shared.port)] }
                    let averager = PushSumAverager(peer: identity.peerID, initial: vectors[i], sampleCount: Double(samples[i]),
                                                   settings: s.averaging, rng: SplitMix64(seed: UInt64(i + 7)))
                    let runtime = try NodeRuntime(identity: identity, keyring: NetworkKeyring(current: key),
                                                  configuration: .init(listen: Endpoint(host: "127.0.0.1", port: 0), settings: s, dataDirectory: dir,
                                                                       bandwidth: bandwidth),
                                                  averager: averager, seed: UInt64(i + 11))
                    try runtime.start()
                    if i == 0 {
                        shared.port = runtime.endpoint.port
                        shared.started.signal()
                    }
                    try runtime.loop.after(milliseconds: 6_000) { runtime.stop() }
                    runtime.run()
                    let paced = (runtime.status()["traffic"] as? [String: Int])?["pacedBytes"] ?? -1
                    shared.lock.withLock {
                        shared.estimates[i] = runtime.node.averager?.estimate
                        shared.codedOffLoop[i] = runtime.counters.codedOffLoop
                        shared.pacedBytes[i] = paced
                    }
                } catch {
                    shared.lock.withLock { shared.errors.append("node \(i): \(error)") }
                }
            }.start()
            if i == 0 { shared.started.wait() }
        }
        done.wait()
        #expect(shared.errors.isEmpty, "\(shared.errors)")
        for (i, estimate) in shared.estimates.enumerated() {
            let estimate = try #require(estimate, "node \(i) has an estimate")
            let error = zip(estimate, expected).map { abs($0 - $1) / max(abs($1), 1e-9) }.max() ?? .infinity
            #expect(error <= 1e-5, "node \(i): relative error \(error)")
            #expect(shared.codedOffLoop[i] > 0, "node \(i) signed and checked its shares on the thread pool")
            if let bandwidth {
                // Six seconds at the cap (and the few milliseconds between the runtime's creation
                // and its start), plus the bucket's capacity sent at once at the start, plus the
                // one frame that may overdraw it.
                let bound = bandwidth * 6.1 + 65_536 + Double(NodeRuntime.pieceLength + 1_024)
                #expect(shared.pacedBytes[i] > 0 && Double(shared.pacedBytes[i]) <= bound, "node \(i) sent \(shared.pacedBytes[i]) bytes")
            }
        }
    }
}

/// The per-address limit on datagrams that fail authentication.
@Suite struct AuthenticationThrottleTests {
    let attacker = Endpoint(host: "10.0.0.9", port: 40_001)
    let honest = Endpoint(host: "10.0.0.9", port: 7_946)

    @Test func aHostFailingBeyondItsBurst_isThrottled_untilItsBucketRefills() {
        var throttle = AuthenticationThrottle()
        let burst = Int(AuthenticationThrottle.burst)
        for i in 0..<burst {
            do { let admitted = throttle.admits(attacker, now: 0); #expect(admitted, "failure \(i) within the burst is opened") }
            throttle.failed(attacker, now: 0)
        }
        do { let admitted = throttle.admits(attacker, now: 0); #expect(!admitted) }
        do { let admitted = throttle.admits(Endpoint(host: "10.0.0.9", port: 40_002), now: 0); #expect(!admitted, "another port of the same host shares the bucket") }
        do { let admitted = throttle.admits(Endpoint(host: "10.0.0.10", port: 40_001), now: 0); #expect(admitted, "other hosts are not affected") }
        let refill = UInt64((1_000 / AuthenticationThrottle.failuresPerSecond).rounded(.up))
        do { let admitted = throttle.admits(attacker, now: refill); #expect(admitted, "one failure's worth of time later, one more is opened") }
    }

    @Test func anEndpointThatAuthenticated_isNeverThrottledByItsHostsFailures() {
        var throttle = AuthenticationThrottle()
        throttle.authenticated(honest, now: 0)
        for _ in 0..<10_000 { throttle.failed(attacker, now: 1) }
        do { let admitted = throttle.admits(attacker, now: 1); #expect(!admitted) }
        do { let admitted = throttle.admits(honest, now: 1); #expect(admitted) }
        let later = 1 + AuthenticationThrottle.trustMilliseconds
        for _ in 0..<10_000 { throttle.failed(attacker, now: later) }
        do { let admitted = throttle.admits(honest, now: later); #expect(!admitted, "trust lapses without authentic traffic") }
    }

    @Test func tablesStayBounded_forgettingTheOldest() {
        var throttle = AuthenticationThrottle()
        for i in 0..<(AuthenticationThrottle.maxHosts + 10) {
            for _ in 0..<Int(AuthenticationThrottle.burst) { throttle.failed(Endpoint(host: "h\(i)", port: 1), now: UInt64(i)) }
        }
        let last = UInt64(AuthenticationThrottle.maxHosts + 10)
        do { let admitted = throttle.admits(Endpoint(host: "h0", port: 1), now: last); #expect(admitted, "the oldest host was forgotten (its bucket starts full again)") }
        let newest = throttle.admits(Endpoint(host: "h\(AuthenticationThrottle.maxHosts + 9)", port: 1), now: last - 1)
        #expect(!newest)
    }
}
