import Glibc

/// Milliseconds since the Unix epoch on this machine's real-time clock. Drivers read it and
/// pass it in; the sans-IO core never reads a clock itself.
public enum WallClock {
    /// The current wall-clock time in milliseconds since 1970-01-01 UTC.
    public static func milliseconds() -> UInt64 {
        var ts = timespec()
        clock_gettime(CLOCK_REALTIME, &ts)
        return UInt64(max(0, ts.tv_sec)) * 1_000 + UInt64(max(0, ts.tv_nsec)) / 1_000_000
    }
}

/// Refuses a message that was accepted before, that is too old, or that claims a time too
/// far ahead of the local clock. The one replay defence of the project: client hellos are
/// keyed by the initiator's ephemeral key, datagrams by their random nonce.
///
/// The invariant: every key ever recorded is either still remembered or has a timestamp at
/// or below ``floor``, and nothing at or below the floor is accepted. Keys leave memory only
/// by expiring (older than ``Settings/maxAge``) or by eviction when ``Settings/capacity`` is
/// reached; both raise the floor to the leaving key's timestamp, so neither reopens a replay,
/// whatever the clock does. A guard made at start-up begins with its floor at the start time,
/// so what was recorded before a restart stays refused without being persisted.
///
/// Keys are compared on their first 16 bytes (random, so distinct keys collide with
/// probability 2^-128). One owner: share one guard among all connections of a process.
public final class ReplayGuard {
    /// Bounds of a guard, in milliseconds and entries.
    public struct Settings: Sendable, Hashable {
        /// Oldest timestamp accepted, behind the local clock.
        public var maxAge: UInt64
        /// Furthest timestamp accepted ahead of the local clock (tolerated clock skew).
        public var maxLead: UInt64
        /// Keys remembered at once. The guard refuses nothing legitimate while fewer than
        /// `capacity` messages arrive within `maxAge`; beyond that the floor rises and the
        /// oldest accepted times move up.
        public var capacity: Int

        public init(maxAge: UInt64, maxLead: UInt64, capacity: Int) {
            self.maxAge = maxAge
            self.maxLead = maxLead
            self.capacity = max(1, capacity)
        }

        /// Client hellos: timestamps are whole seconds, accepted within 60 s either side of
        /// the local clock (peers need clocks within a minute of each other, as NTP keeps
        /// them); 16,384 hellos a minute is 270 handshakes a second, far above what a peer
        /// with a partial view of about 30 peers opens. About 0.9 MiB when full (``memoryBound``).
        public static let handshake = Settings(maxAge: 60_000, maxLead: 60_000, capacity: 16_384)
        /// Datagrams: accepted 30 s old or 30 s ahead; 65,536 datagrams in 30 s is over
        /// 2,000 a second, far above the membership protocol's rate. About 3.5 MiB when full.
        public static let datagram = Settings(maxAge: 30_000, maxLead: 30_000, capacity: 65_536)

        /// Bytes the guard holds when full: a hash-set bucket (16-byte key, load factor
        /// at most 3/4, rounded to a power of two) and a ring entry (key and timestamp) per key.
        public var memoryBound: Int {
            var buckets = 1
            while buckets * 3 < capacity * 4 { buckets <<= 1 }
            return buckets * 16 + capacity * 24
        }
    }

    /// Why a message was refused.
    public enum Refusal: Error, Equatable, Sendable, CustomStringConvertible {
        /// Accepted before.
        case replayed
        /// Older than the freshness bound, or not newer than what the guard forgot or saw
        /// before a restart.
        case stale(timestamp: UInt64, oldestAccepted: UInt64)
        /// Further ahead of the local clock than the tolerated skew.
        case ahead(timestamp: UInt64, latestAccepted: UInt64)

        public var description: String {
            switch self {
            case .replayed: return "seen before (replayed)"
            case let .stale(t, oldest): return "timestamp \(t) ms is older than the oldest accepted, \(oldest) ms (replayed, or the sender's clock is behind)"
            case let .ahead(t, latest): return "timestamp \(t) ms is ahead of the latest accepted, \(latest) ms (the sender's clock is ahead)"
            }
        }
    }

    private struct Key: Hashable {
        var high: UInt64
        var low: UInt64

        init(_ bytes: some Collection<UInt8>) {
            var h: UInt64 = 0, l: UInt64 = 0
            for (i, b) in bytes.prefix(16).enumerated() {
                if i < 8 { h = h << 8 | UInt64(b) } else { l = l << 8 | UInt64(b) }
            }
            high = h
            low = l
        }
    }

    public let settings: Settings
    /// Nothing at or below this timestamp (ms) is accepted.
    public private(set) var floor: UInt64
    private var seen: Set<Key>
    private var ring: [(key: Key, timestamp: UInt64)] = []
    private var head = 0

    /// A guard that refuses every timestamp at or below `floor` (for example the start time).
    public init(settings: Settings, floor: UInt64) {
        self.settings = settings
        self.floor = floor
        seen = Set(minimumCapacity: settings.capacity)
        ring.reserveCapacity(settings.capacity)
    }

    /// Keys remembered now.
    public var count: Int { seen.count }

    /// Whether a message with `key` and `timestamp` would be accepted at `now`. Changes nothing.
    public func check(key: some Collection<UInt8>, timestamp: UInt64, now: UInt64) throws(Refusal) {
        let oldest = max(floor &+ 1, now >= settings.maxAge ? now - settings.maxAge : 0)
        guard timestamp >= oldest else { throw .stale(timestamp: timestamp, oldestAccepted: oldest) }
        let (latest, overflow) = now.addingReportingOverflow(settings.maxLead)
        guard overflow || timestamp <= latest else { throw .ahead(timestamp: timestamp, latestAccepted: latest) }
        guard !seen.contains(Key(key)) else { throw .replayed }
    }

    /// Checks and records a message. Call only after it authenticated, so that nobody
    /// without the key can fill the guard.
    public func record(key: some Collection<UInt8>, timestamp: UInt64, now: UInt64) throws(Refusal) {
        try check(key: key, timestamp: timestamp, now: now)
        expire(now: now)
        if seen.count >= settings.capacity { forgetOldest() }
        let k = Key(key)
        seen.insert(k)
        if ring.count < settings.capacity {
            ring.append((k, timestamp))
        } else {
            ring[(head + seen.count - 1) % settings.capacity] = (k, timestamp)
        }
    }

    /// Forgets, in arrival order, keys whose timestamps are past the freshness bound.
    private func expire(now: UInt64) {
        guard now > settings.maxAge else { return }
        let bound = now - settings.maxAge
        while !seen.isEmpty, ring[head].timestamp < bound { forgetOldest() }
    }

    private func forgetOldest() {
        let entry = ring[head]
        seen.remove(entry.key)
        floor = max(floor, entry.timestamp)
        head = (head + 1) % settings.capacity
    }
}
