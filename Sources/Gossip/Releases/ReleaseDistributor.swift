import Crypto
import DeterministicRandom

/// Model distribution by gossip, sans-IO: signed releases spread by anti-entropy and are
/// pulled in verified chunks from whichever peers already hold them.
///
/// - Every ``Settings/summaryInterval`` the node tells one random peer what it holds (a
///   summary: its releases and rollback notices); a peer that lacks something answers with
///   its own summary, so both learn in one round trip. A release that just completed is
///   pushed to ``Settings/pushFanout`` peers at once. A peer that was offline or partitioned
///   catches up with the first summaries it exchanges.
/// - A newer release is fetched as its manifest (checked: a trusted publisher, a valid
///   signature, newer than the active version, not rolled back), then its chunks, each checked
///   against the manifest's BLAKE2b-256 before it is kept, several in flight from different
///   holders; a chunk that does not arrive in time is asked of the next holder, so a fetch
///   resumes where it stopped when a holder leaves. A node holding the previous version fetches
///   the delta instead, when the release has one, and checks the file it builds against the
///   release hash.
/// - A complete release activates at once on canary peers (``ReleaseManifest/isCanary(_:)``)
///   and after the canary delay on the others, unless a rollback notice for it arrives first.
///   A rollback of the active version goes back to the newest earlier version held.
///
/// One owner (the node). Every refusal is counted by reason; nothing from a peer is trusted
/// before it is checked.
public struct ReleaseDistributor: Sendable {
    /// Timings and bounds; the defaults suit LAN and WAN alike (a release is rare, and small
    /// beside the time it takes to spread).
    public struct Settings: Sendable, Equatable {
        /// Anti-entropy period: one summary to one random peer. 2 s spreads a release over
        /// hundreds of peers in well under a minute and costs one small message per period.
        public var summaryInterval: Duration = .seconds(2)
        /// Peers told at once when a release completes here.
        public var pushFanout = 3
        /// A request (manifest or chunk) unanswered this long is asked of another holder.
        public var requestTimeout: Duration = .seconds(4)
        /// Chunks of one release in flight at once (spread over its holders).
        public var maxRequestsInFlight = 8
        /// Versions of a model kept (the active one, the ones before it for a rollback, and the
        /// base of the next delta).
        public var keptVersions = 3
        /// Releases known but without a manifest yet, at most (bounds what summaries can make a node track).
        public var maxPendingManifests = 16
        /// Distinct model names held, at most.
        public var maxNames = 32
        /// Chunk size of releases published here.
        public var chunkSize = 64 << 10

        public init() {}
    }

    public enum Timer: Hashable, Sendable {
        case summary
        /// A request waiting for its answer; index -1 is the manifest.
        case request(ReleaseKey, ReleasePart, index: Int)
        /// The canary delay of a release is over.
        case activate(ReleaseKey)
    }

    /// Why something was refused.
    public enum Refusal: String, Sendable, CaseIterable, Comparable {
        case untrustedPublisher, badSignature, chunkHashMismatch, fileHashMismatch, deltaMismatch
        case olderThanActive, rolledBack, untrustedRollback, tooManyReleases, unsolicited
        public static func < (a: Refusal, b: Refusal) -> Bool { a.rawValue < b.rawValue }
    }

    public enum Event: Sendable {
        /// A release's manifest was accepted and its chunks are being fetched.
        case fetching(ReleaseKey)
        /// A verified chunk was kept (``Holding`` has it until the release completes).
        case chunkKept(ReleaseKey, ReleasePart, index: Int)
        /// A release is complete and verified: its file (and delta) are ready to be kept on disk.
        case stored(ReleaseKey)
        /// `key` is now the active version of its model.
        case activated(ReleaseKey, previous: UInt64?)
        /// A rollback notice was accepted; `active` is the model's active version now.
        case rolledBack(RollbackNotice, active: UInt64?)
        /// An old version was dropped (its files may go).
        case discarded(ReleaseKey)
        case refused(Refusal, ReleaseKey?, from: PeerID?)
    }

    public typealias Action = NodeAction<ReleaseMessage, Timer, Event>

    /// What one release looks like from here.
    public struct Holding: Sendable {
        public var manifest: ReleaseManifest?
        /// The verified model file, once complete.
        public var file: [UInt8]?
        /// The verified delta, if the release has one and it is held.
        public var delta: [UInt8]?
        var fetching: ReleasePart?
        var chunks: [Int: [UInt8]] = [:]
        /// Request index → the peer asked.
        var inFlight: [Int: PeerID] = [:]
        /// Peers holding it complete, in the order heard of.
        var holders: [PeerAddress] = []
        /// Peers that told of it, complete or not (they hold its manifest).
        var advertisers: [PeerAddress] = []
        var attempts = 0

        public var isComplete: Bool { file != nil }
        /// Verified chunks kept of an incomplete release.
        public var keptChunks: Int { chunks.count }
    }

    public struct Counters: Sendable, Equatable {
        public var refused: [Refusal: Int] = [:]
        /// Bytes of verified chunks received, by artefact.
        public var fileBytesReceived = 0
        public var deltaBytesReceived = 0
        public var chunksServed = 0
        public var releasesStored = 0
    }

    public let settings: Settings
    public let me: PeerID
    /// Publishers whose releases and rollbacks this node accepts, sorted.
    public let publishers: [PeerID]
    public private(set) var holdings: [ReleaseKey: Holding] = [:]
    /// The active version of each model.
    public private(set) var active: [String: UInt64] = [:]
    public private(set) var rollbacks: [ReleaseKey: RollbackNotice] = [:]
    public private(set) var counters = Counters()
    /// Where to send: the overlay's view, set by the host.
    public var peers: [PeerAddress] = []
    private var rng: SplitMix64
    /// Offers already refused (peer, release), so a repeated summary costs no second fetch.
    private var refusedOffers: [PeerID: [ReleaseKey]] = [:]
    private var countedOlder: [ReleaseKey] = []
    private var refusedNotices: [RollbackNotice] = []

    /// A distributor for `me`, accepting `publishers`, resuming what a previous run kept:
    /// `stored` releases (manifest, file, delta; each checked again), the `active` versions,
    /// the rollback notices, and the `partial` fetches (their manifests and the chunks kept,
    /// each checked again, so a fetch resumes where it stopped).
    public init(me: PeerID, publishers: [PeerID], settings: Settings = Settings(), seed: UInt64,
                stored: [(ReleaseManifest, file: [UInt8], delta: [UInt8]?)] = [], active: [String: UInt64] = [:], rollbacks: [RollbackNotice] = [],
                partial: [(ReleaseManifest, fileChunks: [Int: [UInt8]], deltaChunks: [Int: [UInt8]])] = []) {
        self.me = me
        self.publishers = Array(Set(publishers)).sorted()
        self.settings = settings
        rng = SplitMix64(seed: seed)
        for notice in rollbacks where notice.isSigned && self.publishers.contains(notice.publisher) { self.rollbacks[notice.key] = notice }
        for (manifest, file, delta) in stored where manifest.isSigned && self.publishers.contains(manifest.publisher) && Blake2b.hash256(file) == manifest.fileHash {
            let keptDelta = manifest.delta.flatMap { d in delta.flatMap { ReleaseArtefact(of: $0, chunkSize: manifest.chunkSize) == d.artefact ? $0 : nil } }
            holdings[manifest.key] = Holding(manifest: manifest, file: file, delta: keptDelta)
        }
        for (name, version) in active where holdings[ReleaseKey(name: name, version: version)]?.isComplete == true { self.active[name] = version }
        for (manifest, fileChunks, deltaChunks) in partial where holdings[manifest.key] == nil && accepts(manifest) {
            var h = Holding(manifest: manifest)
            h.fetching = deltaBase(for: manifest) != nil && !deltaChunks.isEmpty ? .delta : .file
            let artefact = h.fetching == .delta ? manifest.delta?.artefact : manifest.file
            for (index, bytes) in (h.fetching == .delta ? deltaChunks : fileChunks) where artefact.map({ Self.verifies(bytes, index, $0, manifest.chunkSize) }) == true {
                h.chunks[index] = bytes
            }
            holdings[manifest.key] = h
        }
    }

    /// Whether a manifest may be fetched: a trusted publisher's valid signature, newer than the
    /// active version, not rolled back.
    private func accepts(_ m: ReleaseManifest) -> Bool { problem(with: m) == nil }

    private func problem(with m: ReleaseManifest) -> Refusal? {
        !publishers.contains(m.publisher) ? .untrustedPublisher
            : !m.isSigned ? .badSignature
            : (active[m.key.name].map { m.key.version <= $0 } ?? false) ? .olderThanActive
            : rollbacks[m.key] != nil ? .rolledBack : nil
    }

    /// Whether `bytes` are chunk `index` of `artefact`: its length and BLAKE2b-256.
    private static func verifies(_ bytes: [UInt8], _ index: Int, _ artefact: ReleaseArtefact, _ chunkSize: Int) -> Bool {
        index >= 0 && index < artefact.chunkHashes.count && bytes.count == artefact.range(of: index, chunkSize: chunkSize).count
            && Blake2b.hash256(bytes) == artefact.chunkHashes[index]
    }

    /// The versions held of `name`, oldest first.
    public func versions(of name: String) -> [ReleaseKey] { holdings.keys.filter { $0.name == name }.sorted() }

    // MARK: Events

    public mutating func onStart(at now: Instant) -> [Action] {
        var out: [Action] = [.schedule(.summary, at: now + jittered(settings.summaryInterval))]
        // Releases a previous run completed but had not activated yet.
        for key in holdings.keys.sorted() where holdings[key]?.isComplete == true { considerActivation(key, at: now, into: &out) }
        return out
    }

    /// Publishes a release this node signed: it is checked like any other, kept, activated by
    /// the rollout rules, and pushed to peers.
    public mutating func publish(_ manifest: ReleaseManifest, file: [UInt8], delta: [UInt8]?, at now: Instant) throws(ReleaseError) -> [Action] {
        guard publishers.contains(manifest.publisher) else { throw .notAPublisher(manifest.publisher) }
        guard manifest.isSigned else { throw .invalid("the manifest's signature does not hold") }
        guard Blake2b.hash256(file) == manifest.fileHash else { throw .invalid("the file does not match the manifest's hash") }
        guard holdings[manifest.key] == nil else { throw .exists(manifest.key) }
        guard rollbacks[manifest.key] == nil else { throw .invalid("\(manifest.key) was rolled back; publish a new version") }
        if let current = active[manifest.key.name], manifest.key.version <= current { throw .older(manifest.key, active: current) }
        guard distinctNames(adding: manifest.key.name) <= settings.maxNames else { throw .invalid("this node already holds \(settings.maxNames) models") }
        var out: [Action] = []
        holdings[manifest.key] = Holding(manifest: manifest, file: file, delta: manifest.delta == nil ? nil : delta)
        completed(manifest.key, at: now, into: &out)
        return out
    }

    /// Rolls back a release by a notice this node signed (published here or not).
    public mutating func rollBack(_ notice: RollbackNotice, at now: Instant) throws(ReleaseError) -> [Action] {
        guard publishers.contains(notice.publisher) else { throw .notAPublisher(notice.publisher) }
        guard notice.isSigned else { throw .invalid("the rollback notice's signature does not hold") }
        var out: [Action] = []
        accept(notice, at: now, into: &out)
        pushSummaries(into: &out)
        return out
    }

    public mutating func onMessage(_ message: ReleaseMessage, from sender: PeerAddress, at now: Instant) -> [Action] {
        var out: [Action] = []
        switch message {
        case let .summary(held, notices, reply):
            for notice in notices where rollbacks[notice.key] == nil {
                guard publishers.contains(notice.publisher), notice.isSigned else {
                    if !refusedNotices.contains(notice) {
                        refusedNotices = Array((refusedNotices + [notice]).suffix(64))
                        refuse(.untrustedRollback, notice.key, from: sender.peer, into: &out)
                    }
                    continue
                }
                accept(notice, at: now, into: &out)
            }
            for h in held { offered(h, by: sender, at: now, into: &out) }
            if !reply, lacks(held, notices) { out.append(.send(summary(reply: true), to: sender.endpoint, via: .session(sender.peer))) }
        case let .manifestRequest(key):
            if let m = holdings[key]?.manifest { out.append(.send(.manifest(m), to: sender.endpoint, via: .session(sender.peer))) }
        case let .manifest(m):
            receivedManifest(m, from: sender, at: now, into: &out)
        case let .chunkRequest(key, part, index):
            guard let h = holdings[key], let m = h.manifest, let bytes = part == .file ? h.file : h.delta else { break }
            let artefact = part == .file ? m.file : m.delta?.artefact
            guard let artefact, index >= 0, index < artefact.chunkHashes.count else { break }
            counters.chunksServed += 1
            let chunk = Array(bytes[artefact.range(of: index, chunkSize: m.chunkSize)])
            out.append(.send(.chunk(key, part, index: index, bytes: chunk), to: sender.endpoint, via: .session(sender.peer)))
        case let .chunk(key, part, index, bytes):
            receivedChunk(key, part, index, bytes, from: sender, at: now, into: &out)
        }
        return out
    }

    public mutating func onTimer(_ timer: Timer, at now: Instant) -> [Action] {
        var out: [Action] = []
        switch timer {
        case .summary:
            out.append(.schedule(.summary, at: now + jittered(settings.summaryInterval)))
            if !peers.isEmpty {
                let peer = peers[Int(rng.next() % UInt64(peers.count))]
                out.append(.send(summary(reply: false), to: peer.endpoint, via: .session(peer.peer)))
            }
            // Fetches with nothing in flight (their holders were unknown or gone) start again.
            for key in holdings.keys.sorted() where holdings[key]?.isComplete == false && holdings[key]?.inFlight.isEmpty == true {
                requestMore(key, at: now, into: &out)
            }
        case let .request(key, part, index):
            guard var h = holdings[key], !h.isComplete, let asked = h.inFlight.removeValue(forKey: index) else { break }
            // The holder asked goes to the back of the line; the next one is asked.
            if let i = h.holders.firstIndex(where: { $0.peer == asked }), h.holders.count > 1 { h.holders.append(h.holders.remove(at: i)) }
            h.attempts += 1
            holdings[key] = h
            if index < 0 || h.fetching == part { requestMore(key, at: now, into: &out) }
        case let .activate(key):
            activateIfStillDue(key, into: &out)
        }
        return out
    }

    // MARK: Summaries

    /// This node's summary: every release with a manifest, and every rollback notice.
    public func summary(reply: Bool) -> ReleaseMessage {
        let held = holdings.keys.sorted().compactMap { k in holdings[k]?.manifest == nil ? nil : ReleaseMessage.Held(key: k, complete: holdings[k]?.isComplete == true) }
        return .summary(held: Array(held.prefix(ReleaseMessage.maxHeld)), rollbacks: Array(rollbacks.keys.sorted().compactMap { rollbacks[$0] }.prefix(ReleaseMessage.maxRollbacks)), reply: reply)
    }

    /// Whether a peer whose summary lists `held` and `notices` lacks something this node has.
    private func lacks(_ held: [ReleaseMessage.Held], _ notices: [RollbackNotice]) -> Bool {
        let theirs = Set(held.filter(\.complete).map(\.key))
        if holdings.contains(where: { $0.value.isComplete && !theirs.contains($0.key) && rollbacks[$0.key] == nil }) { return true }
        let theirNotices = Set(notices.map(\.key))
        return rollbacks.keys.contains { !theirNotices.contains($0) }
    }

    private mutating func pushSummaries(into out: inout [Action]) {
        var candidates = peers
        for _ in 0..<min(settings.pushFanout, candidates.count) {
            let peer = candidates.remove(at: Int(rng.next() % UInt64(candidates.count)))
            out.append(.send(summary(reply: false), to: peer.endpoint, via: .session(peer.peer)))
        }
    }

    /// A peer says it holds `held`.
    private mutating func offered(_ held: ReleaseMessage.Held, by sender: PeerAddress, at now: Instant, into out: inout [Action]) {
        let key = held.key
        if rollbacks[key] != nil || refusedOffers[sender.peer]?.contains(key) == true { return }
        if var h = holdings[key] {
            if !h.advertisers.contains(where: { $0.peer == sender.peer }) {
                h.advertisers.append(sender)
                holdings[key] = h
            }
            if held.complete, !h.holders.contains(where: { $0.peer == sender.peer }) {
                h.holders.append(sender)
                holdings[key] = h
                if !h.isComplete, h.inFlight.count < settings.maxRequestsInFlight { requestMore(key, at: now, into: &out) }
            }
            return
        }
        if let current = active[key.name], key.version <= current {
            if key.version < current, !countedOlder.contains(key) {
                countedOlder.append(key)
                refuse(.olderThanActive, key, from: sender.peer, into: &out)
            }
            return
        }
        let pending = holdings.values.filter { $0.manifest == nil }.count
        guard pending < settings.maxPendingManifests, distinctNames(adding: key.name) <= settings.maxNames else {
            refuseOnce(.tooManyReleases, key, from: sender.peer, into: &out)
            return
        }
        holdings[key] = Holding(holders: held.complete ? [sender] : [], advertisers: [sender])
        out.append(.send(.manifestRequest(key), to: sender.endpoint, via: .session(sender.peer)))
        holdings[key]?.inFlight[-1] = sender.peer
        out.append(.schedule(.request(key, .file, index: -1), at: now + settings.requestTimeout))
    }

    // MARK: Fetching

    private mutating func receivedManifest(_ m: ReleaseManifest, from sender: PeerAddress, at now: Instant, into out: inout [Action]) {
        let key = m.key
        guard var h = holdings[key], h.manifest == nil else { return }
        h.inFlight[-1] = nil
        out.append(.cancel(.request(key, .file, index: -1)))
        if let problem = problem(with: m) {
            refuse(problem, key, from: sender.peer, into: &out)
            remember(refused: key, from: sender.peer)
            // Others may offer a genuine manifest for the same release.
            holdings[key] = nil
            return
        }
        h.manifest = m
        if !h.holders.contains(where: { $0.peer == sender.peer }) { h.holders.insert(sender, at: 0) }
        h.fetching = deltaBase(for: m) != nil ? .delta : .file
        holdings[key] = h
        out.append(.report(.fetching(key)))
        requestMore(key, at: now, into: &out)
    }

    /// The file of the version `m`'s delta applies to, if this node holds it.
    private func deltaBase(for m: ReleaseManifest) -> [UInt8]? {
        guard let d = m.delta, let base = holdings[ReleaseKey(name: m.key.name, version: d.baseVersion)]?.file,
              Blake2b.hash256(base) == d.baseHash else { return nil }
        return base
    }

    /// Asks for missing pieces of `key` (its manifest, or chunks) up to the in-flight bound.
    private mutating func requestMore(_ key: ReleaseKey, at now: Instant, into out: inout [Action]) {
        guard var h = holdings[key], !h.isComplete else { return }
        let known = h.manifest == nil ? h.holders + h.advertisers.filter { a in !h.holders.contains { $0.peer == a.peer } } : h.holders
        let live = known.filter { holder in peers.contains { $0.peer == holder.peer } }
        let holders = live.isEmpty ? known : live
        guard !holders.isEmpty else { return }
        guard let m = h.manifest, let part = h.fetching else {
            if h.inFlight[-1] == nil {
                let peer = holders[h.attempts % holders.count]
                h.inFlight[-1] = peer.peer
                holdings[key] = h
                out.append(.send(.manifestRequest(key), to: peer.endpoint, via: .session(peer.peer)))
                out.append(.schedule(.request(key, .file, index: -1), at: now + settings.requestTimeout))
            }
            return
        }
        let count = (part == .file ? m.file : m.delta?.artefact)?.chunkHashes.count ?? 0
        var next = 0
        while h.inFlight.count < settings.maxRequestsInFlight, next < count {
            defer { next += 1 }
            guard h.chunks[next] == nil, h.inFlight[next] == nil else { continue }
            let peer = holders[(next + h.attempts) % holders.count]
            h.inFlight[next] = peer.peer
            out.append(.send(.chunkRequest(key, part, index: next), to: peer.endpoint, via: .session(peer.peer)))
            out.append(.schedule(.request(key, part, index: next), at: now + settings.requestTimeout))
        }
        holdings[key] = h
    }

    private mutating func receivedChunk(_ key: ReleaseKey, _ part: ReleasePart, _ index: Int, _ bytes: [UInt8],
                                        from sender: PeerAddress, at now: Instant, into out: inout [Action]) {
        guard var h = holdings[key], !h.isComplete, let m = h.manifest, h.fetching == part, h.chunks[index] == nil,
              let artefact = part == .file ? m.file : m.delta?.artefact, index >= 0, index < artefact.chunkHashes.count else {
            counters.refused[.unsolicited, default: 0] += 1
            return
        }
        h.inFlight[index] = nil
        out.append(.cancel(.request(key, part, index: index)))
        guard Self.verifies(bytes, index, artefact, m.chunkSize) else {
            // Never stored; the sender is no longer asked for this release.
            h.holders.removeAll { $0.peer == sender.peer }
            holdings[key] = h
            refuse(.chunkHashMismatch, key, from: sender.peer, into: &out)
            requestMore(key, at: now, into: &out)
            return
        }
        h.chunks[index] = bytes
        if part == .file { counters.fileBytesReceived += bytes.count } else { counters.deltaBytesReceived += bytes.count }
        holdings[key] = h
        guard h.chunks.count == artefact.chunkHashes.count else {
            out.append(.report(.chunkKept(key, part, index: index)))
            requestMore(key, at: now, into: &out)
            return
        }
        var whole: [UInt8] = []
        whole.reserveCapacity(artefact.size)
        for i in 0..<artefact.chunkHashes.count { whole += h.chunks[i] ?? [] }
        h.chunks = [:]
        switch part {
        case .file:
            guard Blake2b.hash256(whole) == m.fileHash else {
                holdings[key] = h
                refuse(.fileHashMismatch, key, from: sender.peer, into: &out)
                requestMore(key, at: now, into: &out)
                return
            }
            h.file = whole
        case .delta:
            guard let base = deltaBase(for: m), let file = ReleasePatch.apply(whole, to: base), Blake2b.hash256(file) == m.fileHash else {
                // The delta does not make the release: fetch the whole file instead.
                h.fetching = .file
                holdings[key] = h
                refuse(.deltaMismatch, key, from: sender.peer, into: &out)
                requestMore(key, at: now, into: &out)
                return
            }
            h.file = file
            h.delta = whole
        }
        h.inFlight = [:]
        holdings[key] = h
        completed(key, at: now, into: &out)
    }

    /// A release became complete here: kept, activated by the rollout rules, pushed.
    private mutating func completed(_ key: ReleaseKey, at now: Instant, into out: inout [Action]) {
        counters.releasesStored += 1
        out.append(.report(.stored(key)))
        considerActivation(key, at: now, into: &out)
        pushSummaries(into: &out)
    }

    // MARK: Activation and rollback

    private mutating func considerActivation(_ key: ReleaseKey, at now: Instant, into out: inout [Action]) {
        guard let m = holdings[key]?.manifest, rollbacks[key] == nil, key.version > active[key.name] ?? 0 else { return }
        if m.canaryDelaySeconds == 0 || m.isCanary(me) {
            activate(key, into: &out)
        } else {
            out.append(.schedule(.activate(key), at: now + .seconds(m.canaryDelaySeconds)))
        }
    }

    private mutating func activateIfStillDue(_ key: ReleaseKey, into out: inout [Action]) {
        guard holdings[key]?.isComplete == true, rollbacks[key] == nil, key.version > active[key.name] ?? 0 else { return }
        activate(key, into: &out)
    }

    private mutating func activate(_ key: ReleaseKey, into out: inout [Action]) {
        let previous = active[key.name]
        active[key.name] = key.version
        out.append(.report(.activated(key, previous: previous)))
        prune(key.name, into: &out)
    }

    private mutating func accept(_ notice: RollbackNotice, at now: Instant, into out: inout [Action]) {
        let key = notice.key
        guard rollbacks[key] == nil else { return }
        rollbacks[key] = notice
        out.append(.cancel(.activate(key)))
        if holdings[key]?.isComplete == false {
            for index in (holdings[key]?.inFlight.keys.sorted() ?? []) { out.append(.cancel(.request(key, holdings[key]?.fetching ?? .file, index: index))) }
            holdings[key] = nil
            out.append(.report(.discarded(key)))
        }
        if active[key.name] == key.version {
            let fallback = versions(of: key.name).last { $0.version < key.version && rollbacks[$0] == nil && holdings[$0]?.isComplete == true }
            active[key.name] = fallback?.version
        }
        out.append(.report(.rolledBack(notice, active: active[key.name])))
    }

    /// Drops the complete versions of `name` beyond the newest ``Settings/keptVersions`` at or
    /// below the active one; newer pending versions stay.
    private mutating func prune(_ name: String, into out: inout [Action]) {
        guard let current = active[name] else { return }
        let old = versions(of: name).filter { $0.version <= current && holdings[$0]?.isComplete == true }
        for key in old.dropLast(settings.keptVersions) {
            holdings[key] = nil
            out.append(.report(.discarded(key)))
        }
    }

    // MARK: Helpers

    private func distinctNames(adding name: String) -> Int { Set(holdings.keys.map(\.name) + [name]).count }

    private mutating func refuse(_ reason: Refusal, _ key: ReleaseKey?, from peer: PeerID?, into out: inout [Action]) {
        counters.refused[reason, default: 0] += 1
        out.append(.report(.refused(reason, key, from: peer)))
    }

    /// Refuses once per (peer, release), so a repeated summary is not counted again.
    private mutating func refuseOnce(_ reason: Refusal, _ key: ReleaseKey, from peer: PeerID, into out: inout [Action]) {
        guard refusedOffers[peer]?.contains(key) != true else { return }
        remember(refused: key, from: peer)
        refuse(reason, key, from: peer, into: &out)
    }

    /// Keeps the last 64 offers refused per peer.
    private mutating func remember(refused key: ReleaseKey, from peer: PeerID) {
        var keys = refusedOffers[peer] ?? []
        keys.append(key)
        refusedOffers[peer] = Array(keys.suffix(64))
    }

    /// `d` give or take a quarter, so peers' summaries do not fall into step.
    private mutating func jittered(_ d: Duration) -> Duration {
        let ns = d.components.seconds * 1_000_000_000 + d.components.attoseconds / 1_000_000_000
        return .nanoseconds(ns * 3 / 4 + Int64(rng.next() % UInt64(max(1, ns / 2))))
    }
}

/// Why this node cannot publish or roll back.
public enum ReleaseError: Error, Sendable, Equatable, CustomStringConvertible {
    case notAPublisher(PeerID)
    case exists(ReleaseKey)
    case older(ReleaseKey, active: UInt64)
    case invalid(String)

    public var description: String {
        switch self {
        case let .notAPublisher(p):
            return "peer \(p.fingerprint) is not a publisher of this node: list its ID (\(p)) in the node's config `publishers` or start it with --publisher \(p)"
        case let .exists(k): return "\(k) already exists; publish a higher version"
        case let .older(k, active): return "\(k) is not newer than the active version \(active); publish a version above \(active)"
        case let .invalid(reason): return reason
        }
    }
}
