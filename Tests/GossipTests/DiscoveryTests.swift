import Crypto
import Testing
@testable import Gossip

@Test func discovery_rebootstrap_backsOffExponentiallyUpToTheCapAndResetsOnSuccess() {
    var settings = Discovery.Settings()
    settings.bootstrap = [Endpoint(host: "192.0.2.1", port: 7000), Endpoint(host: "192.0.2.2", port: 7000)]
    settings.beaconEndpoint = nil
    var d = Discovery(settings: settings, cache: PeerCache(records: [testRecord(5)]), rng: SplitMix64(seed: 11))
    #expect(d.backoff(afterAttempt: 1) == .seconds(1))
    #expect(d.backoff(afterAttempt: 2) == .seconds(2))
    #expect(d.backoff(afterAttempt: 6) == .seconds(32))
    #expect(d.backoff(afterAttempt: 7) == .seconds(60))
    #expect(d.backoff(afterAttempt: 500) == .seconds(60))
    let start = d.onStart(at: testT0)
    #expect(d.isBootstrapping)
    #expect(start.contains { if case .schedule(.rebootstrap, testT0) = $0 { return true }; return false })
    var now = testT0
    for attempt in 1...9 {
        let out = d.onTimer(.rebootstrap, me: testRecord(0), at: now)
        let joins = out.compactMap { if case let .send(.join(r), to, _) = $0, r == testRecord(0) { return to }; return nil }
        #expect(joins.count == 3, "bootstrap list and cache: three candidates")
        guard let next = out.compactMap({ if case let .schedule(.rebootstrap, at) = $0 { return at }; return nil }).first else {
            Issue.record("no next attempt")
            return
        }
        let base = d.backoff(afterAttempt: attempt)
        #expect(next - now >= base * 0.75 && next - now <= base * 1.25, "attempt \(attempt): jitter stays within ±25 %")
        now = next
    }
    #expect(d.attempt == 9)
    let done = d.succeeded()
    #expect(done.contains { if case .cancel(.rebootstrap) = $0 { return true }; return false })
    #expect(!d.isBootstrapping && d.attempt == 0)
    #expect(d.onTimer(.rebootstrap, me: testRecord(0), at: now).isEmpty)
}

@Test func discovery_beacon_isSentToTheMulticastGroupEveryInterval() {
    var d = Discovery(settings: .init(), cache: PeerCache(), rng: SplitMix64(seed: 1))
    let start = d.onStart(at: testT0)
    #expect(!d.isBootstrapping)  // nobody to ask yet: beacons only
    #expect(start.contains { if case .schedule(.beacon, testT0) = $0 { return true }; return false })
    let out = d.onTimer(.beacon, me: testRecord(0), at: testT0)
    #expect(out.contains { if case let .send(.beacon(r), to, .datagram(to: nil)) = $0 { return r == testRecord(0) && to == Discovery.Settings().beaconEndpoint }; return false })
    #expect(out.contains { if case .schedule(.beacon, testT0 + .seconds(10)) = $0 { return true }; return false })
}

@Test func discovery_peerCache_roundTripsAndRefusesMalformedFiles() throws {
    var cache = PeerCache(ownSequence: 41)
    for i in 1...70 { cache.remember(testRecord(i), capacity: 64) }
    cache.remember(testRecord(3, sequence: 9, port: 9000), capacity: 64)
    #expect(cache.records.count == 64)
    #expect(cache.records.first == testRecord(3, sequence: 9, port: 9000))
    let bytes = cache.encoded()
    #expect(try PeerCache(decoding: bytes) == cache)
    #expect(throws: WireError.self) { try PeerCache(decoding: Array(bytes.dropLast())) }
    #expect(throws: WireError.self) { try PeerCache(decoding: bytes + [0]) }
    #expect(throws: WireError.self) { try PeerCache(decoding: Array("NOPE".utf8) + bytes.dropFirst(4)) }
    var huge = bytes
    huge[12] = 0xFF
    huge[13] = 0xFF
    #expect(throws: WireError.lengthTooLarge(field: "record count", declared: 65535, maximum: PeerCache.maxRecords)) { try PeerCache(decoding: huge) }
}
