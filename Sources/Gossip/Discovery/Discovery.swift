import Crypto

/// Finding peers: bootstrap addresses, signed LAN beacons, the persisted peer cache, and
/// re-bootstrap with exponential backoff when the node finds itself alone.
///
/// Peer exchange happens in the sampler's shuffles; this component only gets a node (back)
/// into the overlay. While ``isBootstrapping``, each attempt sends a join request to a few
/// candidates drawn from the bootstrap list and the cache, then waits twice as long as
/// before (with ±25 % jitter, so a whole partition does not retry in lockstep) up to
/// ``Settings/rebootstrapMaxDelay``. Any join answer or completed shuffle ends it.
///
/// Peers declared dead stay reconnect candidates for a while: every reconnect interval the
/// node sends a join to one of them (after Serf's reconnect). After a partition heals, the
/// answer brings the other side's peers back into the view, and the exchange makes each side
/// refute the other's tombstone of it (see `GossipNode`).
public struct Discovery: Sendable {
    public typealias Action = NodeAction<Message, Timer, Event>

    public enum Message: Hashable, Sendable {
        /// Let me in: here is my record. Answered with entries of the responder's view.
        case join(AddressRecord)
        /// The responder's own entry first, then a sample of its view.
        case joinReply([PeerSampler.Entry])
        /// "I am here", multicast on the LAN every beacon interval.
        case beacon(AddressRecord)
    }

    public enum Timer: Hashable, Sendable {
        case rebootstrap
        case beacon
        case reconnect
    }

    public enum Event: Hashable, Sendable {
        /// Attempt `attempt` (from 1) contacted these endpoints; the next follows after `delay`.
        case rebootstrapAttempt(attempt: Int, contacted: [Endpoint], delay: Duration)
        /// The node is in the overlay again.
        case rebootstrapped(attempts: Int)
        /// A join went to a peer declared dead earlier.
        case reconnectAttempt(PeerID)
    }

    struct Departed: Sendable {
        var record: AddressRecord
        var since: Instant
    }

    /// Re-bootstrap delays vary by ±25 %: enough that nodes cut off together (a partition, a
    /// restarted LAN) spread their retries over half a backoff step instead of all at once.
    static let jitter = 0.25

    public let settings: Settings
    /// Peers worth trying after a restart; the runtime persists it.
    public private(set) var cache: PeerCache
    /// Attempts made in the current re-bootstrap (0 when not bootstrapping).
    public private(set) var attempt = 0
    /// True while the node is trying to (re)join.
    public private(set) var isBootstrapping = false
    /// Peers declared dead, most recent last: reconnect candidates.
    var departed: [Departed] = []
    var rng: SplitMix64

    public init(settings: Settings = .init(), cache: PeerCache, rng: SplitMix64) {
        self.settings = settings
        self.cache = cache
        self.rng = rng
    }

    /// Starts beacons, and bootstrapping if there is anyone to ask.
    public mutating func onStart(at now: Instant) -> [Action] {
        var out: [Action] = []
        attempt = 0
        isBootstrapping = false
        if settings.beaconEndpoint != nil { out.append(.schedule(.beacon, at: now)) }
        out.append(.schedule(.reconnect, at: now + settings.reconnectInterval))
        if !settings.bootstrap.isEmpty || !cache.records.isEmpty { out += begin(at: now) }
        return out
    }

    /// Enters re-bootstrap (no-op if already in it): the first attempt goes out now.
    public mutating func begin(at now: Instant) -> [Action] {
        guard !isBootstrapping else { return [] }
        isBootstrapping = true
        attempt = 0
        return [.schedule(.rebootstrap, at: now)]
    }

    /// The node is connected again: stop retrying and reset the backoff.
    public mutating func succeeded() -> [Action] {
        guard isBootstrapping else { return [] }
        isBootstrapping = false
        defer { attempt = 0 }
        return [.cancel(.rebootstrap), .report(.rebootstrapped(attempts: attempt))]
    }

    /// The delay after attempt `n` (from 1), before jitter: initial · 2^(n−1), capped.
    public func backoff(afterAttempt n: Int) -> Duration {
        let initial = settings.rebootstrapInitialDelay.nanosecondsClamped
        let cap = settings.rebootstrapMaxDelay.nanosecondsClamped
        let shift = min(max(n - 1, 0), 40)
        let (scaled, overflow) = initial.multipliedReportingOverflow(by: Int64(1) << shift)
        return .nanoseconds(overflow ? cap : min(scaled, cap))
    }

    public mutating func onTimer(_ timer: Timer, me: AddressRecord, at now: Instant) -> [Action] {
        switch timer {
        case .beacon:
            guard let group = settings.beaconEndpoint else { return [] }
            return [.send(.beacon(me), to: group, via: .datagram(to: nil)), .schedule(.beacon, at: now + settings.beaconInterval)]
        case .reconnect:
            var out: [Action] = [.schedule(.reconnect, at: now + settings.reconnectInterval)]
            let horizon = now.nanoseconds - settings.departedLifetime.nanosecondsClamped
            departed.removeAll { $0.since.nanoseconds <= horizon }
            guard !departed.isEmpty else { return out }
            let pick = departed[Int(rng.next(upperBound: UInt64(departed.count)))].record
            out.append(.send(.join(me), to: pick.primary, via: .datagram(to: pick.peer)))
            out.append(.report(.reconnectAttempt(pick.peer)))
            return out
        case .rebootstrap:
            guard isBootstrapping else { return [] }
            attempt += 1
            var candidates = settings.bootstrap + cache.records.map(\.primary)
            candidates.removeAll { me.endpoints.contains($0) }
            candidates = Array(Set(candidates)).sorted()
            candidates.shuffle(using: &rng)
            let contacted = Array(candidates.prefix(settings.joinFanout))
            let base = backoff(afterAttempt: attempt).nanosecondsClamped
            let spread = Int64(Double(base) * Self.jitter)
            let offset = Int64(rng.next(upperBound: UInt64(max(1, 2 * spread))))
            let delay = Duration.nanoseconds(base - spread + offset)
            // A cached peer's join is sealed for it; a bootstrap address's peer is not known yet.
            var out: [Action] = contacted.map { endpoint in
                .send(.join(me), to: endpoint, via: .datagram(to: cache.records.first { $0.primary == endpoint }?.peer))
            }
            out.append(.schedule(.rebootstrap, at: now + delay))
            out.append(.report(.rebootstrapAttempt(attempt: attempt, contacted: contacted, delay: delay)))
            return out
        }
    }

    /// Remembers a peer seen alive (most recent first).
    public mutating func remember(_ record: AddressRecord) {
        cache.remember(record, capacity: settings.cacheCapacity)
    }

    /// Forgets a peer that left or was declared dead; a dead one becomes a reconnect candidate.
    public mutating func forget(_ peer: PeerID, departed record: AddressRecord? = nil, at now: Instant = .zero) {
        cache.forget(peer)
        departed.removeAll { $0.record.peer == peer }
        guard let record else { return }
        departed.append(Departed(record: record, since: now))
        if departed.count > settings.departedCapacity { departed.removeFirst(departed.count - settings.departedCapacity) }
    }

    /// A peer is back (alive again, or in the view): no need to reconnect to it.
    public mutating func returned(_ peer: PeerID) {
        departed.removeAll { $0.record.peer == peer }
    }

    /// Reconnect candidates (peers declared dead, not yet back or expired).
    public var reconnectCandidates: [AddressRecord] { departed.map(\.record) }

    /// Records that this node now signs records up to `sequence`.
    public mutating func noteOwnSequence(_ sequence: UInt64) { cache.ownSequence = max(cache.ownSequence, sequence) }
}

/// What a node persists between runs: the last record sequence it signed (so the next run
/// signs a higher one and its new address wins) and records of peers recently seen alive.
///
/// A plain value; the runtime writes ``encoded()`` to disk and reads it with
/// ``init(decoding:)``. Records are re-verified when used, not trusted from the file.
public struct PeerCache: Sendable, Equatable {
    static let magic: [UInt8] = Array("MPC1".utf8)
    /// Most records a cache file may hold; a larger count is refused before allocating.
    public static let maxRecords = 4_096

    /// The highest record sequence this node has signed.
    public var ownSequence: UInt64
    /// Peers recently seen alive, most recent first.
    public private(set) var records: [AddressRecord]

    public init(ownSequence: UInt64 = 0, records: [AddressRecord] = []) {
        self.ownSequence = ownSequence
        self.records = Array(records.prefix(Self.maxRecords))
    }

    mutating func remember(_ record: AddressRecord, capacity: Int) {
        if let i = records.firstIndex(where: { $0.peer == record.peer }) {
            guard records[i].sequence <= record.sequence else { return }
            records.remove(at: i)
        }
        // Make room first and grow straight to the capacity, so the array never holds more
        // than it may keep (a simulation keeps a million of these).
        if records.count >= capacity { records.removeLast(records.count - capacity + 1) }
        if records.capacity < capacity, records.count == records.capacity { records.reserveCapacity(capacity) }
        records.insert(record, at: 0)
    }

    mutating func forget(_ peer: PeerID) { records.removeAll { $0.peer == peer } }

    /// The file format: "MPC1", own sequence (u64), count (u16), records (as on the wire).
    public func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: 16 + records.count * 128)
        w.write(bytes: Self.magic)
        w.writeUInt64(ownSequence)
        w.writeUInt16(UInt16(records.count))
        for r in records { GossipWire.write(r, to: &w) }
        return w.bytes
    }

    /// Reads a cache file, refusing anything malformed with a ``WireError`` that names the field.
    public init(decoding bytes: [UInt8]) throws(WireError) {
        var r = ByteReader(bytes)
        let magic = try r.readBytes(4, "peer cache magic")
        guard magic == Self.magic else { throw .invalidValue(field: "peer cache magic", reason: "not a Murmuration peer cache (expected MPC1)") }
        let own = try r.readUInt64("own sequence")
        let count = Int(try r.readUInt16("record count"))
        guard count <= Self.maxRecords else { throw .lengthTooLarge(field: "record count", declared: UInt64(count), maximum: Self.maxRecords) }
        var records: [AddressRecord] = []
        records.reserveCapacity(count)
        for _ in 0..<count { records.append(try GossipWire.readRecord(&r)) }
        try r.expectEnd()
        self.init(ownSequence: own, records: records)
    }
}
