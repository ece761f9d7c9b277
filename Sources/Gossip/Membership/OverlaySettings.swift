/// Every timer and count of membership, peer sampling, discovery and averaging, in one place.
///
/// Each component's `Settings` defaults to the LAN profile; ``OverlaySettings`` bundles the
/// three and offers the named profiles ``lan``, ``wan`` and ``local`` (after
/// hashicorp/memberlist's `DefaultLANConfig`, `DefaultWANConfig`, `DefaultLocalConfig`).
/// The reason for every default is written next to it; `docs/membership.md` has the table.
public struct OverlaySettings: Sendable {
    public var membership: Membership.Settings
    public var sampling: PeerSampler.Settings
    public var discovery: Discovery.Settings
    /// Push-sum averaging, for the nodes that average (the composite node is handed its
    /// averager; drivers build it with these settings).
    public var averaging: PushSumAverager.Settings

    public init(
        membership: Membership.Settings = .init(), sampling: PeerSampler.Settings = .init(),
        discovery: Discovery.Settings = .init(), averaging: PushSumAverager.Settings = .init()
    ) {
        self.membership = membership
        self.sampling = sampling
        self.discovery = discovery
        self.averaging = averaging
    }

    /// A local network: sub-millisecond round trips, rare loss. The defaults.
    public static var lan: OverlaySettings { OverlaySettings() }

    /// The Internet: round trips of hundreds of milliseconds, more loss, costlier traffic.
    /// Probes and shuffles slow down five-fold, suspicion lasts longer, no multicast beacons.
    public static var wan: OverlaySettings {
        var s = OverlaySettings()
        s.membership.probeInterval = .seconds(5)
        s.membership.probeTimeout = .seconds(3)
        s.membership.suspicionMultiplier = 6
        s.membership.gossipInterval = .milliseconds(500)
        s.membership.gossipFanout = 4
        s.membership.tombstoneLifetime = .seconds(600)
        s.sampling.shuffleInterval = .seconds(5)
        s.sampling.shuffleTimeout = .seconds(3)
        s.discovery.beaconEndpoint = nil
        s.discovery.isolationTimeout = .seconds(120)
        s.discovery.reconnectInterval = .seconds(30)
        // A share every second, retried after two: above a WAN round trip, so a slow ack is
        // not taken for a loss.
        s.averaging.tickInterval = .seconds(1)
        s.averaging.retransmitInterval = .seconds(2)
        return s
    }

    /// One host (tests, a laptop demo): loopback round trips, no loss; detect failures fast.
    public static var local: OverlaySettings {
        var s = OverlaySettings()
        s.membership.probeTimeout = .milliseconds(200)
        s.membership.indirectChecks = 1
        s.membership.suspicionMultiplier = 3
        s.membership.retransmitMultiplier = 2
        s.membership.gossipInterval = .milliseconds(100)
        s.membership.tombstoneLifetime = .seconds(30)
        // A leaver lingers 1 s after its hand-off and acknowledges retransmissions every 100 ms
        // here, so 3 s lets its last acks arrive; a peer that leaves soon after is not held up.
        s.membership.leftReclaimDelay = .seconds(3)
        s.sampling.shuffleInterval = .milliseconds(500)
        s.sampling.shuffleTimeout = .milliseconds(200)
        s.discovery.beaconInterval = .seconds(2)
        s.discovery.isolationTimeout = .seconds(10)
        s.discovery.reconnectInterval = .seconds(5)
        s.averaging.tickInterval = .milliseconds(100)
        s.averaging.retransmitInterval = .milliseconds(50)
        return s
    }
}

extension Membership {
    /// Timers and counts of SWIM probing, Lifeguard and dissemination. Defaults: LAN profile.
    public struct Settings: Sendable {
        /// Time between two probes of this node (before the local-health multiplier).
        /// 1 s, memberlist's LAN value: each member is probed about once a second by
        /// someone, so a crash is noticed within seconds at one message pair per second.
        public var probeInterval: Duration = .seconds(1)
        /// Wait for a direct ack before asking helpers. 500 ms is far above a LAN round trip
        /// and leaves half the probe interval for the indirect round (memberlist LAN).
        public var probeTimeout: Duration = .milliseconds(500)
        /// Helpers asked to ping a silent target (SWIM's k). 3: a lost datagram on the direct
        /// path alone no longer raises suspicion (memberlist and swift-cluster-membership).
        public var indirectChecks = 3
        /// A helper whose own ping gets no ack within this fraction of the probe timeout
        /// sends a nack, so the requester can tell "target silent" from "I am unhealthy".
        /// 0.8 is Lifeguard's value: late enough for a slow ack, early enough to arrive.
        public var nackFraction = 0.8
        /// Largest local-health multiplier on probe interval and timeout (Lifeguard's 8):
        /// an overloaded node probes up to 8x more slowly instead of accusing healthy peers.
        public var maxLocalHealthMultiplier = 8
        /// Suspicion timeout floor = multiplier · max(1, log10 n) · probe interval. 4 gives a
        /// refutation several gossip rounds to arrive (memberlist LAN).
        public var suspicionMultiplier = 4
        /// Suspicion starts at this multiple of the floor and shrinks towards it as other
        /// members confirm (Lifeguard; memberlist's SuspicionMaxTimeoutMult = 6). A lone,
        /// possibly unhealthy accuser waits long; many independent accusers act fast.
        public var suspicionMaxTimeoutMultiplier = 6
        /// Each update is retransmitted multiplier · ceil(log10(n + 1)) times. 4, memberlist's
        /// LAN value, reaches every node of an epidemic with high probability despite loss.
        public var retransmitMultiplier = 4
        /// Time between two gossip messages carrying pending updates (sent only when there are
        /// updates). 200 ms spreads a suspicion through 1,000 nodes in about two seconds.
        public var gossipInterval: Duration = .milliseconds(200)
        /// Peers of the view each gossip message goes to (memberlist LAN: 3).
        public var gossipFanout = 3
        /// Most updates piggybacked on one message. 8 keeps a message with full address
        /// records near 1 kB (swift-cluster-membership allows 12 smaller ones).
        public var maxUpdatesPerMessage = 8
        /// Most bytes of updates per message: 1,024 keeps every membership datagram below the
        /// 1,280-byte IPv6 minimum MTU with headers and the datagram seal.
        public var maxUpdateBytes = 1_024
        /// Updates waiting for retransmission. 128 bounds memory and traffic per node
        /// whatever the network's size; the most-retransmitted are dropped first.
        public var broadcastQueueCapacity = 128
        /// Rumours and tombstones kept about peers this node does not watch. 512 entries
        /// (about 40 kB) covers the deaths of a few minutes in a large, churning network.
        public var hearsayCapacity = 512
        /// Probe intervals allowed, in ``Membership/detectionBound``, for the first failed
        /// probe of a crashed peer and the spread of its suspicion. A peer is in about a
        /// view's worth of views, each probing one of its peers per interval, so it is probed
        /// about once per interval: five leave e^-5 < 1 % for no probe at all, plus gossip time.
        public var detectionSlackProbes = 5
        /// After a peer announces its leave, averaging shares still in flight to it are taken
        /// back only this much later. A leaver refuses new shares but still acknowledges
        /// retransmissions of shares it applied before leaving; waiting lets those acks arrive
        /// (many retransmission intervals), so no applied share is taken back and counted twice.
        public var leftReclaimDelay: Duration = .seconds(10)
        /// How long a dead or left peer's tombstone (and any rumour) is kept, so its stale
        /// record circulating in shuffles is not taken back in. 2 minutes outlives a record
        /// in Cyclon views (removed within about view-size shuffle rounds).
        public var tombstoneLifetime: Duration = .seconds(120)

        public init() {}
    }
}

extension PeerSampler {
    /// Timers and sizes of Cyclon peer sampling. Defaults: LAN profile.
    public struct Settings: Sendable {
        /// Entries in the partial view. 24 (Cyclon uses 8–30) keeps the random overlay
        /// connected with overwhelming probability up to millions of nodes, while memory
        /// and probe load per node stay constant.
        public var viewSize = 24
        /// Entries exchanged per shuffle (Cyclon's l). 6 (a quarter of the view) renews the
        /// view within a few rounds and keeps a shuffle message near 1 kB.
        public var shuffleLength = 6
        /// Time between two shuffles started by this node (one Cyclon round). 1 s matches
        /// the probe interval: one shuffle and one probe per node per second.
        public var shuffleInterval: Duration = .seconds(1)
        /// Wait for a shuffle reply before counting a failure: a round trip plus slack.
        public var shuffleTimeout: Duration = .milliseconds(500)
        /// Consecutive failed shuffles before a peer is dropped from the view. 3: a peer
        /// behind a link losing 30 % of datagrams survives a failed round trip (51 %) three
        /// times in a row with only 13 % probability of being dropped, and membership
        /// removes dead peers anyway.
        public var maxShuffleFailures = 3
        /// Extra shuffles started at once after a timeout, per round. 1 restores the rate of
        /// completed shuffles of a node behind a lossy link, which otherwise plants fewer
        /// pointers to itself and is under-sampled (Tölgyesi & Jelasity).
        public var retriesPerRound = 1

        public init() {}
    }
}

extension Discovery {
    /// Where to find peers and how hard to try. Defaults: LAN profile.
    public struct Settings: Sendable {
        /// Known addresses to join through (from flags or configuration).
        public var bootstrap: [Endpoint] = []
        /// Where LAN beacons go: an administratively scoped IPv4 multicast group. nil turns
        /// beacons off (the WAN profile: multicast does not cross the Internet).
        public var beaconEndpoint: Endpoint? = Endpoint(host: "239.255.77.77", port: 47_077)
        /// Time between two beacons. 10 s finds a LAN neighbour quickly at a negligible cost.
        public var beaconInterval: Duration = .seconds(10)
        /// First retry delay of a re-bootstrap; doubles per attempt. 1 s: one probe interval.
        public var rebootstrapInitialDelay: Duration = .seconds(1)
        /// Longest delay between re-bootstrap attempts. 60 s: an isolated node still finds a
        /// recovering network within a minute, without hammering bootstrap peers.
        public var rebootstrapMaxDelay: Duration = .seconds(60)
        /// Candidates contacted per attempt. 3 survives one dead and one lossy candidate.
        public var joinFanout = 3
        /// A node that has heard no peer for this long considers itself cut off and
        /// re-bootstraps. 30 s is many probe and shuffle rounds of silence.
        public var isolationTimeout: Duration = .seconds(30)
        /// Records kept in the persisted peer cache. 64 is several views' worth: enough that
        /// some are still reachable after a long absence.
        public var cacheCapacity = 64
        /// Time between two attempts to reach a peer declared dead (Serf's reconnect, 30 s
        /// there). 10 s: after a partition heals, each side finds the other within a few
        /// attempts of a few of its nodes; while nothing heals it costs one datagram pair.
        public var reconnectInterval: Duration = .seconds(10)
        /// How long a peer declared dead stays a reconnect candidate. 30 minutes covers long
        /// outages and partitions; 32 candidates at most bound the memory.
        public var departedLifetime: Duration = .seconds(1_800)
        /// Most reconnect candidates kept (the most recent deaths win).
        public var departedCapacity = 32

        public init() {}
    }
}

/// A setting outside the range the protocol works in.
public struct SettingsError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The setting's path, for example `membership.probeInterval`.
    public var setting: String
    /// What the setting holds.
    public var value: String
    /// What is allowed.
    public var allowed: String

    public var description: String { "setting \(setting) = \(value) is out of range: \(allowed)" }
}

/// Collects the checks of one settings struct under a path prefix.
struct SettingsCheck {
    let prefix: String

    func positive(_ name: String, _ d: Duration) throws(SettingsError) {
        guard d > .zero else { throw SettingsError(setting: prefix + name, value: "\(d)", allowed: "a duration above zero") }
    }

    func nonNegative(_ name: String, _ d: Duration) throws(SettingsError) {
        guard d >= .zero else { throw SettingsError(setting: prefix + name, value: "\(d)", allowed: "a duration of zero or more") }
    }

    func atLeast(_ name: String, _ value: Int, _ minimum: Int) throws(SettingsError) {
        guard value >= minimum else { throw SettingsError(setting: prefix + name, value: "\(value)", allowed: "at least \(minimum)") }
    }

    func within(_ name: String, _ value: Int, _ range: ClosedRange<Int>) throws(SettingsError) {
        guard range.contains(value) else {
            throw SettingsError(setting: prefix + name, value: "\(value)", allowed: "\(range.lowerBound) to \(range.upperBound)")
        }
    }

    func fraction(_ name: String, _ value: Double, includingOne: Bool) throws(SettingsError) {
        guard value > 0, includingOne ? value <= 1 : value < 1 else {
            throw SettingsError(setting: prefix + name, value: "\(value)", allowed: includingOne ? "above 0, at most 1" : "strictly between 0 and 1")
        }
    }
}

extension OverlaySettings {
    /// Checks every setting; the error names the first one out of range. A zero interval or
    /// multiplier would make a node spin (a livelock in the simulator, a busy loop in a peer).
    public func validate() throws(SettingsError) {
        try membership.validate()
        try sampling.validate()
        try discovery.validate()
        try averaging.validate()
    }
}

extension Membership.Settings {
    /// Checks every setting (see ``OverlaySettings/validate()``).
    public func validate() throws(SettingsError) {
        let c = SettingsCheck(prefix: "membership.")
        try c.positive("probeInterval", probeInterval)
        try c.positive("probeTimeout", probeTimeout)
        guard probeTimeout <= probeInterval else {
            throw SettingsError(setting: "membership.probeTimeout", value: "\(probeTimeout)",
                                allowed: "at most membership.probeInterval (\(probeInterval)): the indirect round must fit")
        }
        try c.atLeast("indirectChecks", indirectChecks, 0)
        try c.fraction("nackFraction", nackFraction, includingOne: false)
        try c.atLeast("maxLocalHealthMultiplier", maxLocalHealthMultiplier, 1)
        try c.atLeast("suspicionMultiplier", suspicionMultiplier, 1)
        try c.atLeast("suspicionMaxTimeoutMultiplier", suspicionMaxTimeoutMultiplier, 1)
        try c.atLeast("retransmitMultiplier", retransmitMultiplier, 1)
        try c.positive("gossipInterval", gossipInterval)
        try c.atLeast("gossipFanout", gossipFanout, 1)
        try c.atLeast("maxUpdatesPerMessage", maxUpdatesPerMessage, 1)
        // One update with a full address record must fit.
        try c.atLeast("maxUpdateBytes", maxUpdateBytes, 256)
        try c.atLeast("broadcastQueueCapacity", broadcastQueueCapacity, 1)
        try c.atLeast("hearsayCapacity", hearsayCapacity, 1)
        try c.atLeast("detectionSlackProbes", detectionSlackProbes, 1)
        try c.nonNegative("leftReclaimDelay", leftReclaimDelay)
        try c.positive("tombstoneLifetime", tombstoneLifetime)
    }
}

extension PeerSampler.Settings {
    /// Checks every setting (see ``OverlaySettings/validate()``).
    public func validate() throws(SettingsError) {
        let c = SettingsCheck(prefix: "sampling.")
        try c.atLeast("viewSize", viewSize, 1)
        try c.within("shuffleLength", shuffleLength, 1...max(1, viewSize))
        try c.positive("shuffleInterval", shuffleInterval)
        try c.positive("shuffleTimeout", shuffleTimeout)
        try c.atLeast("maxShuffleFailures", maxShuffleFailures, 1)
        try c.atLeast("retriesPerRound", retriesPerRound, 0)
    }
}

extension Discovery.Settings {
    /// Checks every setting (see ``OverlaySettings/validate()``).
    public func validate() throws(SettingsError) {
        let c = SettingsCheck(prefix: "discovery.")
        try c.positive("beaconInterval", beaconInterval)
        try c.positive("rebootstrapInitialDelay", rebootstrapInitialDelay)
        guard rebootstrapMaxDelay >= rebootstrapInitialDelay else {
            throw SettingsError(setting: "discovery.rebootstrapMaxDelay", value: "\(rebootstrapMaxDelay)",
                                allowed: "at least discovery.rebootstrapInitialDelay (\(rebootstrapInitialDelay))")
        }
        try c.atLeast("joinFanout", joinFanout, 1)
        try c.positive("isolationTimeout", isolationTimeout)
        try c.atLeast("cacheCapacity", cacheCapacity, 1)
        try c.positive("reconnectInterval", reconnectInterval)
        try c.nonNegative("departedLifetime", departedLifetime)
        try c.atLeast("departedCapacity", departedCapacity, 0)
    }
}

extension PushSumAverager.Settings {
    /// Checks every setting; the error names the first one out of range.
    public func validate() throws(SettingsError) {
        let c = SettingsCheck(prefix: "averaging.")
        try c.positive("tickInterval", tickInterval)
        try c.positive("retransmitInterval", retransmitInterval)
        try c.fraction("shareFraction", shareFraction, includingOne: true)
        try c.fraction("sparseShareFraction", sparseShareFraction, includingOne: false)
        try c.within("maxInFlight", maxInFlight, 1...PushSumAverager.maxInFlightLimit)
        try c.atLeast("maxTrackedSenders", maxTrackedSenders, 1)
        try c.positive("senderRetention", senderRetention)
    }
}
