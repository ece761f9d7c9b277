/// Limits how many datagrams failing authentication one source address (host) may make the
/// node open, so one noisy address cannot take the loop's time from the others.
///
/// Each host has a token bucket of failures: every datagram from it that fails to open takes
/// a token, and while the bucket is empty its datagrams are dropped unopened. A source
/// endpoint (host and port) that sent an authentic datagram recently is trusted and always
/// opened, so an attacker sharing an honest peer's address (a NAT, the relay, 127.0.0.1 in
/// tests) throttles only itself and newcomers from that address, which get through as the
/// bucket refills.
public struct AuthenticationThrottle {
    /// Failures a host may cause in a burst, and per second after it: opening a refused
    /// datagram costs a few microseconds, so a throttled host costs the node well under 1 %
    /// of a core.
    public static let burst = 256.0
    public static let failuresPerSecond = 1_000.0
    /// How long an endpoint stays trusted after its last authentic datagram.
    public static let trustMilliseconds: UInt64 = 600_000
    /// Most hosts and trusted endpoints remembered; the least recently seen is forgotten first.
    public static let maxHosts = 1_024
    public static let maxTrusted = 4_096

    private struct Bucket {
        var tokens: Double
        var updated: UInt64
    }

    private var buckets: [String: Bucket] = [:]
    private var trusted: [Endpoint: UInt64] = [:]

    public init() {}

    /// Whether to open a datagram from `source` at `now` (ms).
    public mutating func admits(_ source: Endpoint, now: UInt64) -> Bool {
        if let last = trusted[source], now &- last < Self.trustMilliseconds { return true }
        guard var bucket = buckets[source.host] else { return true }
        refill(&bucket, now: now)
        buckets[source.host] = bucket
        return bucket.tokens >= 1
    }

    /// Records that a datagram from `source` failed to open.
    public mutating func failed(_ source: Endpoint, now: UInt64) {
        var bucket = buckets[source.host] ?? Bucket(tokens: Self.burst, updated: now)
        refill(&bucket, now: now)
        bucket.tokens = max(0, bucket.tokens - 1)
        if buckets[source.host] == nil, buckets.count >= Self.maxHosts { forgetOldest(&buckets, \.updated) }
        buckets[source.host] = bucket
    }

    /// Records that a datagram from `source` was authentic.
    public mutating func authenticated(_ source: Endpoint, now: UInt64) {
        if trusted[source] == nil, trusted.count >= Self.maxTrusted { forgetOldest(&trusted, \.self) }
        trusted[source] = now
    }

    private func refill(_ bucket: inout Bucket, now: UInt64) {
        let elapsed = Double(now &- bucket.updated) / 1_000
        bucket.tokens = min(Self.burst, bucket.tokens + elapsed * Self.failuresPerSecond)
        bucket.updated = now
    }

    /// Removes the entry seen longest ago (ties broken by key, so the choice never depends on
    /// the process's hash seed).
    private func forgetOldest<Key: Comparable, Value>(_ table: inout [Key: Value], _ time: KeyPath<Value, UInt64>) {
        guard let oldest = table.min(by: { ($0.value[keyPath: time], $0.key) < ($1.value[keyPath: time], $1.key) }) else { return }
        table.removeValue(forKey: oldest.key)
    }
}
