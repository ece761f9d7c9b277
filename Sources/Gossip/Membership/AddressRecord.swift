import Crypto
import Synchronization

/// Where a peer says it can be reached, signed by the peer's own Ed25519 identity.
///
/// The peer is its key, not its address: a peer that comes back at a new address signs a
/// record with a higher ``sequence`` and every node that verifies it replaces the old one.
/// A record whose signature does not verify, or whose sequence is not higher than the one
/// a node holds, is ignored. The sequence is a counter the runtime persists (see
/// ``PeerCache/ownSequence``), not a timestamp, so no clocks need to agree.
public struct AddressRecord: Hashable, Sendable, CustomStringConvertible {
    /// Most addresses one record may list: a LAN address, a public one and two spares.
    public static let maxEndpoints = 4
    /// Longest host string (an IPv6 literal with zone, or a simulator name, fits).
    public static let maxHostLength = 64
    /// Domain separation for record signatures (the project's one rule, ``SignatureDomain``),
    /// so no other signed message can pass as a record. The label is a valid constant.
    static let domain = SignatureDomain("murmuration/address-record/v1")!

    /// The record's fields, immutable and shared by every copy: a record is held by many
    /// tables of many nodes (membership, view, peer cache), and in a simulation the same
    /// record travels to thousands of them, so a copy costs one reference. The fields never
    /// change, so whether their signature verifies is worked out once and kept with them.
    private final class Fields: Sendable {
        let peer: PeerID
        let endpoints: [Endpoint]
        let sequence: UInt64
        let signature: [UInt8]
        let verdict = SignatureVerdict()

        init(peer: PeerID, endpoints: [Endpoint], sequence: UInt64, signature: [UInt8]) {
            self.peer = peer
            self.endpoints = endpoints
            self.sequence = sequence
            self.signature = signature
        }
    }

    private let fields: Fields

    /// The peer this record describes.
    public var peer: PeerID { fields.peer }
    /// Where it can be reached, preferred first. Never empty.
    public var endpoints: [Endpoint] { fields.endpoints }
    /// Grows by one each time the peer re-signs its record (new address, restart, refutation of its own death).
    public var sequence: UInt64 { fields.sequence }
    /// Ed25519 signature by `peer` over ``signedBytes``.
    public var signature: [UInt8] { fields.signature }

    /// The endpoint to contact.
    public var primary: Endpoint { endpoints[0] }

    /// Whether the record verifies, checked by `verify` the first time it is asked.
    func verified(by verify: () -> Bool) -> Bool { fields.verdict.resolve(verify) }

    /// A record signed now by `identity`. Endpoints beyond ``maxEndpoints`` are dropped.
    public init(signedBy identity: Identity, endpoints: [Endpoint], sequence: UInt64) {
        precondition(!endpoints.isEmpty, "a node must know at least one endpoint of its own")
        let kept = Array(endpoints.prefix(Self.maxEndpoints))
        let signature = identity.sign(Self.signedBytes(peer: identity.peerID, endpoints: kept, sequence: sequence))
        self.fields = Fields(peer: identity.peerID, endpoints: kept, sequence: sequence, signature: signature)
    }

    /// A record as received (unverified): check it with ``RecordVerifier`` before trusting it.
    public init(peer: PeerID, endpoints: [Endpoint], sequence: UInt64, signature: [UInt8]) {
        self.fields = Fields(peer: peer, endpoints: endpoints, sequence: sequence, signature: signature)
    }

    public static func == (a: AddressRecord, b: AddressRecord) -> Bool {
        a.fields === b.fields
            || (a.peer == b.peer && a.sequence == b.sequence && a.endpoints == b.endpoints && a.signature == b.signature)
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(peer)
        hasher.combine(sequence)
        hasher.combine(endpoints)
        hasher.combine(signature)
    }

    /// The bytes the signature covers: the domain's framing of key ‖ sequence ‖ endpoints.
    static func signedBytes(peer: PeerID, endpoints: [Endpoint], sequence: UInt64) -> [UInt8] {
        var w = ByteWriter(capacity: 128)
        GossipWire.write(peer, to: &w)
        w.writeUInt64(sequence)
        GossipWire.write(endpoints: endpoints, to: &w)
        return domain.message(w.bytes)
    }

    public var description: String { "\(peer.fingerprint)#\(sequence)@\(endpoints.first.map(\.description) ?? "-")" }
}

/// A peer's signed announcement that it leaves the network for good (this life of its record).
public struct LeaveNotice: Hashable, Sendable {
    /// Domain separation for leave signatures (a valid constant label).
    static let domain = SignatureDomain("murmuration/leave/v1")!

    /// The peer leaving.
    public let peer: PeerID
    /// The record sequence of the life that ends; a later record (a rejoin) supersedes it.
    public let sequence: UInt64
    /// Ed25519 signature by `peer` over ``signedBytes``.
    public let signature: [UInt8]

    /// A notice signed by `identity`.
    public init(signedBy identity: Identity, sequence: UInt64) {
        self.peer = identity.peerID
        self.sequence = sequence
        self.signature = identity.sign(Self.signedBytes(peer: peer, sequence: sequence))
    }

    /// A notice as received (unverified).
    public init(peer: PeerID, sequence: UInt64, signature: [UInt8]) {
        self.peer = peer
        self.sequence = sequence
        self.signature = signature
    }

    static func signedBytes(peer: PeerID, sequence: UInt64) -> [UInt8] {
        domain.message(peer.bytes + withUnsafeBytes(of: sequence.bigEndian, Array.init))
    }
}

/// A peer's claim to be alive at an incarnation of its record, signed by the peer: only the
/// peer itself can refute a suspicion of it, so no one else can keep a dead peer "alive".
public struct AliveClaim: Hashable, Sendable {
    /// Domain separation for alive claims (a valid constant label).
    static let domain = SignatureDomain("murmuration/alive/v1")!

    /// The claim's fields, immutable and shared by every copy (as a record's are), with the
    /// outcome of verifying them once worked out.
    private final class Fields: Sendable {
        let record: AddressRecord
        let incarnation: UInt32
        let signature: [UInt8]
        let verdict = SignatureVerdict()

        init(record: AddressRecord, incarnation: UInt32, signature: [UInt8]) {
            self.record = record
            self.incarnation = incarnation
            self.signature = signature
        }
    }

    private let fields: Fields

    /// The peer's record (itself signed).
    public var record: AddressRecord { fields.record }
    /// The incarnation claimed within that record.
    public var incarnation: UInt32 { fields.incarnation }
    /// Ed25519 signature by the peer over ``signedBytes``.
    public var signature: [UInt8] { fields.signature }

    /// A claim signed now by `identity` (whose record `record` is).
    public init(signedBy identity: Identity, record: AddressRecord, incarnation: UInt32) {
        let signature = identity.sign(Self.signedBytes(peer: record.peer, sequence: record.sequence, incarnation: incarnation))
        self.fields = Fields(record: record, incarnation: incarnation, signature: signature)
    }

    /// A claim as received (unverified).
    public init(record: AddressRecord, incarnation: UInt32, signature: [UInt8]) {
        self.fields = Fields(record: record, incarnation: incarnation, signature: signature)
    }

    public static func == (a: AliveClaim, b: AliveClaim) -> Bool {
        a.fields === b.fields || (a.record == b.record && a.incarnation == b.incarnation && a.signature == b.signature)
    }

    public func hash(into hasher: inout Hasher) {
        hasher.combine(record)
        hasher.combine(incarnation)
        hasher.combine(signature)
    }

    /// Whether the claim verifies, checked by `verify` the first time it is asked.
    func verified(by verify: () -> Bool) -> Bool { fields.verdict.resolve(verify) }

    /// The domain's framing of key ‖ sequence u64 ‖ incarnation u32.
    static func signedBytes(peer: PeerID, sequence: UInt64, incarnation: UInt32) -> [UInt8] {
        var w = ByteWriter(capacity: 44)
        GossipWire.write(peer, to: &w)
        w.writeUInt64(sequence)
        w.writeUInt32(incarnation)
        return domain.message(w.bytes)
    }
}

/// Checks record and leave signatures, remembering the ones already verified.
///
/// Verification is a pure function of the bytes, so its results may be shared: a node keeps
/// its own memo by default (records are heard again and again through shuffles and gossip),
/// and the simulator may hand one memo to all its nodes so that ten thousand simulated
/// nodes do not verify the same signature ten thousand times. The memo keys on the full
/// signed bytes plus the signature, so a valid signature can never vouch for other content.
public struct RecordVerifier: Sendable {
    /// A bounded, thread-safe set of (message, signature) pairs that verified.
    public final class Memo: Sendable {
        /// Pairs kept before the memo starts over. 65,536 pairs of about 200 bytes is 13 MB at
        /// most, enough to hold every record of a 10,000-node simulation a few times over.
        public static let defaultCapacity = 65_536
        private let state: Mutex<[SignatureKey: [UInt8]]>
        private let capacity: Int

        /// An empty memo holding at most `capacity` pairs.
        public init(capacity: Int = Memo.defaultCapacity) {
            self.capacity = max(1, capacity)
            self.state = Mutex([:])
        }

        /// True if exactly this message was verified under this signature.
        func contains(_ signature: SignatureKey, message: [UInt8]) -> Bool {
            state.withLock { $0[signature] == message }
        }

        func insert(_ signature: SignatureKey, message: [UInt8]) {
            state.withLock { memo in
                if memo.count >= capacity { memo.removeAll(keepingCapacity: true) }
                memo[signature] = message
            }
        }
    }

    /// A signature as eight words: cheap to hash (the bytes are already uniformly random).
    struct SignatureKey: Hashable, Sendable {
        var words: (UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64, UInt64)

        init(_ bytes: [UInt8]) {
            var w: [UInt64] = Array(repeating: 0, count: 8)
            for (i, b) in bytes.prefix(64).enumerated() { w[i / 8] = w[i / 8] << 8 | UInt64(b) }
            words = (w[0], w[1], w[2], w[3], w[4], w[5], w[6], w[7])
        }

        static func == (a: SignatureKey, b: SignatureKey) -> Bool {
            a.words.0 == b.words.0 && a.words.1 == b.words.1 && a.words.2 == b.words.2 && a.words.3 == b.words.3
                && a.words.4 == b.words.4 && a.words.5 == b.words.5 && a.words.6 == b.words.6 && a.words.7 == b.words.7
        }

        func hash(into hasher: inout Hasher) {
            hasher.combine(words.0)
            hasher.combine(words.1)
        }
    }

    /// Node-local memo capacity: a partial view, its shuffle partners and the gossip about them.
    public static let nodeMemoCapacity = 1_024
    private let memo: Memo

    /// A verifier with its own small memo.
    public init() { self.memo = Memo(capacity: Self.nodeMemoCapacity) }

    /// A verifier sharing `memo` with others.
    public init(sharing memo: Memo) { self.memo = memo }

    /// True if `record` is well formed and signed by the key it names.
    public func isValid(_ record: AddressRecord) -> Bool {
        record.verified {
            guard !record.endpoints.isEmpty, record.endpoints.count <= AddressRecord.maxEndpoints,
                  record.signature.count == Identity.signatureLength
            else { return false }
            let message = AddressRecord.signedBytes(peer: record.peer, endpoints: record.endpoints, sequence: record.sequence)
            return check(peer: record.peer, message: message, signature: record.signature)
        }
    }

    /// True if the claim's record is valid and the claim is signed by the same peer.
    public func isValid(_ claim: AliveClaim) -> Bool {
        claim.verified {
            guard isValid(claim.record), claim.signature.count == Identity.signatureLength else { return false }
            let message = AliveClaim.signedBytes(peer: claim.record.peer, sequence: claim.record.sequence, incarnation: claim.incarnation)
            return check(peer: claim.record.peer, message: message, signature: claim.signature)
        }
    }

    /// True if `notice` is signed by the peer it names.
    public func isValid(_ notice: LeaveNotice) -> Bool {
        guard notice.signature.count == Identity.signatureLength else { return false }
        return check(peer: notice.peer, message: LeaveNotice.signedBytes(peer: notice.peer, sequence: notice.sequence), signature: notice.signature)
    }

    private func check(peer: PeerID, message: [UInt8], signature: [UInt8]) -> Bool {
        let key = SignatureKey(signature)
        if memo.contains(key, message: message) { return true }
        guard peer.verify(signature: signature, message: message) else { return false }
        memo.insert(key, message: message)
        return true
    }
}

/// The outcome of verifying immutable signed content, worked out once: content that cannot
/// change verifies the same way every time, however many nodes or threads hold it.
struct SignatureVerdict: ~Copyable, Sendable {
    private static let unknown: UInt8 = 0, valid: UInt8 = 1, invalid: UInt8 = 2
    private let state = Atomic<UInt8>(SignatureVerdict.unknown)

    /// The verdict, from `verify` the first time (two threads may both verify: same answer).
    func resolve(_ verify: () -> Bool) -> Bool {
        switch state.load(ordering: .acquiring) {
        case Self.valid: return true
        case Self.invalid: return false
        default:
            let ok = verify()
            state.store(ok ? Self.valid : Self.invalid, ordering: .releasing)
            return ok
        }
    }
}
