import Crypto
import Testing
@testable import Gossip

/// A membership instance for identity 0 watching identities 1...n.
func makeMembership(watching n: Int, settings: Membership.Settings = .init()) -> Membership {
    let me = testIdentity(0)
    var m = Membership(identity: me, record: AddressRecord(signedBy: me, endpoints: [testEndpoint(0)], sequence: 1), settings: settings, rng: SplitMix64(seed: 7))
    for i in 1...n { _ = m.watch(testRecord(i), at: .zero) }
    return m
}

func testRecord(_ i: Int, sequence: UInt64 = 1, port: UInt16 = 7000) -> AddressRecord {
    AddressRecord(signedBy: testIdentity(i), endpoints: [testEndpoint(i, port: port)], sequence: sequence)
}

/// A claim by peer `i` that it is alive at `incarnation` of `record`, signed by `i`.
func testAlive(_ i: Int, _ record: AddressRecord, incarnation: UInt32) -> Membership.Update {
    .alive(AliveClaim(signedBy: testIdentity(i), record: record, incarnation: incarnation))
}

func scheduledAt(_ actions: [Membership.Action], _ timer: Membership.Timer) -> Instant? {
    actions.compactMap { if case let .schedule(t, at) = $0, t == timer { return at }; return nil }.last
}

func membershipEvents(_ actions: [Membership.Action]) -> [Membership.Event] {
    actions.compactMap { if case .report(let e) = $0 { return e }; return nil }
}

let testT0 = Instant(nanoseconds: 1_000_000_000)

@Test func membership_suspicionConfirmedByOthers_timeoutShrinksToMinimum() {
    var m = makeMembership(watching: 9)
    let target = testIdentity(1).peerID
    let v = Membership.Version(sequence: 1, incarnation: 0)
    let first = m.onMessage(.gossip(from: testIdentity(2).peerID, updates: [.suspect(target, v, by: testIdentity(2).peerID)]), from: testEndpoint(2), at: testT0)
    #expect(membershipEvents(first).contains(.suspect(target)))
    let start = scheduledAt(first, .suspicion(target))
    #expect(start == testT0 + m.suspicionMaximum)
    // An accuser already counted does not shrink the timeout again.
    let repeated = m.onMessage(.gossip(from: testIdentity(3).peerID, updates: [.suspect(target, v, by: testIdentity(2).peerID)]), from: testEndpoint(3), at: testT0)
    #expect(scheduledAt(repeated, .suspicion(target)) == nil)
    let second = m.onMessage(.gossip(from: testIdentity(3).peerID, updates: [.suspect(target, v, by: testIdentity(3).peerID)]), from: testEndpoint(3), at: testT0)
    let shrunk = scheduledAt(second, .suspicion(target))
    #expect(shrunk != nil && shrunk! < start! && shrunk! > testT0 + m.suspicionMinimum)
    let third = m.onMessage(.gossip(from: testIdentity(4).peerID, updates: [.suspect(target, v, by: testIdentity(4).peerID)]), from: testEndpoint(4), at: testT0)
    // k = suspicionMultiplier − 2 = 2 confirmations reach the floor.
    #expect(scheduledAt(third, .suspicion(target)) == testT0 + m.suspicionMinimum)
    let expired = m.onTimer(.suspicion(target), at: testT0 + m.suspicionMinimum)
    #expect(membershipEvents(expired).contains(.dead(target)))
    #expect(m.status(of: target) == .dead)
}

@Test func membership_suspicionBounds_followMemberlistFormula() {
    let m = makeMembership(watching: 99)  // n = 100 with self: log10 = 2
    #expect(m.suspicionMinimum == .seconds(8))  // 4 · 2 · 1 s
    #expect(m.suspicionMaximum == .seconds(48))  // 6 · 8 s
    #expect(m.retransmitLimit == 4 * 3)  // 4 · ceil(log10(101))
}

@Test func membership_suspectedSelf_refutesWithHigherIncarnation() {
    var m = makeMembership(watching: 3)
    let me = testIdentity(0).peerID
    let accuser = testIdentity(1).peerID
    let out = m.onMessage(.ping(sequence: 9, from: accuser, updates: [.suspect(me, .init(sequence: 1, incarnation: 0), by: accuser)]), from: testEndpoint(1), at: testT0)
    #expect(m.incarnation == 1)
    #expect(membershipEvents(out).contains(.refuted(incarnation: 1)))
    // The ack carries the refutation back to the accuser first.
    let ack = out.compactMap { if case let .send(.ack(9, _, updates), to, _) = $0, to == testEndpoint(1) { return updates }; return nil }.first
    #expect(m.selfClaim.incarnation == 1)
    #expect(ack?.first == .alive(m.selfClaim))
    // A stale claim (older incarnation) does not raise it again but is answered.
    let stale = m.onMessage(.gossip(from: accuser, updates: [.dead(me, .init(sequence: 1, incarnation: 0), by: accuser)]), from: testEndpoint(1), at: testT0)
    #expect(m.incarnation == 1)
    #expect(stale.contains { if case .send(.gossip(_, let u), _, _) = $0 { return u.first == .alive(m.selfClaim) }; return false })
}

@Test func membership_refutationOfSuspect_clearsSuspicion() {
    var m = makeMembership(watching: 5)
    let target = testIdentity(1).peerID
    let accuser = testIdentity(2).peerID
    _ = m.onMessage(.gossip(from: accuser, updates: [.suspect(target, .init(sequence: 1, incarnation: 0), by: accuser)]), from: testEndpoint(2), at: testT0)
    #expect(m.status(of: target) == .suspect)
    let out = m.onMessage(.gossip(from: accuser, updates: [testAlive(1, testRecord(1), incarnation: 1)]), from: testEndpoint(2), at: testT0)
    #expect(m.status(of: target) == .alive)
    #expect(membershipEvents(out).contains(.alive(target)))
    #expect(out.contains { if case .cancel(.suspicion(target)) = $0 { return true }; return false })
    // A suspicion of the refuted incarnation is now stale.
    _ = m.onMessage(.gossip(from: accuser, updates: [.suspect(target, .init(sequence: 1, incarnation: 0), by: accuser)]), from: testEndpoint(2), at: testT0)
    #expect(m.status(of: target) == .alive)
}

@Test func membership_unansweredProbe_asksHelpersThenSuspectsAndTellsTheSuspect() {
    var m = makeMembership(watching: 4)
    var out = m.onStart(at: .zero)
    out = m.onTimer(.probe, at: testT0)
    guard case let .send(.ping(seq, _, _), to, _)? = out.first(where: { if case .send(.ping, _, _) = $0 { return true }; return false }) else {
        Issue.record("no ping sent")
        return
    }
    let helpersAsked = m.onTimer(.probeTimeout(seq), at: testT0 + .milliseconds(500))
    let requests = helpersAsked.filter { if case .send(.pingRequest, _, _) = $0 { return true }; return false }
    #expect(requests.count == 3)
    #expect(!requests.contains { if case .send(_, let dest, _) = $0 { return dest == to }; return false })
    // One helper answers with a nack: the target is silent, we are fine (only 2 nacks missing).
    _ = m.onMessage(.nack(sequence: seq, from: testIdentity(9).peerID, updates: []), from: testEndpoint(9), at: testT0 + .milliseconds(800))
    let failed = m.onTimer(.indirectTimeout(seq), at: testT0 + .seconds(1))
    let target = m.members.values.first { $0.record.primary == to }!.record.peer
    #expect(membershipEvents(failed).contains(.suspect(target)))
    #expect(m.localHealth == 2)
    #expect(failed.contains { if case let .send(.gossip(_, u), dest, _) = $0 { return dest == to && u.contains { $0.peer == target } }; return false })
}

@Test func membership_answeredProbeOfSuspect_lowersLocalHealthAndCarriesTheSuspicion() {
    var m = makeMembership(watching: 4, settings: { var s = Membership.Settings(); s.indirectChecks = 0; return s }())
    _ = m.onStart(at: .zero)
    // A failed probe without helpers raises local health by one and slows probing down.
    let first = m.onTimer(.probe, at: testT0)
    let seq1 = first.compactMap { if case let .send(.ping(s, _, _), _, _) = $0 { return s }; return nil }[0]
    _ = m.onTimer(.indirectTimeout(seq1), at: testT0 + .seconds(1))
    #expect(m.localHealth == 1)
    let second = m.onTimer(.probe, at: testT0 + .seconds(2))
    #expect(scheduledAt(second, .probe) == testT0 + .seconds(2) + .seconds(2))
    guard case let .send(.ping(seq, _, updates), to, _)? = second.first(where: { if case .send(.ping, _, _) = $0 { return true }; return false }) else {
        Issue.record("no ping")
        return
    }
    // Suspects take every other probe, and the ping tells the suspect (buddy system).
    let target = m.members.values.first { $0.record.primary == to }!.record.peer
    #expect(m.members[target]?.status == .suspect)
    #expect(updates.first == .suspect(target, .init(sequence: 1, incarnation: 0), by: testIdentity(0).peerID))
    let acked = m.onMessage(.ack(sequence: seq, from: target, updates: []), from: to, at: testT0 + .seconds(2) + .milliseconds(3))
    #expect(m.localHealth == 0)
    #expect(acked.contains { if case .cancel(.indirectTimeout(seq)) = $0 { return true }; return false })
}

@Test func membership_tombstone_blocksStaleRecordUntilItExpires() {
    var m = makeMembership(watching: 3)
    let target = testIdentity(1).peerID
    _ = m.onMessage(.gossip(from: testIdentity(2).peerID, updates: [.dead(target, .init(sequence: 1, incarnation: 0), by: testIdentity(2).peerID)]), from: testEndpoint(2), at: testT0)
    #expect(m.status(of: target) == .dead)
    #expect(m.isBuried(testRecord(1)))
    #expect(!m.isBuried(testRecord(1, sequence: 2)))  // a new life is not buried
    m.sweep(at: testT0 + m.settings.tombstoneLifetime / 2)
    #expect(m.isBuried(testRecord(1)))
    m.sweep(at: testT0 + m.settings.tombstoneLifetime + .seconds(1))
    #expect(m.status(of: target) == nil)
    #expect(!m.isBuried(testRecord(1)))
}

@Test func membership_newRecordOfSamePeer_replacesAddressAndRevivesFromTombstone() {
    var m = makeMembership(watching: 3)
    let target = testIdentity(1).peerID
    _ = m.onMessage(.gossip(from: testIdentity(2).peerID, updates: [.dead(target, .init(sequence: 1, incarnation: 0), by: testIdentity(2).peerID)]), from: testEndpoint(2), at: testT0)
    let moved = testRecord(1, sequence: 2, port: 9000)
    _ = m.watch(moved, at: testT0)
    #expect(m.members[target]?.record.primary.port == 9000)
    #expect(m.members[target]?.status == .alive)
    // An alive claim with a newer record replaces the address of a watched peer.
    let again = testRecord(1, sequence: 3, port: 9100)
    let out = m.onMessage(.gossip(from: testIdentity(2).peerID, updates: [testAlive(1, again, incarnation: 0)]), from: testEndpoint(2), at: testT0)
    #expect(membershipEvents(out).contains(.recordChanged(again)))
    #expect(m.members[target]?.record == again)
}

@Test func membership_forgedRecordOrLeave_isRejected() {
    var m = makeMembership(watching: 3)
    let genuine = testRecord(1, sequence: 5, port: 9999)
    // Someone else's key signs a record that names peer 1.
    let forger = AddressRecord(signedBy: testIdentity(66), endpoints: [Endpoint(host: "6.6.6.6", port: 666)], sequence: 5)
    let forged = AddressRecord(peer: genuine.peer, endpoints: forger.endpoints, sequence: 5, signature: forger.signature)
    let out = m.onMessage(.gossip(from: testIdentity(2).peerID, updates: [testAlive(66, forged, incarnation: 0)]), from: testEndpoint(2), at: testT0)
    #expect(membershipEvents(out).contains(.rejected(genuine.peer)))
    #expect(m.members[genuine.peer]?.record.sequence == 1)
    // A tampered endpoint under a genuine signature fails too.
    let tampered = AddressRecord(peer: genuine.peer, endpoints: forger.endpoints, sequence: 5, signature: genuine.signature)
    _ = m.onMessage(.gossip(from: testIdentity(2).peerID, updates: [testAlive(66, tampered, incarnation: 0)]), from: testEndpoint(2), at: testT0)
    #expect(m.members[genuine.peer]?.record.sequence == 1)
    let fakeLeave = LeaveNotice(peer: genuine.peer, sequence: 1, signature: LeaveNotice(signedBy: testIdentity(66), sequence: 1).signature)
    let leaveOut = m.onMessage(.gossip(from: testIdentity(2).peerID, updates: [.left(fakeLeave)]), from: testEndpoint(2), at: testT0)
    #expect(membershipEvents(leaveOut).contains(.rejected(genuine.peer)))
    #expect(m.members[genuine.peer]?.status == .alive)
}

@Test func membership_signedLeave_removesPeerAndIsGossiped() {
    var m = makeMembership(watching: 3)
    let leaver = testIdentity(1)
    let notice = LeaveNotice(signedBy: leaver, sequence: 1)
    let out = m.onMessage(.gossip(from: leaver.peerID, updates: [.left(notice)]), from: testEndpoint(1), at: testT0)
    #expect(membershipEvents(out).contains(.left(leaver.peerID)))
    #expect(m.status(of: leaver.peerID) == .left)
    #expect(m.pendingUpdates == 1)
    // The departing side sends its notice to every watched peer.
    var departing = makeMembership(watching: 3)
    let goodbye = departing.leave(at: testT0)
    #expect(goodbye.filter { if case .send(.gossip(_, let u), _, _) = $0 { return u.contains { if case .left = $0 { return true }; return false } }; return false }.count == 3)
}

@Test func membership_piggyback_boundsItemsAndRetransmits() {
    var m = makeMembership(watching: 30)
    for i in 31...50 {
        _ = m.onMessage(.gossip(from: testIdentity(1).peerID, updates: [.dead(testIdentity(i).peerID, .init(sequence: 1, incarnation: 0), by: testIdentity(1).peerID)]), from: testEndpoint(1), at: testT0)
    }
    #expect(m.pendingUpdates == 20)
    var sent: [PeerID: Int] = [:]
    while m.pendingUpdates > 0 {
        let batch = m.piggyback()
        #expect(batch.count <= m.settings.maxUpdatesPerMessage)
        #expect(batch.reduce(0) { $0 + GossipWire.size(of: $1) } <= m.settings.maxUpdateBytes)
        for u in batch { sent[u.peer, default: 0] += 1 }
    }
    #expect(sent.count == 20)
    #expect(sent.values.allSatisfy { $0 == m.retransmitLimit })
}

@Test func membership_aliveClaimNotSignedByThePeer_doesNotLiftSuspicion() {
    var m = makeMembership(watching: 5)
    let target = testIdentity(1).peerID
    let accuser = testIdentity(2).peerID
    _ = m.onMessage(.gossip(from: accuser, updates: [.suspect(target, .init(sequence: 1, incarnation: 0), by: accuser)]), from: testEndpoint(2), at: testT0)
    // Peer 3 tries to keep peer 1 "alive" with a higher incarnation it signs itself.
    let out = m.onMessage(.gossip(from: testIdentity(3).peerID, updates: [testAlive(3, testRecord(1), incarnation: 7)]), from: testEndpoint(3), at: testT0)
    #expect(membershipEvents(out).contains(.rejected(target)))
    #expect(m.status(of: target) == .suspect)
    _ = m.onMessage(.gossip(from: accuser, updates: [testAlive(1, testRecord(1), incarnation: 1)]), from: testEndpoint(2), at: testT0)
    #expect(m.status(of: target) == .alive)
}

@Test func membership_peerLeavingTheViewDuringItsProbe_isForgottenOnceSettled() {
    var m = makeMembership(watching: 3)
    _ = m.onStart(at: .zero)
    let out = m.onTimer(.probe, at: testT0)
    guard case let .send(.ping(seq, _, _), to, _)? = out.first(where: { if case .send(.ping, _, _) = $0 { return true }; return false }) else {
        Issue.record("no ping")
        return
    }
    let target = m.members.values.first { $0.record.primary == to }!.record.peer
    m.unwatch(target)
    #expect(m.member(target) != nil, "kept while its probe is open")
    _ = m.onMessage(.ack(sequence: seq, from: target, updates: []), from: to, at: testT0 + .milliseconds(2))
    m.sweep(at: testT0 + m.settings.tombstoneLifetime)
    #expect(m.member(target) == nil)
    #expect(m.members.count == 2)
}

@Test func membership_silentFirstAddress_targetsOtherAddressesToo() {
    let me = testIdentity(0)
    var m = Membership(identity: me, record: AddressRecord(signedBy: me, endpoints: [testEndpoint(0)], sequence: 1), rng: SplitMix64(seed: 7))
    let second = Endpoint(host: "192.0.2.9", port: 7001)
    let twoHomes = AddressRecord(signedBy: testIdentity(1), endpoints: [testEndpoint(1), second], sequence: 1)
    _ = m.watch(twoHomes, at: .zero)
    _ = m.onStart(at: .zero)
    let out = m.onTimer(.probe, at: testT0)
    let seq = out.compactMap { if case let .send(.ping(s, _, _), _, _) = $0 { return s }; return nil }[0]
    let fallback = m.onTimer(.probeTimeout(seq), at: testT0 + .milliseconds(500))
    #expect(fallback.contains { if case let .send(.ping(s, _, _), to, _) = $0 { return s == seq && to == second }; return false })
    // An ack from the second address settles the probe.
    let acked = m.onMessage(.ack(sequence: seq, from: testIdentity(1).peerID, updates: []), from: second, at: testT0 + .milliseconds(510))
    #expect(acked.contains { if case .cancel(.indirectTimeout(seq)) = $0 { return true }; return false })
}
