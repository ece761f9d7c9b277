import Crypto
import Foundation

/// SWIM failure detection with Lifeguard's refinements, over the peers of a partial view.
///
/// A value type with `on…` handlers returning actions, like swift-cluster-membership's
/// `SWIM.Instance`. It watches only the peers the composite node hands it with
/// ``watch(_:at:)`` (the peer-sampling view), so its state does not grow with the network.
/// Protocol: one probe per (health-scaled) probe interval, round-robin over watched peers;
/// ping, then ping-req through k helpers that nack when the target stays silent; a target
/// that answers no one becomes suspect, is told so (buddy system), and is declared dead when
/// its suspicion times out. The timeout starts at its maximum and shrinks with each
/// independent confirmation. Updates ride on every message and on periodic gossip, each
/// retransmitted about λ·log n times. See `docs/membership.md`.
public struct Membership: Sendable {
    public typealias Action = NodeAction<Message, Timer, Event>

    /// What a node believes about a peer.
    public enum Status: UInt8, Sendable, Hashable {
        case alive = 0, suspect = 1, dead = 2, left = 3
    }

    /// Which life of a peer, and which refutation within it, a claim is about.
    /// Ordered: a new record (restart, new address) outranks every claim about an older one.
    public struct Version: Comparable, Hashable, Sendable {
        public var sequence: UInt64
        public var incarnation: UInt32
        public init(sequence: UInt64, incarnation: UInt32) {
            self.sequence = sequence
            self.incarnation = incarnation
        }
        public static func < (a: Version, b: Version) -> Bool {
            (a.sequence, a.incarnation) < (b.sequence, b.incarnation)
        }
    }

    /// A membership claim, disseminated by piggybacking and gossip.
    public enum Update: Hashable, Sendable {
        /// The peer is alive at this record and incarnation (sent when refuting; signed by it).
        case alive(AliveClaim)
        /// `by` could not reach the peer.
        case suspect(PeerID, Version, by: PeerID)
        /// `by` declared the peer dead after its suspicion timed out.
        case dead(PeerID, Version, by: PeerID)
        /// The peer announced its own departure (signed).
        case left(LeaveNotice)

        /// The peer the claim is about.
        public var peer: PeerID {
            switch self {
            case .alive(let c): return c.record.peer
            case .suspect(let p, _, _), .dead(let p, _, _): return p
            case .left(let n): return n.peer
            }
        }
    }

    /// Membership's datagrams. Every one carries piggybacked updates.
    public enum Message: Hashable, Sendable {
        /// Are you alive? Answered by an ack with the same sequence number.
        case ping(sequence: UInt32, from: PeerID, updates: [Update])
        /// I am (or, forwarded by a helper, the target is): `from` is the probed peer.
        case ack(sequence: UInt32, from: PeerID, updates: [Update])
        /// Please ping `target` for me and forward its ack.
        case pingRequest(sequence: UInt32, from: PeerID, target: AddressRecord, updates: [Update])
        /// I asked `target` for you and heard nothing yet (Lifeguard).
        case nack(sequence: UInt32, from: PeerID, updates: [Update])
        /// Pending updates, sent every gossip interval while there are some.
        case gossip(from: PeerID, updates: [Update])

        /// The peer the message says it is from (its `from`): where replies are addressed.
        public var sender: PeerID {
            switch self {
            case let .ping(_, from, _), let .ack(_, from, _), let .pingRequest(_, from, _, _), let .nack(_, from, _), let .gossip(from, _):
                return from
            }
        }
    }

    public enum Timer: Hashable, Sendable {
        /// Start the next probe.
        case probe
        /// The direct ping of probe `sequence` got no ack in time: ask helpers.
        case probeTimeout(UInt32)
        /// The probe period of `sequence` ended.
        case indirectTimeout(UInt32)
        /// As a helper, nack probe `sequence` if its target stayed silent.
        case relayNack(UInt32)
        /// The suspicion of a peer timed out.
        case suspicion(PeerID)
        /// Send pending updates.
        case gossip
    }

    public enum Event: Hashable, Sendable {
        /// The peer is suspected (by this node or by a gossiped claim about a watched peer).
        case suspect(PeerID)
        /// A suspected peer refuted, or a peer came back with a new record.
        case alive(PeerID)
        /// The peer is declared dead (locally, or by a claim heard about it).
        case dead(PeerID)
        /// The peer left gracefully.
        case left(PeerID)
        /// This node refuted a claim about itself, now at `incarnation` of its record.
        case refuted(incarnation: UInt32)
        /// This node re-signed its record (it learned of a claim about an earlier life of its own).
        case recordRenewed(AddressRecord)
        /// A watched peer's record was replaced by a newer one (e.g. a new address).
        case recordChanged(AddressRecord)
        /// The local-health score (0 = healthy) changed.
        case localHealth(Int)
        /// A claim carried a record or leave notice whose signature does not verify.
        case rejected(PeerID)
    }

    /// A watched peer.
    public struct Member: Sendable, SortedTableElement {
        public internal(set) var record: AddressRecord
        public internal(set) var incarnation: UInt32
        public internal(set) var status: Status
        /// Still in the peer-sampling view (otherwise kept only while a suspicion is open).
        public internal(set) var inView: Bool
        /// Open suspicions are rare: one is kept out of line, so a member stays small.
        private var suspicionBox: SuspicionBox?
        var suspicion: Suspicion? {
            get { suspicionBox?.suspicion }
            set { suspicionBox = newValue.map(SuspicionBox.init) }
        }

        init(record: AddressRecord, incarnation: UInt32, status: Status, inView: Bool) {
            self.record = record
            self.incarnation = incarnation
            self.status = status
            self.inView = inView
        }
        var version: Version { Version(sequence: record.sequence, incarnation: incarnation) }
        var tableKey: PeerID { record.peer }
    }

    /// An open suspicion, held out of line by its member.
    final class SuspicionBox: Sendable {
        let suspicion: Suspicion
        init(_ suspicion: Suspicion) { self.suspicion = suspicion }
    }

    /// Lifeguard's dynamic suspicion timeout.
    struct Suspicion: Sendable {
        var start: Instant
        var minimum: Duration
        var maximum: Duration
        /// Confirmations after which the timeout reaches its minimum.
        var expected: Int
        /// Distinct accusers heard, the first one included.
        var accusers: Set<PeerID>

        /// memberlist's formula: max − (max − min) · log(c + 1) / log(k + 1), never below min,
        /// where c counts independent confirmations beyond the first accuser.
        var deadline: Instant {
            guard expected >= 1 else { return start + minimum }
            let confirmations = Double(max(0, accusers.count - 1))
            let fraction = log(confirmations + 1) / log(Double(expected) + 1)
            let span = (maximum - minimum).seconds
            let timeout = max(minimum.seconds, maximum.seconds - span * fraction)
            return start + .nanoseconds(Int64(timeout * 1e9))
        }
    }

    /// What a node remembers about a peer it does not watch: a rumour or a tombstone.
    struct Hearsay: Sendable {
        var version: Version
        var status: Status
        var heard: Instant
    }

    struct Broadcast: Sendable {
        var update: Update
        var transmits: Int
        var size: Int
    }

    struct Probe: Sendable {
        var sequence: UInt32
        var target: AddressRecord
        var expectedNacks = 0
        var nacks = 0
    }

    struct Relay: Sendable {
        var requester: Endpoint
        var requesterPeer: PeerID
        var sequence: UInt32
        var started: Instant
    }

    public let settings: Settings
    public let identity: Identity
    /// This node's current signed record.
    public private(set) var me: AddressRecord
    /// This node's incarnation within its record (raised to refute suspicion).
    public private(set) var incarnation: UInt32 = 0
    /// This node's signed claim to be alive at ``me`` and ``incarnation``.
    public private(set) var selfClaim: AliveClaim
    /// Watched peers.
    var table = SortedTable<Member>()
    /// Watched peers (for status and tests).
    public var members: [PeerID: Member] {
        Dictionary(uniqueKeysWithValues: table.elements.map { ($0.record.peer, $0) })
    }
    /// The watched peer `peer`, if any.
    public func member(_ peer: PeerID) -> Member? { table[peer] }
    /// Lifeguard's local-health score, 0 ..< maxLocalHealthMultiplier.
    public private(set) var localHealth = 0
    var hearsay: [PeerID: Hearsay] = [:]
    var broadcasts: [PeerID: Broadcast] = [:]
    var probeOrder: [PeerID] = []
    var probe: Probe?
    var relays: [UInt32: Relay] = [:]
    var nextSequence: UInt32 = 1
    var nextSweep: Instant = .zero
    var leaving = false
    /// Set while handling a message that accused this node; the answer then carries our alive claim.
    var accused = false
    /// The last probe went to a suspect (suspects and ordinary targets take turns).
    var lastProbedSuspect = false
    var rng: SplitMix64
    let verifier: RecordVerifier

    /// A membership instance for `identity`, announcing `record` (signed by `identity`).
    public init(identity: Identity, record: AddressRecord, settings: Settings = .init(), rng: SplitMix64, verifier: RecordVerifier = RecordVerifier()) {
        self.identity = identity
        self.me = record
        self.selfClaim = AliveClaim(signedBy: identity, record: record, incarnation: 0)
        self.settings = settings
        self.rng = rng
        self.verifier = verifier
    }

    // MARK: Derived quantities

    /// Probe interval and timeouts are multiplied by this (Lifeguard local health).
    public var healthMultiplier: Int { localHealth + 1 }

    /// Times each update is sent: multiplier · ceil(log10(n + 1)), n = watched peers + self.
    public var retransmitLimit: Int {
        settings.retransmitMultiplier * Int(ceil(log10(Double(table.count + 2))))
    }

    /// Suspicion timeout floor: multiplier · max(1, log10 n) · probe interval.
    public var suspicionMinimum: Duration {
        let n = Double(table.count + 1)
        let seconds = Double(settings.suspicionMultiplier) * max(1, log10(n)) * settings.probeInterval.seconds
        return .nanoseconds(Int64(seconds * 1e9))
    }

    /// Suspicion timeout ceiling (the timeout of an unconfirmed suspicion).
    public var suspicionMaximum: Duration { suspicionMinimum * settings.suspicionMaxTimeoutMultiplier }

    /// How long after a watched peer crashes this node has declared it dead, at most: the
    /// longest (unconfirmed) suspicion plus ``Settings/detectionSlackProbes`` probe intervals
    /// for some watcher's probe to fail and its suspicion to reach this node.
    public var detectionBound: Duration {
        suspicionMaximum + settings.probeInterval * settings.detectionSlackProbes
    }

    /// The peers gossip goes to and helpers come from: watched, not known dead.
    var reachable: [PeerID] { table.elements.filter { $0.inView && $0.status != .dead }.map(\.record.peer) }

    /// True if a record is superseded by a tombstone: a shuffle must not bring it back.
    public func isBuried(_ record: AddressRecord) -> Bool {
        guard let h = hearsay[record.peer], h.status == .dead || h.status == .left else { return false }
        return h.version.sequence >= record.sequence
    }

    /// True if this node knows a later record of the same peer (watched or heard of), or a
    /// tombstone covering this one: such a record is a replay and must not enter the view.
    public func isSuperseded(_ record: AddressRecord) -> Bool {
        if isBuried(record) { return true }
        if let m = table[record.peer], m.record.sequence > record.sequence { return true }
        if let h = hearsay[record.peer], h.version.sequence > record.sequence { return true }
        return false
    }

    /// The version at which `peer` was declared dead here, if it is a tombstone.
    public func tombstone(of peer: PeerID) -> Version? {
        guard let h = hearsay[peer], h.status == .dead else { return nil }
        return h.version
    }

    /// Tells `peer` it is held dead here, so it can refute (a reconnect after a partition).
    public func accusation(of record: AddressRecord) -> Message? {
        guard let v = tombstone(of: record.peer), v.sequence == record.sequence else { return nil }
        return .gossip(from: me.peer, updates: [.dead(record.peer, v, by: me.peer)])
    }

    /// What this node believes about `peer`, if anything.
    public func status(of peer: PeerID) -> Status? {
        table[peer]?.status ?? hearsay[peer]?.status
    }

    /// Every peer this node knows a status of, watched or heard of, in key order, with the
    /// instant this node entered that status where it keeps one: when a suspicion started,
    /// a peer was declared dead or left, or a rumour was heard (nil for a watched live peer).
    public var knownPeers: [(peer: PeerID, status: Status, since: Instant?)] {
        var all: [PeerID: (Status, Instant?)] = [:]
        for (peer, h) in hearsay { all[peer] = (h.status, h.heard) }
        for m in table.elements { all[m.record.peer] = (m.status, m.suspicion?.start) }
        return all.sorted { $0.key < $1.key }.map { ($0.key, $0.value.0, $0.value.1) }
    }

    // MARK: Driver entry points

    /// Starts probing and gossip (also after a restart that kept the state: the driver
    /// forgot every timer, so open suspicions are scheduled again).
    public mutating func onStart(at now: Instant) -> [Action] {
        probe = nil
        relays = [:]
        nextSweep = now + settings.tombstoneLifetime / Self.sweepsPerLifetime
        let offset = Duration.nanoseconds(Int64(rng.next(upperBound: UInt64(max(1, settings.probeInterval.nanosecondsClamped)))))
        var out: [Action] = [.schedule(.probe, at: now + offset), .schedule(.gossip, at: now + settings.gossipInterval)]
        for m in table.elements {
            if let s = m.suspicion { out.append(.schedule(.suspicion(m.record.peer), at: max(s.deadline, now))) }
        }
        return out
    }

    public mutating func onTimer(_ timer: Timer, at now: Instant) -> [Action] {
        var out: [Action] = []
        switch timer {
        case .probe: startProbe(at: now, into: &out)
        case .probeTimeout(let seq): askHelpers(seq, at: now, into: &out)
        case .indirectTimeout(let seq): if probe?.sequence == seq { finishFailedProbe(at: now, into: &out) }
        case .relayNack(let seq):
            if let relay = relays[seq] {
                out.append(.send(.nack(sequence: relay.sequence, from: me.peer, updates: piggyback()), to: relay.requester, via: .datagram(to: relay.requesterPeer)))
            }
        case .suspicion(let peer): suspicionExpired(peer, at: now, into: &out)
        case .gossip:
            out.append(.schedule(.gossip, at: now + settings.gossipInterval))
            guard !broadcasts.isEmpty else { break }
            var targets = reachable
            targets.shuffle(using: &rng)
            for peer in targets.prefix(settings.gossipFanout) {
                guard let member = table[peer] else { continue }
                let updates = piggyback()
                if updates.isEmpty { break }
                out.append(.send(.gossip(from: me.peer, updates: updates), to: member.record.primary, via: .datagram(to: peer)))
            }
        }
        return out
    }

    public mutating func onMessage(_ message: Message, from sender: Endpoint, at now: Instant) -> [Action] {
        var out: [Action] = []
        accused = false
        defer { accused = false }
        switch message {
        case let .ping(seq, from, updates):
            apply(updates, at: now, into: &out)
            out.append(.send(.ack(sequence: seq, from: me.peer, updates: answer()), to: sender, via: .datagram(to: from)))
            return out
        case let .ack(seq, from, updates):
            apply(updates, at: now, into: &out)
            if let p = probe, p.sequence == seq, p.target.peer == from {
                probe = nil
                adjustHealth(-1, into: &out)
                out.append(.cancel(.probeTimeout(seq)))
                out.append(.cancel(.indirectTimeout(seq)))
            } else if let relay = relays.removeValue(forKey: seq) {
                out.append(.cancel(.relayNack(seq)))
                out.append(.send(.ack(sequence: relay.sequence, from: from, updates: piggyback()), to: relay.requester, via: .datagram(to: relay.requesterPeer)))
            }
        case let .pingRequest(seq, requester, target, updates):
            apply(updates, at: now, into: &out)
            guard target.peer != me.peer, verifier.isValid(target) else { break }
            let mine = takeSequence()
            if relays.count >= Self.maxRelays, let oldest = relays.min(by: { ($0.value.started, $0.key) < ($1.value.started, $1.key) })?.key {
                relays.removeValue(forKey: oldest)
            }
            relays[mine] = Relay(requester: sender, requesterPeer: requester, sequence: seq, started: now)
            out.append(.send(.ping(sequence: mine, from: me.peer, updates: piggyback()), to: target.primary, via: .datagram(to: target.peer)))
            for endpoint in target.endpoints.dropFirst() {
                out.append(.send(.ping(sequence: mine, from: me.peer, updates: []), to: endpoint, via: .datagram(to: target.peer)))
            }
            let nackAfter = Duration.nanoseconds(Int64(settings.probeTimeout.seconds * settings.nackFraction * 1e9))
            out.append(.schedule(.relayNack(mine), at: now + nackAfter))
        case let .nack(seq, _, updates):
            apply(updates, at: now, into: &out)
            if probe?.sequence == seq { probe?.nacks += 1 }
        case let .gossip(_, updates):
            apply(updates, at: now, into: &out)
        }
        // Refute straight back to the accuser, not only through gossip: a suspicion that
        // missed the refutation flood would otherwise run to its end.
        if accused {
            out.append(.send(.gossip(from: me.peer, updates: answer()), to: sender, via: .datagram(to: message.sender)))
        }
        return out
    }

    /// Piggybacked updates, led by our own alive claim when the message accused us.
    private mutating func answer() -> [Update] {
        guard accused else { return piggyback() }
        let mine = Update.alive(selfClaim)
        return [mine] + piggyback(excluding: me.peer).prefix(settings.maxUpdatesPerMessage - 1)
    }

    /// Relays a helper remembers at once; more are evicted oldest first. 64 far exceeds the
    /// ping-reqs a node receives per probe interval (about k = 3) and bounds the memory an
    /// attacker can make it hold.
    static let maxRelays = 64
    /// Expired tombstones are swept this many times per tombstone lifetime: a tombstone
    /// outlives its lifetime by at most a quarter of it, at one scan per quarter.
    static let sweepsPerLifetime = 4
    /// A relay (ping-req in progress) is forgotten after this many probe intervals: the
    /// requester's probe period has long ended, so a later ack would find no one waiting.
    static let relayLifetimeProbes = 2

    // MARK: The view tells membership whom to watch

    /// Starts (or keeps) watching a verified record's peer. A newer record replaces an older
    /// one: the peer's new life starts alive at incarnation 0.
    public mutating func watch(_ record: AddressRecord, at now: Instant) -> [Action] {
        guard record.peer != me.peer, !isBuried(record) else { return [] }
        var out: [Action] = []
        if var m = table[record.peer] {
            m.inView = true
            if record.sequence > m.record.sequence {
                replaceLife(&m, with: record, incarnation: 0, into: &out)
            }
            table[record.peer] = m
            return out
        }
        var incarnation: UInt32 = 0
        if let h = hearsay.removeValue(forKey: record.peer), h.version.sequence == record.sequence {
            incarnation = h.version.incarnation
        }
        table[record.peer] = Member(record: record, incarnation: incarnation, status: .alive, inView: true)
        return out
    }

    /// Stops watching a peer that left the view. A suspected peer stays until its case is settled.
    public mutating func unwatch(_ peer: PeerID) {
        guard var m = table[peer] else { return }
        m.inView = false
        if m.status == .suspect || probe?.target.peer == peer {
            table[peer] = m
        } else {
            table.removeValue(forKey: peer)
        }
    }

    /// Announces a graceful leave: the signed notice goes to every watched peer now and
    /// keeps being gossiped while the node lingers.
    public mutating func leave(at now: Instant) -> [Action] {
        leaving = true
        let notice = LeaveNotice(signedBy: identity, sequence: me.sequence)
        enqueue(.left(notice))
        var out: [Action] = []
        for peer in reachable {
            guard let m = table[peer] else { continue }
            out.append(.send(.gossip(from: me.peer, updates: [.left(notice)]), to: m.record.primary, via: .datagram(to: peer)))
        }
        return out
    }

    // MARK: Probing

    private mutating func takeSequence() -> UInt32 {
        defer { nextSequence &+= 1 }
        return nextSequence
    }

    private func scaled(_ d: Duration) -> Duration { d * healthMultiplier }

    private mutating func startProbe(at now: Instant, into out: inout [Action]) {
        out.append(.schedule(.probe, at: now + scaled(settings.probeInterval)))
        if probe != nil { finishFailedProbe(at: now, into: &out) }
        sweep(at: now)
        guard let target = nextTarget() else { return }
        let seq = takeSequence()
        probe = Probe(sequence: seq, target: target.record)
        // Buddy system: a suspect learns of its suspicion first thing, so it can refute.
        var updates: [Update] = []
        if target.status == .suspect {
            updates.append(.suspect(target.record.peer, target.version, by: me.peer))
        }
        updates += piggyback(excluding: target.record.peer)
        out.append(.send(.ping(sequence: seq, from: me.peer, updates: updates), to: target.record.primary, via: .datagram(to: target.record.peer)))
        out.append(.schedule(.probeTimeout(seq), at: now + scaled(settings.probeTimeout)))
        out.append(.schedule(.indirectTimeout(seq), at: now + scaled(settings.probeInterval)))
    }

    /// Round-robin over watched peers in a random order, reshuffled each pass (SWIM §4.3):
    /// every watched peer is probed within one pass, and no order is predictable.
    private mutating func nextTarget() -> Member? {
        // Suspects take every other probe: the ping tells them of the suspicion (buddy
        // system) and their ack carries the refutation straight back to us.
        if !lastProbedSuspect {
            let suspects = table.elements.filter { $0.status == .suspect }
            if !suspects.isEmpty {
                lastProbedSuspect = true
                return suspects[Int(rng.next(upperBound: UInt64(suspects.count)))]
            }
        }
        lastProbedSuspect = false
        while true {
            if probeOrder.isEmpty {
                probeOrder = reachable
                probeOrder.shuffle(using: &rng)
                if probeOrder.isEmpty { return nil }
            }
            let peer = probeOrder.removeLast()
            if let m = table[peer], m.inView, m.status == .alive || m.status == .suspect { return m }
        }
    }

    private mutating func askHelpers(_ seq: UInt32, at now: Instant, into out: inout [Action]) {
        guard var p = probe, p.sequence == seq else { return }
        // The target's other addresses (say a LAN and a public one) get a direct ping too.
        for endpoint in p.target.endpoints.dropFirst() {
            out.append(.send(.ping(sequence: seq, from: me.peer, updates: []), to: endpoint, via: .datagram(to: p.target.peer)))
        }
        var helpers = reachable.filter { $0 != p.target.peer && table[$0]?.status == .alive }
        helpers.shuffle(using: &rng)
        for peer in helpers.prefix(settings.indirectChecks) {
            guard let helper = table[peer] else { continue }
            p.expectedNacks += 1
            out.append(.send(.pingRequest(sequence: seq, from: me.peer, target: p.target, updates: piggyback()), to: helper.record.primary, via: .datagram(to: peer)))
        }
        probe = p
    }

    private mutating func finishFailedProbe(at now: Instant, into out: inout [Action]) {
        guard let p = probe else { return }
        probe = nil
        out.append(.cancel(.probeTimeout(p.sequence)))
        out.append(.cancel(.indirectTimeout(p.sequence)))
        // Lifeguard: with helpers, only their missing nacks count against our own health
        // (they were asked and stayed silent, so the fault is likely here); without, any
        // failed probe does.
        adjustHealth(p.expectedNacks > 0 ? max(0, p.expectedNacks - p.nacks) : 1, into: &out)
        guard var m = table[p.target.peer], m.record.sequence == p.target.sequence else { return }
        if m.status == .alive {
            startSuspicion(&m, version: m.version, accuser: me.peer, at: now, into: &out)
            table[m.record.peer] = m
            // Buddy system: tell the suspect directly, not only through gossip.
            out.append(.send(.gossip(from: me.peer, updates: [.suspect(m.record.peer, m.version, by: me.peer)]), to: m.record.primary, via: .datagram(to: m.record.peer)))
        }
        if !m.inView && m.status == .alive { table.removeValue(forKey: m.record.peer) }
    }

    private mutating func adjustHealth(_ delta: Int, into out: inout [Action]) {
        let updated = min(max(localHealth + delta, 0), settings.maxLocalHealthMultiplier - 1)
        if updated != localHealth {
            localHealth = updated
            out.append(.report(.localHealth(updated)))
        }
    }

    // MARK: Suspicion

    private mutating func startSuspicion(_ m: inout Member, version: Version, accuser: PeerID, at now: Instant, into out: inout [Action]) {
        m.incarnation = version.incarnation
        m.status = .suspect
        let watchers = max(0, table.count - 1)
        let s = Suspicion(
            start: now, minimum: suspicionMinimum, maximum: suspicionMaximum,
            expected: min(settings.suspicionMultiplier - 2, watchers), accusers: [accuser])
        m.suspicion = s
        out.append(.schedule(.suspicion(m.record.peer), at: s.deadline))
        out.append(.report(.suspect(m.record.peer)))
        enqueue(.suspect(m.record.peer, version, by: accuser))
    }

    private mutating func suspicionExpired(_ peer: PeerID, at now: Instant, into out: inout [Action]) {
        guard let m = table[peer], m.status == .suspect, let s = m.suspicion else { return }
        // Confirmations only bring the deadline forward and reschedule the timer, so a firing
        // before the deadline can only be a driver firing early: wait for the deadline.
        if s.deadline > now {
            out.append(.schedule(.suspicion(peer), at: s.deadline))
            return
        }
        let update = Update.dead(peer, m.version, by: me.peer)
        bury(peer, version: m.version, status: .dead, at: now, into: &out)
        enqueue(update)
    }

    /// Moves a peer to the tombstones and reports it gone.
    private mutating func bury(_ peer: PeerID, version: Version, status: Status, at now: Instant, into out: inout [Action]) {
        if table.removeValue(forKey: peer)?.suspicion != nil {
            out.append(.cancel(.suspicion(peer)))
        }
        remember(peer, Hearsay(version: version, status: status, heard: now))
        out.append(.report(status == .left ? .left(peer) : .dead(peer)))
    }

    private mutating func replaceLife(_ m: inout Member, with record: AddressRecord, incarnation: UInt32, into out: inout [Action]) {
        let changed = record.endpoints != m.record.endpoints
        if m.suspicion != nil { out.append(.cancel(.suspicion(record.peer))) }
        let wasSuspect = m.status == .suspect
        m.record = record
        m.incarnation = incarnation
        m.status = .alive
        m.suspicion = nil
        if wasSuspect { out.append(.report(.alive(record.peer))) }
        if changed { out.append(.report(.recordChanged(record))) }
    }

    // MARK: Applying claims

    private mutating func apply(_ updates: [Update], at now: Instant, into out: inout [Action]) {
        for update in updates { apply(update, at: now, into: &out) }
    }

    mutating func apply(_ update: Update, at now: Instant, into out: inout [Action]) {
        if update.peer == me.peer {
            applyAboutSelf(update, into: &out)
            return
        }
        switch update {
        case let .alive(claim):
            let record = claim.record, inc = claim.incarnation
            let version = Version(sequence: record.sequence, incarnation: inc)
            if var m = table[record.peer] {
                guard version > m.version, verify(claim, into: &out) else { return }
                if record.sequence > m.record.sequence {
                    replaceLife(&m, with: record, incarnation: inc, into: &out)
                } else {
                    if m.suspicion != nil { out.append(.cancel(.suspicion(record.peer))) }
                    if m.status == .suspect { out.append(.report(.alive(record.peer))) }
                    m.incarnation = inc
                    m.status = .alive
                    m.suspicion = nil
                }
                table[record.peer] = m
                enqueue(update)
            } else if let h = hearsay[record.peer], version > h.version {
                // Relay what we have heard of; an alive claim about a stranger dies here, so
                // joins do not flood the network.
                guard verify(claim, into: &out) else { return }
                if h.status == .dead || h.status == .left { out.append(.report(.alive(record.peer))) }
                remember(record.peer, Hearsay(version: version, status: .alive, heard: now))
                enqueue(update)
            }
        case let .suspect(peer, version, accuser):
            if var m = table[peer] {
                guard version.sequence == m.record.sequence, version >= m.version else { return }
                if m.status == .suspect, version == m.version, var s = m.suspicion {
                    guard !s.accusers.contains(accuser) else { return }
                    s.accusers.insert(accuser)
                    m.suspicion = s
                    table[peer] = m
                    out.append(.schedule(.suspicion(peer), at: s.deadline))
                    enqueue(update)  // confirmations travel too (memberlist re-gossips them)
                    return
                }
                if m.suspicion != nil { out.append(.cancel(.suspicion(peer))) }
                startSuspicion(&m, version: version, accuser: accuser, at: now, into: &out)
                table[peer] = m
            } else if hearsay[peer].map({ version > $0.version || ($0.status == .alive && version == $0.version) }) ?? true {
                remember(peer, Hearsay(version: version, status: .suspect, heard: now))
                enqueue(update)
            }
        case let .dead(peer, version, _):
            if let m = table[peer] {
                guard version >= m.version else { return }
                bury(peer, version: version, status: .dead, at: now, into: &out)
                enqueue(update)
            } else if hearsay[peer].map({ version > $0.version || ($0.status != .dead && $0.status != .left && version == $0.version) }) ?? true {
                bury(peer, version: version, status: .dead, at: now, into: &out)
                enqueue(update)
            }
        case let .left(notice):
            let version = Version(sequence: notice.sequence, incarnation: .max)
            let known = table[notice.peer]?.version ?? hearsay[notice.peer]?.version
            let settled = hearsay[notice.peer]?.status == .left && hearsay[notice.peer]?.version.sequence == notice.sequence
            guard !settled, known.map({ notice.sequence >= $0.sequence }) ?? true else { return }
            guard verifier.isValid(notice) else {
                out.append(.report(.rejected(notice.peer)))
                return
            }
            bury(notice.peer, version: version, status: .left, at: now, into: &out)
            enqueue(update)
        }
    }

    private func verify(_ claim: AliveClaim, into out: inout [Action]) -> Bool {
        if verifier.isValid(claim) { return true }
        out.append(.report(.rejected(claim.record.peer)))
        return false
    }

    /// Claims about this node: refute suspicion and death by raising the incarnation (SWIM);
    /// a claim about a later record than ours means we restarted without our sequence, so
    /// re-sign above it.
    private mutating func applyAboutSelf(_ update: Update, into out: inout [Action]) {
        guard !leaving else { return }
        switch update {
        case .alive(let c):
            // Only a genuine claim (from an earlier life of ours) is worth answering.
            guard verifier.isValid(c) else { return }
            let r = c.record, inc = c.incarnation
            if r.sequence > me.sequence {
                renew(sequence: r.sequence + 1, into: &out)
            } else if r.sequence == me.sequence, inc > incarnation {
                refute(above: inc, into: &out)
            }
        case .suspect(_, let v, _), .dead(_, let v, _):
            if v.sequence > me.sequence {
                renew(sequence: v.sequence + 1, into: &out)
            } else if v.sequence == me.sequence, v.incarnation >= incarnation {
                refute(above: v.incarnation, into: &out)
            } else {
                // A claim about an older incarnation or record: its sender missed our
                // refutation (there is no full-state sync to repair that), so say it again.
                enqueue(.alive(selfClaim))
            }
            accused = true
        case .left(let n):
            // A valid notice can only be our own, from an earlier life: start a later one.
            if n.sequence >= me.sequence, verifier.isValid(n) { renew(sequence: n.sequence + 1, into: &out) }
        }
    }

    private mutating func refute(above claimed: UInt32, into out: inout [Action]) {
        incarnation = claimed &+ 1
        adjustHealth(1, into: &out)  // Lifeguard: being suspected hints that we are slow
        out.append(.report(.refuted(incarnation: incarnation)))
        selfClaim = AliveClaim(signedBy: identity, record: me, incarnation: incarnation)
        enqueue(.alive(selfClaim))
    }

    /// Signs a new record with a higher sequence (same endpoints) and announces it.
    public mutating func renew(sequence: UInt64, endpoints: [Endpoint]? = nil, into out: inout [Action]) {
        me = AddressRecord(signedBy: identity, endpoints: endpoints ?? me.endpoints, sequence: max(sequence, me.sequence + 1))
        incarnation = 0
        selfClaim = AliveClaim(signedBy: identity, record: me, incarnation: 0)
        out.append(.report(.recordRenewed(me)))
        enqueue(.alive(selfClaim))
    }

    // MARK: Rumours, tombstones and the broadcast queue

    private mutating func remember(_ peer: PeerID, _ entry: Hearsay) {
        hearsay[peer] = entry
        if hearsay.count > settings.hearsayCapacity,
           let oldest = hearsay.min(by: { ($0.value.heard, $0.key) < ($1.value.heard, $1.key) })?.key {
            hearsay.removeValue(forKey: oldest)
        }
    }

    /// Drops tombstones and rumours older than their lifetime, and relays gone stale.
    mutating func sweep(at now: Instant) {
        guard now >= nextSweep else { return }
        nextSweep = now + settings.tombstoneLifetime / Self.sweepsPerLifetime
        let horizon = now.nanoseconds - settings.tombstoneLifetime.nanosecondsClamped
        hearsay = hearsay.filter { $0.value.heard.nanoseconds > horizon }
        let relayHorizon = now.nanoseconds - (settings.probeInterval * Self.relayLifetimeProbes).nanosecondsClamped
        relays = relays.filter { $0.value.started.nanoseconds > relayHorizon }
        // Peers kept only while a probe or suspicion of them was open, now settled alive.
        let probed = probe.map { $0.target.peer }
        table.keep { $0.inView || $0.status != .alive || $0.record.peer == probed }
    }

    private mutating func enqueue(_ update: Update) {
        broadcasts[update.peer] = Broadcast(update: update, transmits: 0, size: GossipWire.size(of: update))
        if broadcasts.count > settings.broadcastQueueCapacity,
           let worn = broadcasts.max(by: { ($0.value.transmits, $1.key) < ($1.value.transmits, $0.key) })?.key {
            broadcasts.removeValue(forKey: worn)
        }
    }

    /// Takes the least-sent updates that fit one message, counting a transmission for each.
    mutating func piggyback(excluding skipped: PeerID? = nil) -> [Update] {
        guard !broadcasts.isEmpty else { return [] }
        let limit = retransmitLimit
        let candidates = broadcasts.sorted { a, b in
            a.value.transmits != b.value.transmits ? a.value.transmits < b.value.transmits : a.key < b.key
        }.map(\.value)
        var chosen: [Update] = []
        var bytes = 0
        for b in candidates {
            if chosen.count >= settings.maxUpdatesPerMessage { break }
            if b.update.peer == skipped || bytes + b.size > settings.maxUpdateBytes { continue }
            chosen.append(b.update)
            bytes += b.size
            let key = b.update.peer
            if b.transmits + 1 >= limit {
                broadcasts.removeValue(forKey: key)
            } else {
                broadcasts[key]?.transmits += 1
            }
        }
        return chosen
    }

    /// Updates waiting to be sent (for tests and status).
    public var pendingUpdates: Int { broadcasts.count }
}
