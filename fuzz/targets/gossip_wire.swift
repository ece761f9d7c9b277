import Crypto
import Gossip

/// Fuzzes `GossipWire.decode` over every datagram message kind (membership, sampling,
/// discovery; averaging travels over sessions and is fuzzed by the averaging target). The
/// encoding is canonical, so anything that decodes must re-encode to exactly its input, and
/// `size(of:)` must agree with it. Decoded records, claims and notices are also
/// run through signature verification, which sees the same untrusted bytes.
let verifier = RecordVerifier()

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = fuzzInput(data, size)
    guard let message = try? GossipWire.decode(bytes) else { return 0 }
    precondition((try? GossipWire.encode(message)) == bytes, "gossip message does not re-encode to its input")
    precondition(GossipWire.size(of: message) == bytes.count, "gossip size(of:) disagrees with the encoding")
    var records: [AddressRecord] = []
    var updates: [Membership.Update] = []
    switch message {
    case .membership(.ping(_, _, let u)), .membership(.ack(_, _, let u)), .membership(.nack(_, _, let u)),
         .membership(.gossip(_, let u)):
        updates = u
    case .membership(.pingRequest(_, _, let target, let u)): records = [target]; updates = u
    case .sampling(.request(_, let e)), .sampling(.reply(_, let e)), .discovery(.joinReply(let e)):
        records = e.map(\.record)
    case .discovery(.join(let r)), .discovery(.beacon(let r)): records = [r]
    case .averaging, .release, .model: preconditionFailure("a session message decoded from a datagram")
    }
    for r in records { _ = verifier.isValid(r) }
    for u in updates {
        switch u {
        case .alive(let c): _ = verifier.isValid(c)
        case .left(let n): _ = verifier.isValid(n)
        case .suspect, .dead: break
        }
    }
    return 0
}

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: FuzzArgc, _ argv: FuzzArgv) -> Int32 {
    writeSeeds(gossipSeeds()) { (try? GossipWire.decode($0)) != nil }
    return 0
}

func gossipSeeds() -> [[UInt8]] {
    guard let alice = try? Identity(seed: [UInt8](repeating: 1, count: 32)),
          let bob = try? Identity(seed: [UInt8](repeating: 2, count: 32)) else { return [] }
    let ra = AddressRecord(signedBy: alice, endpoints: [Endpoint(host: "10.0.0.1", port: 7000)], sequence: 3)
    let rb = AddressRecord(signedBy: bob, endpoints: [Endpoint(host: "node-b.example", port: 7001),
                                                      Endpoint(host: "::1", port: 7002)], sequence: 9)
    let v = Membership.Version(sequence: 9, incarnation: 2)
    let updates: [Membership.Update] = [
        .alive(AliveClaim(signedBy: bob, record: rb, incarnation: 2)),
        .suspect(bob.peerID, v, by: alice.peerID),
        .dead(bob.peerID, v, by: alice.peerID),
        .left(LeaveNotice(signedBy: alice, sequence: 4)),
    ]
    let entries = [PeerSampler.Entry(record: ra, age: 0), PeerSampler.Entry(record: rb, age: 5)]
    let messages: [GossipMessage] = [
        .membership(.ping(sequence: 1, from: alice.peerID, updates: [])),
        .membership(.ping(sequence: 2, from: alice.peerID, updates: updates)),
        .membership(.ack(sequence: 2, from: bob.peerID, updates: [updates[1]])),
        .membership(.nack(sequence: 2, from: bob.peerID, updates: [updates[3]])),
        .membership(.pingRequest(sequence: 7, from: alice.peerID, target: rb, updates: [updates[0]])),
        .membership(.gossip(from: alice.peerID, updates: updates)),
        .sampling(.request(id: 11, entries: entries)),
        .sampling(.reply(id: 11, entries: [entries[1]])),
        .discovery(.join(ra)),
        .discovery(.joinReply(entries)),
        .discovery(.beacon(rb)),
    ]
    let seeds = messages.compactMap { try? GossipWire.encode($0) }
    precondition(seeds.count == messages.count, "fuzz: a datagram seed does not encode")
    return seeds
}
