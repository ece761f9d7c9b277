import Crypto

/// Cyclon peer sampling: a partial view of fixed size, renewed by shuffles.
///
/// Every shuffle interval a node ages its entries, picks the oldest as its partner, removes
/// it from the view and sends it `shuffleLength − 1` random entries plus a fresh entry for
/// itself; the partner answers with as many random entries of its own. Each side keeps
/// what it received in the slots of what it sent (swapper), so entries move rather than
/// multiply and every node keeps planting one pointer to itself per round: in-degree stays
/// balanced and the overlay stays connected (Voulgaris et al. 2005; Jelasity et al. 2007).
///
/// Loss compensation: a partner that does not answer is put back with its age (not dropped)
/// until ``Settings/maxShuffleFailures`` consecutive failures, and the node starts another
/// shuffle at once (``Settings/retriesPerRound``). Both keep a peer behind a lossy link at
/// the in-degree of its peers: its pointers are not lost with its datagrams, and its own
/// completed-shuffle rate, which is its rate of planting pointers to itself, is restored.
public struct PeerSampler: Sendable {
    public typealias Action = NodeAction<Message, Timer, Event>

    /// A view entry as it travels: a signed record and its age in shuffle rounds.
    public struct Entry: Hashable, Sendable {
        public var record: AddressRecord
        public var age: UInt16
        public init(record: AddressRecord, age: UInt16) {
            self.record = record
            self.age = age
        }
        public var peer: PeerID { record.peer }
    }

    public enum Message: Hashable, Sendable {
        /// A shuffle offer (the first entry is the initiator's own, at age 0).
        case request(id: UInt32, entries: [Entry])
        /// The partner's answer.
        case reply(id: UInt32, entries: [Entry])
    }

    public enum Timer: Hashable, Sendable {
        case shuffle
        case shuffleTimeout(UInt32)
    }

    public enum Event: Hashable, Sendable {
        /// A peer entered the view.
        case added(AddressRecord)
        /// A peer in the view has a newer record (e.g. a new address).
        case updated(AddressRecord)
        /// A peer left the view.
        case removed(PeerID)
        /// A shuffle with this peer completed (it is reachable).
        case shuffled(PeerID)
        /// An entry's record did not verify.
        case rejected(PeerID)
        /// The view is empty: the node must re-bootstrap.
        case viewEmpty
    }

    struct Slot: Sendable {
        var entry: Entry
        var failures: UInt8
    }

    struct Pending: Sendable {
        var id: UInt32
        var partner: Slot
        var sent: [PeerID]
    }

    public let settings: Settings
    var slots: [Slot] = []
    var pending: Pending?
    var nextID: UInt32 = 1
    var retriesLeft = 0
    var rng: SplitMix64
    let verifier: RecordVerifier

    public init(settings: Settings = .init(), rng: SplitMix64, verifier: RecordVerifier = RecordVerifier()) {
        self.settings = settings
        self.rng = rng
        self.verifier = verifier
        slots.reserveCapacity(settings.viewSize)
    }

    /// The view, including a partner whose shuffle is in flight.
    public var view: [Entry] { slots.map(\.entry) + (pending.map { [$0.partner.entry] } ?? []) }
    /// Number of peers in the view.
    public var count: Int { slots.count + (pending == nil ? 0 : 1) }
    /// True if `peer` is in the view.
    public func contains(_ peer: PeerID) -> Bool { index(of: peer) != nil || pending?.partner.entry.peer == peer }
    /// The view entry of `peer`.
    public func entry(for peer: PeerID) -> Entry? {
        if let i = index(of: peer) { return slots[i].entry }
        return pending?.partner.entry.peer == peer ? pending?.partner.entry : nil
    }

    private func index(of peer: PeerID) -> Int? { slots.firstIndex { $0.entry.peer == peer } }

    // MARK: Driver entry points

    /// Starts the shuffle rounds at a random phase.
    public mutating func onStart(at now: Instant) -> [Action] {
        // After a restart that kept the state, a shuffle in flight is void: keep its partner.
        if let p = pending, slots.count < settings.viewSize, index(of: p.partner.entry.peer) == nil {
            slots.append(p.partner)
        }
        pending = nil
        let offset = Duration.nanoseconds(Int64(rng.next(upperBound: UInt64(max(1, settings.shuffleInterval.nanosecondsClamped)))))
        return [.schedule(.shuffle, at: now + offset)]
    }

    /// `me` is this node's current record; `admit` rejects records that must not come back
    /// (membership's tombstones).
    public mutating func onTimer(_ timer: Timer, me: AddressRecord, admit: (AddressRecord) -> Bool, at now: Instant) -> [Action] {
        var out: [Action] = []
        switch timer {
        case .shuffle:
            out.append(.schedule(.shuffle, at: now + settings.shuffleInterval))
            if let p = pending { shuffleFailed(p, me: me, at: now, retry: false, into: &out) }
            retriesLeft = settings.retriesPerRound
            startShuffle(me: me, avoiding: nil, at: now, into: &out)
        case .shuffleTimeout(let id):
            guard let p = pending, p.id == id else { break }
            shuffleFailed(p, me: me, at: now, retry: true, into: &out)
        }
        return out
    }

    public mutating func onMessage(_ message: Message, from sender: Endpoint, me: AddressRecord, admit: (AddressRecord) -> Bool, at now: Instant) -> [Action] {
        var out: [Action] = []
        switch message {
        case let .request(id, entries):
            let initiator = entries.first?.peer
            var offer = slots.filter { $0.entry.peer != initiator }.map(\.entry)
            offer.shuffle(using: &rng)
            offer = Array(offer.prefix(settings.shuffleLength))
            out.append(.send(.reply(id: id, entries: offer), to: sender, via: .datagram(to: initiator)))
            integrate(entries, replacing: offer.map(\.peer), me: me, admit: admit, into: &out)
        case let .reply(id, entries):
            guard let p = pending, p.id == id else { break }
            pending = nil
            out.append(.cancel(.shuffleTimeout(id)))
            out.append(.report(.shuffled(p.partner.entry.peer)))
            integrate(entries, replacing: p.sent, me: me, admit: admit, into: &out)
            // The partner leaves the view (Cyclon: it now holds a fresh pointer to us), unless
            // the view has room to spare, as in a network smaller than a view, where dropping
            // it would only empty the view.
            // A partner removed meanwhile (membership heard it left or died) stays out: its
            // answer may still arrive while it lingers.
            let removed = p.partner.failures == UInt8.max
            if !removed, admit(p.partner.entry.record), slots.count < settings.viewSize, index(of: p.partner.entry.peer) == nil {
                var partner = p.partner
                partner.entry.age = 0
                partner.failures = 0
                slots.append(partner)
            } else if !removed, index(of: p.partner.entry.peer) == nil {
                out.append(.report(.removed(p.partner.entry.peer)))
            }
        }
        return out
    }

    // MARK: Changes from outside

    /// Adds verified records (bootstrap answer, beacon, join request) while there is room;
    /// a newer record of a peer already in the view replaces the old one.
    /// With `replacing` > 0, a full view gives up to that many random entries for new ones.
    public mutating func insert(_ entries: [Entry], me: AddressRecord, admit: (AddressRecord) -> Bool, replacing: Int = 0) -> [Action] {
        var out: [Action] = []
        var victims = slots.map(\.entry.peer)
        victims.shuffle(using: &rng)
        integrate(entries, replacing: Array(victims.prefix(replacing)), me: me, admit: admit, into: &out)
        return out
    }

    /// Removes a peer membership declared dead or gone.
    public mutating func remove(_ peer: PeerID) -> [Action] {
        if let i = index(of: peer) {
            slots.remove(at: i)
            return [.report(.removed(peer))]
        }
        if pending?.partner.entry.peer == peer {
            pending?.partner.failures = UInt8.max  // do not put it back on timeout
            return [.report(.removed(peer))]
        }
        return []
    }

    /// Up to `count` random entries, for a joining node.
    public mutating func sample(_ count: Int, excluding peer: PeerID?) -> [Entry] {
        var all = slots.map(\.entry).filter { $0.peer != peer }
        all.shuffle(using: &rng)
        return Array(all.prefix(count))
    }

    // MARK: Cyclon

    private mutating func startShuffle(me: AddressRecord, avoiding avoided: PeerID?, at now: Instant, into out: inout [Action]) {
        guard !slots.isEmpty else {
            out.append(.report(.viewEmpty))
            return
        }
        for i in slots.indices { slots[i].entry.age = slots[i].entry.age &+ (slots[i].entry.age < .max ? 1 : 0) }
        // The oldest entry (ties broken at random), except a partner that just failed.
        var best: Int? = nil
        var ties = 0
        for i in slots.indices where slots[i].entry.peer != avoided {
            guard let b = best else { best = i; ties = 1; continue }
            if slots[i].entry.age > slots[b].entry.age {
                best = i
                ties = 1
            } else if slots[i].entry.age == slots[b].entry.age {
                ties += 1
                if rng.next(upperBound: UInt64(ties)) == 0 { best = i }
            }
        }
        guard let partnerIndex = best else { return }
        let partner = slots.remove(at: partnerIndex)
        var offer = slots.map(\.entry)
        offer.shuffle(using: &rng)
        offer = Array(offer.prefix(max(0, settings.shuffleLength - 1)))
        let id = nextID
        nextID &+= 1
        pending = Pending(id: id, partner: partner, sent: offer.map(\.peer))
        out.append(.send(.request(id: id, entries: [Entry(record: me, age: 0)] + offer), to: partner.entry.record.primary,
                         via: .datagram(to: partner.entry.record.peer)))
        out.append(.schedule(.shuffleTimeout(id), at: now + settings.shuffleTimeout))
    }

    private mutating func shuffleFailed(_ p: Pending, me: AddressRecord, at now: Instant, retry: Bool, into out: inout [Action]) {
        pending = nil
        out.append(.cancel(.shuffleTimeout(p.id)))
        var partner = p.partner
        partner.failures = partner.failures == .max ? .max : partner.failures + 1
        if Int(partner.failures) < settings.maxShuffleFailures, slots.count < settings.viewSize, index(of: partner.entry.peer) == nil {
            slots.append(partner)
        } else if index(of: partner.entry.peer) == nil {
            out.append(.report(.removed(partner.entry.peer)))
        }
        if retry, retriesLeft > 0 {
            retriesLeft -= 1
            startShuffle(me: me, avoiding: partner.entry.peer, at: now, into: &out)
        }
    }

    /// Cyclon's merge: skip ourselves and peers already present (a newer record updates the
    /// entry), fill empty slots first, then take the slots of the entries we sent.
    private mutating func integrate(_ received: [Entry], replacing sent: [PeerID], me: AddressRecord, admit: (AddressRecord) -> Bool, into out: inout [Action]) {
        var replaceable = sent
        for entry in received.prefix(max(settings.shuffleLength, settings.viewSize)) {
            guard entry.peer != me.peer else { continue }
            if let i = index(of: entry.peer) {
                if entry.record.sequence > slots[i].entry.record.sequence {
                    guard verifier.isValid(entry.record) else {
                        out.append(.report(.rejected(entry.peer)))
                        continue
                    }
                    guard admit(entry.record) else { continue }
                    slots[i].entry.record = entry.record
                    slots[i].failures = 0
                    out.append(.report(.updated(entry.record)))
                }
                slots[i].entry.age = min(slots[i].entry.age, entry.age)
                continue
            }
            if let p = pending, p.partner.entry.peer == entry.peer {
                if entry.record.sequence > p.partner.entry.record.sequence, verifier.isValid(entry.record), admit(entry.record) {
                    pending?.partner.entry.record = entry.record
                    out.append(.report(.updated(entry.record)))
                }
                continue
            }
            if count >= settings.viewSize, !replaceable.contains(where: { index(of: $0) != nil }) { continue }
            guard verifier.isValid(entry.record) else {
                out.append(.report(.rejected(entry.peer)))
                continue
            }
            guard admit(entry.record) else { continue }
            var slot: Int? = nil
            if count >= settings.viewSize {
                while let candidate = replaceable.popLast() {
                    if let i = index(of: candidate) { slot = i; break }
                }
                guard slot != nil else { continue }
            }
            let fresh = Slot(entry: entry, failures: 0)
            if let i = slot {
                out.append(.report(.removed(slots[i].entry.peer)))
                slots[i] = fresh
            } else {
                slots.append(fresh)
            }
            out.append(.report(.added(entry.record)))
        }
    }
}
