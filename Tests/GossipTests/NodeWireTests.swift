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
        .averaging(.ack(epoch: 1, sequence: 2)),
    ]
    for m in messages {
        let bytes = GossipWire.encode(m)
        #expect(bytes.count == m.wireSize)
        let decoded = try GossipWire.decode(bytes)
        #expect(GossipWire.encode(decoded) == bytes)
    }
}

@Test func node_wireFormat_rejectsTruncatedOversizedAndUnknownInputWithoutTrapping() {
    let full = GossipWire.encode(.membership(.gossip(from: testIdentity(1).peerID, updates: [testAlive(1, testRecord(1), incarnation: 0)])))
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
