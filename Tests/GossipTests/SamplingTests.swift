import Crypto
import Testing
@testable import Gossip

func testEntry(_ i: Int, age: UInt16 = 0, sequence: UInt64 = 1) -> PeerSampler.Entry {
    PeerSampler.Entry(record: testRecord(i, sequence: sequence), age: age)
}

func sampler(holding ids: [Int], settings: PeerSampler.Settings = .init(), seed: UInt64 = 3) -> PeerSampler {
    var s = PeerSampler(settings: settings, rng: SplitMix64(seed: seed))
    _ = s.insert(ids.map { testEntry($0, age: UInt16($0 % 7)) }, me: testRecord(0), admit: { _ in true })
    return s
}

@Test func sampling_shuffle_swapsEntriesWithOldestNeighbourAndKeepsViewSizes() {
    var settings = PeerSampler.Settings()
    settings.viewSize = 8
    settings.shuffleLength = 4
    var a = sampler(holding: Array(1...8), settings: settings)
    var b = PeerSampler(settings: settings, rng: SplitMix64(seed: 4))
    _ = b.insert((20...27).map { testEntry($0) }, me: testRecord(100), admit: { _ in true })
    let oldestEntry = a.view.max { $0.age < $1.age }!
    let oldest = oldestEntry.peer
    let tick = a.onTimer(.shuffle, me: testRecord(0), admit: { _ in true }, at: testT0)
    guard case let .send(.request(id, offered), to, _)? = tick.first(where: { if case .send = $0 { return true }; return false }) else {
        Issue.record("no shuffle request")
        return
    }
    #expect(to == oldestEntry.record.primary)
    #expect(offered.count == 4)
    #expect(offered[0].record == testRecord(0) && offered[0].age == 0)  // a fresh pointer to the initiator
    #expect(!offered.contains { $0.peer == oldest })
    // The partner answers with its own entries and takes the offer into the slots it sent.
    let answer = b.onMessage(.request(id: id, entries: offered), from: testEndpoint(0), me: testRecord(100), admit: { _ in true }, at: testT0)
    guard case let .send(.reply(rid, returned), _, _)? = answer.first else {
        Issue.record("no reply")
        return
    }
    #expect(rid == id && returned.count == 4)
    #expect(b.count == 8)
    #expect(b.contains(testIdentity(0).peerID))
    _ = a.onMessage(.reply(id: id, entries: returned), from: to, me: testRecord(0), admit: { _ in true }, at: testT0)
    #expect(a.count == 8)
    #expect(!a.contains(oldest))  // the partner now points to us instead
    for e in returned { #expect(a.contains(e.peer)) }
    // Swapper: what we sent gave its slots to what we received (entries moved, not copied).
    for e in offered.dropFirst() { #expect(!a.contains(e.peer)) }
    for e in returned { #expect(!b.contains(e.peer) || offered.contains { $0.peer == e.peer }) }
}

@Test func sampling_unansweredShuffle_retriesAndDropsPartnerOnlyAfterRepeatedFailures() {
    var settings = PeerSampler.Settings()
    settings.maxShuffleFailures = 3
    var s = sampler(holding: [1], settings: settings)
    var now = testT0
    for round in 1...3 {
        let out = s.onTimer(.shuffle, me: testRecord(0), admit: { _ in true }, at: now)
        guard case let .send(.request(id, _), _, _)? = out.first(where: { if case .send = $0 { return true }; return false }) else {
            Issue.record("no request in round \(round)")
            return
        }
        let timeout = s.onTimer(.shuffleTimeout(id), at: now + settings.shuffleTimeout)
        if round < 3 {
            #expect(s.contains(testIdentity(1).peerID), "kept after \(round) failure(s)")
            #expect(!timeout.contains { if case .report(.removed) = $0 { return true }; return false })
        } else {
            #expect(!s.contains(testIdentity(1).peerID))
            #expect(timeout.contains { if case .report(.removed) = $0 { return true }; return false })
        }
        now = now + .seconds(1)
    }
    let empty = s.onTimer(.shuffle, me: testRecord(0), admit: { _ in true }, at: now)
    #expect(empty.contains { if case .report(.viewEmpty) = $0 { return true }; return false })
}

extension PeerSampler {
    /// Timer handling for tests that need no admission filter.
    mutating func onTimer(_ timer: Timer, at now: Instant) -> [Action] {
        onTimer(timer, me: testRecord(0), admit: { _ in true }, at: now)
    }
}

@Test func sampling_timeout_startsOneRetryWithAnotherPartner() {
    var s = sampler(holding: [1, 2, 3, 4])
    let out = s.onTimer(.shuffle, at: testT0)
    let firstPartner = out.compactMap { if case let .send(_, to, _) = $0 { return to }; return nil }[0]
    let id = out.compactMap { if case let .send(.request(id, _), _, _) = $0 { return id }; return nil }[0]
    let retry = s.onTimer(.shuffleTimeout(id), at: testT0 + .milliseconds(500))
    let retried = retry.compactMap { if case let .send(_, to, _) = $0 { return to }; return nil }
    #expect(retried.count == 1)
    #expect(retried[0] != firstPartner)
    // Only one retry per round.
    let id2 = retry.compactMap { if case let .send(.request(id, _), _, _) = $0 { return id }; return nil }[0]
    let second = s.onTimer(.shuffleTimeout(id2), at: testT0 + .seconds(1))
    #expect(second.compactMap { if case .send = $0 { return 1 }; return nil }.isEmpty)
}

@Test func sampling_newerRecord_updatesEntryAndForgedOneIsRejected() {
    var s = sampler(holding: [1, 2, 3])
    let moved = PeerSampler.Entry(record: testRecord(2, sequence: 4, port: 9000), age: 0)
    let out = s.insert([moved], me: testRecord(0), admit: { _ in true })
    #expect(samplerEvents(out).contains(.updated(moved.record)))
    #expect(s.entry(for: testIdentity(2).peerID)?.record.primary.port == 9000)
    let stale = PeerSampler.Entry(record: testRecord(2, sequence: 3, port: 8000), age: 0)
    _ = s.insert([stale], me: testRecord(0), admit: { _ in true })
    #expect(s.entry(for: testIdentity(2).peerID)?.record.primary.port == 9000)
    let signer = AddressRecord(signedBy: testIdentity(77), endpoints: [testEndpoint(77)], sequence: 1)
    let forged = PeerSampler.Entry(record: AddressRecord(peer: testIdentity(5).peerID, endpoints: signer.endpoints, sequence: 1, signature: signer.signature), age: 0)
    let rejected = s.insert([forged], me: testRecord(0), admit: { _ in true })
    #expect(samplerEvents(rejected).contains(.rejected(testIdentity(5).peerID)))
    #expect(!s.contains(testIdentity(5).peerID))
    // Tombstoned records are not admitted.
    _ = s.insert([testEntry(6)], me: testRecord(0), admit: { $0.peer != testIdentity(6).peerID })
    #expect(!s.contains(testIdentity(6).peerID))
}

@Test func sampling_viewNeverExceedsCapacityNorHoldsSelf() {
    var settings = PeerSampler.Settings()
    settings.viewSize = 5
    var s = sampler(holding: [], settings: settings)
    _ = s.insert((0...20).map { testEntry($0) }, me: testRecord(0), admit: { _ in true })
    #expect(s.count == 5)
    #expect(!s.contains(testIdentity(0).peerID))
}

func samplerEvents(_ actions: [PeerSampler.Action]) -> [PeerSampler.Event] {
    actions.compactMap { if case .report(let e) = $0 { return e }; return nil }
}

/// A partner that membership removes (it left) while its shuffle is in flight stays out of a
/// small view even when its answer still arrives (it lingers after leaving): a peer that left
/// and came back into the view would hold its senders' shares in flight forever.
@Test func sampling_partnerRemovedDuringItsShuffle_staysOutWhenItsReplyArrives() {
    var s = sampler(holding: [1, 2])
    let out = s.onTimer(.shuffle, me: testRecord(0), admit: { _ in true }, at: testT0)
    guard case let .send(.request(id, _), _, _)? = out.first(where: { if case .send = $0 { return true }; return false }),
          let partner = s.pending?.partner.entry.peer else {
        Issue.record("no shuffle request")
        return
    }
    #expect(s.remove(partner).contains { if case .report(.removed(partner)) = $0 { return true }; return false })
    _ = s.onMessage(.reply(id: id, entries: [testEntry(5)]), from: testEndpoint(1), me: testRecord(0), admit: { _ in true }, at: testT0)
    #expect(!s.contains(partner))
    #expect(s.contains(testEntry(5).peer))
}
