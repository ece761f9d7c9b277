import Crypto
import Testing
@testable import Gossip

@Test func node_wireFormat_roundTripsEveryMessageAndSizeMatches() throws {
    let a = testIdentity(1).peerID, b = testIdentity(2).peerID
    let v = Membership.Version(sequence: 3, incarnation: 2)
    let updates: [Membership.Update] = [
        testAlive(1, testRecord(1), incarnation: 4), .suspect(a, v, by: b), .dead(b, v, by: a), .left(LeaveNotice(signedBy: testIdentity(3), sequence: 7)),
    ]
    let messages: [GossipMessage] = [
        .membership(.ping(sequence: 1, from: a, updates: updates)),
        .membership(.ack(sequence: 2, from: b, updates: [])),
        .membership(.nack(sequence: 3, from: a, updates: updates)),
        .membership(.pingRequest(sequence: 4, from: a, target: testRecord(2), updates: updates)),
        .membership(.gossip(from: b, updates: updates)),
        .sampling(.request(id: 5, entries: [testEntry(1, age: 3), testEntry(2)])),
        .sampling(.reply(id: 6, entries: [])),
        .discovery(.join(AddressRecord(signedBy: testIdentity(4), endpoints: [Endpoint(host: "fe80::1%eth0", port: 1), testEndpoint(4)], sequence: 1))),
        .discovery(.joinReply([testEntry(3)])),
        .discovery(.beacon(testRecord(9))),
    ]
    for m in messages {
        let bytes = try GossipWire.encode(m)
        #expect(bytes.count == m.wireSize)
        // Field by field: an encoder that dropped a field would not give the message back.
        #expect(try GossipWire.decode(bytes) == m)
    }
    // Averaging travels over sessions, never in a datagram.
    #expect(throws: WireError.self) { try GossipWire.encode(.averaging(.ack(epoch: 1, sequence: 2))) }
}

@Test func node_wireFormat_rejectsTruncatedOversizedAndUnknownInputWithoutTrapping() {
    guard let full = try? GossipWire.encode(.membership(.gossip(from: testIdentity(1).peerID, updates: [testAlive(1, testRecord(1), incarnation: 0)]))) else {
        Issue.record("a gossip message did not encode")
        return
    }
    for cut in 0..<full.count {
        #expect(throws: WireError.self) { try GossipWire.decode(Array(full.prefix(cut))) }
    }
    #expect(throws: WireError.unsupportedVersion(9)) { try GossipWire.decode([9, 1]) }
    #expect(throws: WireError.self) { try GossipWire.decode([1, 200]) }
    var tooMany = Array(full.prefix(2 + 32))
    tooMany.append(UInt8(GossipWire.maxUpdates + 1))
    #expect(throws: WireError.lengthTooLarge(field: "updates", declared: UInt64(GossipWire.maxUpdates + 1), maximum: GossipWire.maxUpdates)) {
        try GossipWire.decode(tooMany)
    }
    // Random bytes behind every message kind never trap.
    var rng = SplitMix64(seed: 99)
    for kind: UInt8 in [1, 2, 3, 4, 5, 16, 17, 32, 33, 34, 48] {
        for _ in 0..<200 {
            let length = Int(rng.next(upperBound: UInt64(300)))
            let body: [UInt8] = (0..<length).map { _ in UInt8(truncatingIfNeeded: rng.next() as UInt64) }
            _ = try? GossipWire.decode([1, kind] + body)
        }
    }
}

@Suite struct SecureWireTests {
    let key = try? NetworkKey(bytes: (0..<32).map { UInt8(0x40 + $0) })
    let now: UInt64 = 1_800_000_000_000

    func wire(_ i: Int, start: UInt64 = 1_799_999_999_000) throws -> SecureWire {
        try SecureWire(identity: testIdentity(i), keyring: NetworkKeyring(current: #require(key)), replayGuard: .forDatagrams(startedAt: start))
    }

    @Test func secureWire_datagram_opensOnlyAtItsRecipientOnce() throws {
        let a = try wire(1), b = try wire(2), c = try wire(3)
        let ping = GossipMessage.membership(.ping(sequence: 7, from: testIdentity(1).peerID, updates: []))
        let bytes = try a.sealDatagram(ping, to: testIdentity(2).peerID, now: now)
        #expect(try b.openDatagram(bytes, now: now) == ping)
        #expect(throws: SecureWire.Failure.datagram(.replayed(.replayed))) { try b.openDatagram(bytes, now: now) }
        #expect(throws: SecureWire.Failure.datagram(.authenticationFailed)) { try c.openDatagram(bytes, now: now) }
        #expect(b.refusals.datagrams.replayed == 1 && c.refusals.datagrams.authentication == 1)
    }

    @Test func secureWire_broadcastDatagram_carriesOnlyJoinsAndBeacons() throws {
        let a = try wire(1), b = try wire(2)
        let beacon = GossipMessage.discovery(.beacon(testRecord(1)))
        #expect(try b.openDatagram(a.sealDatagram(beacon, to: nil, now: now), now: now) == beacon)
        let ack = GossipMessage.membership(.ack(sequence: 1, from: testIdentity(1).peerID, updates: []))
        #expect(throws: SecureWire.Failure.misaddressed) { try b.openDatagram(a.sealDatagram(ack, to: nil, now: now), now: now) }
        #expect(b.refusals.misaddressed == 1)
    }

    @Test func secureWire_transfer_travelsSignedOverTheSessionAndOnlyFromItsAuthor() throws {
        let a = try wire(1), b = try wire(2)
        let transfer = PushSumAverager.Message.transfer(.init(epoch: 3, sequence: 4, weight: 2, count: 2, codec: 0, payload: .floats([1, 2])))
        #expect(throws: SecureWire.Failure.wrongTransport) { try a.sealDatagram(.averaging(transfer), to: testIdentity(2).peerID, now: now) }
        let bytes = try a.encodeSession(.averaging(transfer), to: testIdentity(2).peerID)
        #expect(try b.decodeSession(bytes, from: testIdentity(1).peerID) == .averaging(transfer))
        // The same bytes arriving over a third peer's session are not that peer's to give.
        #expect(throws: SecureWire.Failure.self) { try b.decodeSession(bytes, from: testIdentity(3).peerID) }
        #expect(b.refusals.sessionMessages == 1)
    }
}
