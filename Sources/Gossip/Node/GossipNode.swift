import Crypto

/// One peer of the overlay: membership, peer sampling, discovery and (optionally) push-sum
/// averaging and model distribution, composed into a single ``ProtocolNode`` a driver can run.
///
/// The sampler's view is the hub: a peer entering it is watched by membership, remembered in
/// the peer cache and offered to the averager as a neighbour; a peer membership declares dead
/// or left is removed from the view and the cache, and the averager takes back any share in
/// flight to it (``PushSumAverager/onPeerGone(_:at:)``). An empty view or a long silence
/// starts a re-bootstrap.
public struct GossipNode: AveragingHost {
    public typealias Message = GossipMessage
    public typealias Timer = GossipTimer
    public typealias Event = GossipEvent

    public let identity: Identity
    public private(set) var membership: Membership
    public private(set) var sampler: PeerSampler
    public private(set) var discovery: Discovery
    /// The averager, if this node averages (nil in membership-only simulations).
    public private(set) var averager: PushSumAverager?
    /// Model distribution, if this node takes part in it.
    public private(set) var releases: ReleaseDistributor?
    /// Last instant any peer's message arrived.
    public private(set) var lastHeard: Instant = .zero
    let verifier: RecordVerifier

    /// A node for `identity`, reachable at `endpoints`.
    ///
    /// `cache` is what the previous run persisted (empty the first time): this run signs its
    /// record with the next sequence number, so peers replace any older address of it.
    public init(
        identity: Identity, endpoints: [Endpoint], settings: OverlaySettings = .lan, cache: PeerCache = PeerCache(),
        averager: PushSumAverager? = nil, releases: ReleaseDistributor? = nil, seed: UInt64, verifier: RecordVerifier = RecordVerifier()
    ) {
        var rng = SplitMix64(seed: seed)
        var cache = cache
        cache.ownSequence += 1
        let record = AddressRecord(signedBy: identity, endpoints: endpoints, sequence: cache.ownSequence)
        self.identity = identity
        self.verifier = verifier
        self.membership = Membership(identity: identity, record: record, settings: settings.membership, rng: rng.split(), verifier: verifier)
        self.sampler = PeerSampler(settings: settings.sampling, rng: rng.split(), verifier: verifier)
        self.discovery = Discovery(settings: settings.discovery, cache: cache, rng: rng.split())
        self.averager = averager
        self.releases = releases
    }

    /// This node's identity.
    public var peerID: PeerID { identity.peerID }
    /// This node's current signed address record.
    public var record: AddressRecord { membership.me }
    /// The peer cache to persist.
    public var peerCache: PeerCache { discovery.cache }

    // MARK: ProtocolNode

    public mutating func onStart(at now: Instant) -> [Action] {
        lastHeard = now
        var out: [Action] = []
        absorb(membership.onStart(at: now), at: now, into: &out)
        absorb(sampler.onStart(at: now), at: now, into: &out)
        // Cached peers seed the view; the ones that are gone fail their probes and shuffles.
        let cached = discovery.cache.records.map { PeerSampler.Entry(record: $0, age: 0) }
        withSampler(at: now, into: &out) { sampler, me, admit in sampler.insert(cached, me: me, admit: admit) }
        absorb(discovery.onStart(at: now), at: now, into: &out)
        let view = neighbours
        withAverager(into: &out) { a in
            a.neighbours = view
            return a.onStart(at: now)
        }
        withReleases(into: &out) { r in
            r.peers = view
            return r.onStart(at: now)
        }
        out.append(.schedule(.isolationCheck, at: now + discovery.settings.isolationTimeout))
        return out
    }

    /// Membership, sampling and discovery messages need only the sender's address (their
    /// records are signed); averaging messages need the authenticated peer.
    public mutating func onMessage(_ message: GossipMessage, from origin: Sender, at now: Instant) -> [Action] {
        lastHeard = now
        let sender = origin.endpoint
        var out: [Action] = []
        switch message {
        case .membership(let m):
            absorb(membership.onMessage(m, from: sender, at: now), at: now, into: &out)
        case .sampling(let m):
            withSampler(at: now, into: &out) { sampler, me, admit in sampler.onMessage(m, from: sender, me: me, admit: admit, at: now) }
        case .discovery(.join(let joiner)):
            guard joiner.peer != record.peer, verifier.isValid(joiner) else {
                out.append(.report(.refused(from: sender, reason: "join with an invalid address record")))
                break
            }
            let offer = [PeerSampler.Entry(record: record, age: 0)]
                + sampler.sample(sampler.settings.viewSize - 1, excluding: joiner.peer)
            out.append(.send(.discovery(.joinReply(offer)), to: sender, via: .datagram(to: joiner.peer)))
            // A joiner we hold dead (the other side of a healed partition) hears so and refutes.
            if let accusation = membership.accusation(of: joiner) {
                out.append(.send(.membership(accusation), to: sender, via: .datagram(to: joiner.peer)))
            }
            withSampler(at: now, into: &out) { sampler, me, admit in sampler.insert([PeerSampler.Entry(record: joiner, age: 0)], me: me, admit: admit) }
        case .discovery(.joinReply(let entries)):
            // A full view mixes the answer in like a shuffle, so a reconnect can merge overlays.
            let room = sampler.settings.shuffleLength
            withSampler(at: now, into: &out) { sampler, me, admit in sampler.insert(entries, me: me, admit: admit, replacing: room) }
            if sampler.count > 0 { absorb(discovery.succeeded(), at: now, into: &out) }
        case .discovery(.beacon(let beacon)):
            guard beacon.peer != record.peer else { break }
            withSampler(at: now, into: &out) { sampler, me, admit in sampler.insert([PeerSampler.Entry(record: beacon, age: 0)], me: me, admit: admit) }
        case .averaging(let m):
            withAverager(into: &out) { $0.onMessage(m, from: origin, at: now) }
        case .release(let m):
            // Only over a session: what a release message asks for is sent back to its peer.
            guard let peer = origin.peer else {
                out.append(.report(.refused(from: sender, reason: "release message outside a session")))
                break
            }
            let from = PeerAddress(peer: peer, endpoint: listeningEndpoint(of: peer) ?? sender)
            withReleases(into: &out) { $0.onMessage(m, from: from, at: now) }
        case .model:
            // A composite running a model-exchange algorithm takes these before they get here.
            out.append(.report(.refused(from: sender, reason: "model copy, but this node runs no model-exchange algorithm")))
        }
        return out
    }

    public mutating func onTimer(_ timer: GossipTimer, at now: Instant) -> [Action] {
        var out: [Action] = []
        switch timer {
        case .membership(let t):
            absorb(membership.onTimer(t, at: now), at: now, into: &out)
        case .sampling(let t):
            withSampler(at: now, into: &out) { sampler, me, admit in sampler.onTimer(t, me: me, admit: admit, at: now) }
        case .discovery(.reconnect):
            let actions = discovery.onTimer(.reconnect, me: record, at: now)
            // With the join goes our accusation, so the peer can refute it and be taken back.
            for case let .report(.reconnectAttempt(peer)) in actions {
                if let r = discovery.reconnectCandidates.first(where: { $0.peer == peer }),
                   let accusation = membership.accusation(of: r) {
                    out.append(.send(.membership(accusation), to: r.primary, via: .datagram(to: r.peer)))
                }
            }
            absorb(actions, at: now, into: &out)
        case .discovery(let t):
            absorb(discovery.onTimer(t, me: record, at: now), at: now, into: &out)
        case .averaging(let t):
            withAverager(into: &out) { $0.onTimer(t, at: now) }
        case .release(let t):
            withReleases(into: &out) { $0.onTimer(t, at: now) }
        case .reclaim(let peer):
            // Not if the peer is in the view again (a rejoin): its new incarnation acknowledges.
            guard !sampler.view.contains(where: { $0.record.peer == peer }) else { break }
            withAverager(into: &out) { $0.onPeerGone(peer, at: now) }
        case .isolationCheck:
            let timeout = discovery.settings.isolationTimeout
            // Checked twice per timeout, so silence is noticed at most half a timeout late.
            out.append(.schedule(.isolationCheck, at: now + timeout / 2))
            if sampler.count == 0 || now - lastHeard > timeout {
                absorb(discovery.begin(at: now), at: now, into: &out)
            }
        }
        return out
    }

    /// Starts a graceful leave: a signed leave notice goes to the watched peers and the
    /// averager hands its mass away. Keep the node running until
    /// ``PushSumAverager/Event/handOffComplete`` and a second more, so shares still arriving
    /// are acknowledged (peers take back unacknowledged ones after
    /// ``Membership/Settings/leftReclaimDelay``), or a few gossip intervals without averaging.
    public mutating func leave(at now: Instant) -> [Action] {
        var out: [Action] = []
        absorb(membership.leave(at: now), at: now, into: &out)
        withAverager(into: &out) { $0.beginLeave(at: now) }
        return out
    }

    /// Moves the averaged vector by `change` (a training step), if this node averages.
    public mutating func applyLocalUpdate(_ change: [Float]) throws(AveragingError) -> Bool {
        try inAverager { a throws(AveragingError) in try a.applyLocalUpdate(change) } ?? false
    }

    /// Adds this node's own averaging mass, once (``PushSumAverager/contribute(at:)``).
    public mutating func contribute(at vector: [Float]) throws(AveragingError) -> Bool {
        try inAverager { a throws(AveragingError) in try a.contribute(at: vector) } ?? false
    }

    /// Publishes a release this node signed (``ReleaseDistributor/publish(_:file:delta:at:)``).
    public mutating func publish(_ manifest: ReleaseManifest, file: [UInt8], delta: [UInt8]?, at now: Instant) throws(ReleaseError) -> [Action] {
        guard var r = releases else { throw .invalid("this node takes no part in model distribution") }
        releases = nil
        defer { releases = r }
        var out: [Action] = []
        absorb(try r.publish(manifest, file: file, delta: delta, at: now), into: &out)
        return out
    }

    /// Rolls a release back by a notice this node signed.
    public mutating func rollBack(_ notice: RollbackNotice, at now: Instant) throws(ReleaseError) -> [Action] {
        guard var r = releases else { throw .invalid("this node takes no part in model distribution") }
        releases = nil
        defer { releases = r }
        var out: [Action] = []
        absorb(try r.rollBack(notice, at: now), into: &out)
        return out
    }

    /// Runs `body` on the averager, if any, moved out of the node meanwhile so its vectors are
    /// uniquely referenced and change in place.
    private mutating func inAverager<R>(_ body: (inout PushSumAverager) throws(AveragingError) -> R) throws(AveragingError) -> R? {
        guard var a = averager else { return nil }
        averager = nil
        defer { averager = a }
        return try body(&a)
    }

    // MARK: Composition

    /// Records the view may take: not superseded by what membership or the cache knows.
    private var admit: (AddressRecord) -> Bool {
        let m = membership
        let cached = discovery.cache
        return { r in !m.isSuperseded(r) && !(cached.records.first { $0.peer == r.peer }.map { $0.sequence > r.sequence } ?? false) }
    }

    /// The peers of the view, at the addresses they listen on: the averager's and the
    /// distributor's neighbours, and those of a composite's learning algorithm.
    public var neighbours: [PeerAddress] { sampler.view.map { PeerAddress(peer: $0.record.peer, endpoint: $0.record.primary) } }

    /// Where `peer` listens, if it is in the view (a session's source port is not it).
    private func listeningEndpoint(of peer: PeerID) -> Endpoint? { sampler.view.first { $0.record.peer == peer }?.record.primary }

    private mutating func refreshNeighbours() {
        let view = neighbours
        var none: [Action] = []
        withAverager(into: &none) { a in
            a.neighbours = view
            return []
        }
        withReleases(into: &none) { r in
            r.peers = view
            return []
        }
    }

    /// Runs `body` on the distributor, if any, moved out of the node meanwhile so the releases
    /// it holds are uniquely referenced.
    private mutating func withReleases(into out: inout [Action], _ body: (inout ReleaseDistributor) -> [ReleaseDistributor.Action]) {
        guard var r = releases else { return }
        releases = nil
        let actions = body(&r)
        releases = r
        absorb(actions, into: &out)
    }

    private func absorb(_ actions: [ReleaseDistributor.Action], into out: inout [Action]) {
        for action in actions {
            switch action {
            case let .send(m, to, via): out.append(.send(.release(m), to: to, via: via))
            case let .schedule(t, at): out.append(.schedule(.release(t), at: at))
            case let .cancel(t): out.append(.cancel(.release(t)))
            case let .compute(request): out.append(.compute(request))
            case let .report(e): out.append(.report(.release(e)))
            }
        }
    }

    /// Runs `body` on the sampler with this node's record and admission rule, then absorbs
    /// its actions once the rule (a snapshot of membership and cache) is released, so the
    /// membership changes they cause mutate in place.
    private mutating func withSampler(
        at now: Instant, into out: inout [Action],
        _ body: (inout PeerSampler, AddressRecord, (AddressRecord) -> Bool) -> [PeerSampler.Action]
    ) {
        let actions: [PeerSampler.Action]
        do {
            let rule = admit
            actions = body(&sampler, record, rule)
        }
        absorb(actions, at: now, into: &out)
    }

    /// Runs `body` on the averager, if any, moved out of the node meanwhile so its vectors are
    /// uniquely referenced and mutate in place (no copy of the model per message).
    private mutating func withAverager(into out: inout [Action], _ body: (inout PushSumAverager) -> [PushSumAverager.Action]) {
        guard var a = averager else { return }
        averager = nil
        let actions = body(&a)
        averager = a
        absorb(actions, into: &out)
    }

    private mutating func absorb(_ actions: [Membership.Action], at now: Instant, into out: inout [Action]) {
        for action in actions {
            switch action {
            case let .send(m, to, via): out.append(.send(.membership(m), to: to, via: via))
            case let .schedule(t, at): out.append(.schedule(.membership(t), at: at))
            case let .cancel(t): out.append(.cancel(.membership(t)))
            case let .compute(request): out.append(.compute(request))
            case let .report(e):
                out.append(.report(.membership(e)))
                switch e {
                case .dead(let peer), .left(let peer):
                    let known = sampler.entry(for: peer)?.record ?? discovery.cache.records.first { $0.peer == peer }
                    absorb(sampler.remove(peer), at: now, into: &out)
                    if case .dead = e {
                        discovery.forget(peer, departed: known, at: now)
                    } else {
                        discovery.forget(peer)
                    }
                    guard averager != nil else { break }
                    if case .dead = e {
                        // Its state is gone: shares in flight to it were lost with it or never
                        // arrived, so the senders take them back now.
                        withAverager(into: &out) { $0.onPeerGone(peer, at: now) }
                    } else {
                        // A leaver still acknowledges during its hand-off: reclaim later.
                        out.append(.schedule(.reclaim(peer), at: now + membership.settings.leftReclaimDelay))
                    }
                case .recordRenewed(let r):
                    discovery.noteOwnSequence(r.sequence)
                case .recordChanged(let r):
                    discovery.remember(r)
                    refreshNeighbours()
                case .alive(let peer):
                    discovery.returned(peer)
                case .suspect, .refuted, .localHealth, .rejected:
                    break
                }
            }
        }
    }

    private mutating func absorb(_ actions: [PeerSampler.Action], at now: Instant, into out: inout [Action]) {
        var viewChanged = false
        for action in actions {
            switch action {
            case let .send(m, to, via): out.append(.send(.sampling(m), to: to, via: via))
            case let .schedule(t, at): out.append(.schedule(.sampling(t), at: at))
            case let .cancel(t): out.append(.cancel(.sampling(t)))
            case let .compute(request): out.append(.compute(request))
            case let .report(e):
                out.append(.report(.sampling(e)))
                switch e {
                case .added(let r), .updated(let r):
                    absorb(membership.watch(r, at: now), at: now, into: &out)
                    discovery.remember(r)
                    discovery.returned(r.peer)
                    viewChanged = true
                case .removed(let peer):
                    stopWatchingUnlessOwed(peer)
                    viewChanged = true
                case .shuffled:
                    absorb(discovery.succeeded(), at: now, into: &out)
                case .viewEmpty:
                    absorb(discovery.begin(at: now), at: now, into: &out)
                case .rejected:
                    break
                }
            }
        }
        if viewChanged { refreshNeighbours() }
    }

    private mutating func absorb(_ actions: [Discovery.Action], at now: Instant, into out: inout [Action]) {
        for action in actions {
            switch action {
            case let .send(m, to, via): out.append(.send(.discovery(m), to: to, via: via))
            case let .schedule(t, at): out.append(.schedule(.discovery(t), at: at))
            case let .cancel(t): out.append(.cancel(.discovery(t)))
            case let .compute(request): out.append(.compute(request))
            case let .report(e): out.append(.report(.discovery(e)))
            }
        }
    }

    private mutating func absorb(_ actions: [PushSumAverager.Action], into out: inout [Action]) {
        for action in actions {
            switch action {
            case let .send(m, to, via): out.append(.send(.averaging(m), to: to, via: via))
            case let .schedule(t, at): out.append(.schedule(.averaging(t), at: at))
            case let .cancel(t): out.append(.cancel(.averaging(t)))
            case let .compute(request): out.append(.compute(request))
            case let .report(e):
                out.append(.report(.averaging(e)))
                // The last share owed by a peer that left the view is settled: stop watching it.
                if case .transferAcked(let peer, _) = e, !sampler.contains(peer) { stopWatchingUnlessOwed(peer) }
            }
        }
    }

    /// Stops watching a peer that left the view, unless the averager still has shares in
    /// flight to it: only membership declaring that peer dead or left gives them back. An
    /// unwatched peer that vanished would hold them until word of its death happened to reach
    /// this node through gossip (a send slot lost meanwhile, a graceful hand-off stalled until
    /// its deadline); watched, it is probed and declared dead here. Unwatched once settled.
    private mutating func stopWatchingUnlessOwed(_ peer: PeerID) {
        guard !(averager?.hasTransfers(inFlightTo: peer) ?? false) else { return }
        membership.unwatch(peer)
    }
}
