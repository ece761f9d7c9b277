import Crypto

/// Push-sum averaging of `[Float]` vectors, weighted by sample counts, with acknowledged
/// transfers so that lost, duplicated and reordered messages neither lose nor create mass.
///
/// Each node holds a value `v = w·x` and a weight `w` (initially its sample count); its
/// estimate is `v / w`. On every tick it moves a fraction of `(v, w)` to one neighbour.
/// With ``LossRecovery/acknowledged`` the share leaves the sender at once and is held in
/// flight under `(epoch, sequence)` until the receiver acknowledges it; the receiver applies
/// each transfer once (a per-sender sequence window) and always acknowledges. The share is
/// given back to the sender only through ``onPeerGone(_:at:)``. See `docs/averaging.md`.
///
/// Every per-peer record is keyed by the peer's identity, never by its address: transfers and
/// acknowledgements travel over the authenticated session with the peer
/// (``Transport/session(_:)``), so the receiver knows who sent them, and a peer that moves to
/// another address keeps its transfers, acknowledgements and duplicate suppression.
public struct PushSumAverager: ProtocolNode {
    /// How lost messages are handled.
    public enum LossRecovery: Sendable, Hashable {
        /// Retransmit until acknowledged; apply once; conserve mass exactly.
        case acknowledged
        /// Plain push-sum: send once, no acknowledgement; a lost message loses its mass.
        case none
    }

    /// Every tunable of the averager, with the reason for its default.
    public struct Settings: Sendable {
        /// Time between two pushes. 200 ms keeps a 31 kB model share per peer per tick well
        /// under a LAN's capacity while mixing a thousand nodes in seconds.
        public var tickInterval: Duration = .milliseconds(200)
        /// Time before an unacknowledged transfer is sent again, at least. Half a tick: a lost
        /// share is usually retried before the next tick, so loss costs little mixing speed.
        /// Where a transfer's round trip takes longer (large shares, slow or capped links) the
        /// wait follows the measured round trip instead (see ``retransmitTimeout``).
        public var retransmitInterval: Duration = .milliseconds(100)
        /// Fraction of `(v, w)` pushed per transfer. One half is classic push-sum: the fastest
        /// mixing for one message per tick.
        public var shareFraction: Double = 0.5
        /// With a sparse codec (top-k), the fraction of each carried coordinate's `(v_c, w_c)`
        /// a transfer moves. Three quarters: a coordinate travels only in the transfers that
        /// pick it, so each one should move more of it. The receiver's estimate moves further
        /// towards the sender's, and a node that keeps sending a coordinate (its own training
        /// drives it away from its peers) keeps little weight there, so what its peers send
        /// back pulls its estimate home. Measured on the MLP of docs/learning.md.
        public var sparseShareFraction: Double = 0.75
        /// Acknowledged transfers (exact) or plain push-sum (for comparison).
        public var lossRecovery: LossRecovery = .acknowledged
        /// With a lossy dense codec, the sender keeps what the codec rounds away and sends it
        /// later (error feedback), so the average stays exact. Off, it subtracts the share it
        /// meant to send and that remainder is lost: only for comparison. A sparse codec
        /// (top-k) moves whole coordinates, so there is nothing to feed back either way.
        public var errorFeedback = true
        /// Transfers a node may hold in flight at once. One bounds the extra memory per node
        /// to one share; a tick finding it still unacknowledged skips sending.
        public var maxInFlight: Int = 1
        /// Senders whose duplicate-suppression state a receiver keeps. 1,024 covers a
        /// partial view (about 30 peers) and years of churn between evictions; about 48 kB.
        public var maxTrackedSenders: Int = 1024
        /// A sender's suppression state is evicted only after this long without a transfer
        /// from it. It must exceed how long a sender keeps retransmitting to a live receiver
        /// (the membership's dead timeout) plus the network's longest message lifetime.
        public var senderRetention: Duration = .seconds(600)

        public init() {}
    }

    /// Sequence numbers a receiver remembers behind the highest one applied from a sender.
    /// A sender with at most ``maxInFlightLimit`` transfers unresolved never sends a
    /// sequence number further behind, so anything older was already resolved.
    public static let dedupWindow: UInt64 = SequenceWindow.width
    /// The largest allowed ``Settings/maxInFlight`` (the dedup window's width).
    public static let maxInFlightLimit = Int(dedupWindow)
    /// Consecutive full hand-off transfers on a graceful leave. Three suffice: each moves
    /// the 24 leading bits of every `Double` value, which has 53.
    static let handOffRounds = 4

    /// One push-sum share.
    public struct Transfer: Sendable, Equatable {
        /// The sender's incarnation: a restarted node with fresh state starts a new epoch.
        public var epoch: UInt64
        /// Per-epoch sequence number, from 1.
        public var sequence: UInt64
        /// The weight share.
        public var weight: Double
        /// Elements in the vector share.
        public var count: Int
        /// The codec that produced `payload`.
        public var codec: UInt8
        /// The encoded vector share.
        public var payload: SharePayload
    }

    /// What averagers send each other.
    public enum Message: Sendable, Equatable, WireSized, TraceIdentified {
        case transfer(Transfer)
        case ack(epoch: UInt64, sequence: UInt64)

        /// Fixed header bytes of a transfer on the wire (see ``AveragingWire``).
        public static let transferHeaderSize = 1 + 8 + 8 + 8 + 4 + 1 + 4
        /// Bytes of an acknowledgement on the wire.
        public static let ackSize = 1 + 8 + 8

        public var wireSize: Int {
            switch self {
            case .transfer(let t): return Self.transferHeaderSize + t.payload.byteCount
            case .ack: return Self.ackSize
            }
        }

        /// Kind, epoch, sequence and (for a transfer) the weight's bits.
        public var traceWord: UInt64 {
            switch self {
            case .transfer(let t): return traceMix(1, t.epoch, t.sequence, t.weight.bitPattern)
            case .ack(let epoch, let sequence): return traceMix(2, epoch, sequence)
            }
        }
    }

    public enum Timer: Hashable, Sendable {
        case tick
        case retransmit
    }

    public enum Event: Sendable, Equatable {
        case transferSent(to: PeerID, sequence: UInt64, retransmission: Bool)
        case transferApplied(from: PeerID, sequence: UInt64)
        case transferAcked(by: PeerID, sequence: UInt64)
        case transferReclaimed(from: PeerID, sequence: UInt64)
        case transferRejected(from: Sender, reason: AveragingError)
        /// The estimate moved (a share was applied or reclaimed); read ``estimate``.
        case estimateChanged(weight: Double)
        /// A graceful leave finished: every bit of mass was handed to peers and acknowledged.
        case handOffComplete
    }

    /// Running totals, for observers and tests.
    public struct Counters: Sendable, Equatable {
        public var sent = 0
        public var retransmitted = 0
        public var applied = 0
        public var duplicates = 0
        public var acked = 0
        public var reclaimed = 0
        public var rejected = 0
        /// Transfers not applied because the sender table was full of live senders.
        public var refused = 0
        /// Ticks that sent nothing: in-flight limit reached, or no neighbour.
        public var skippedTicks = 0
        /// Local updates applied (training steps), and those skipped at weight 0.
        public var localUpdates = 0
        public var localUpdatesSkipped = 0
    }

    struct InFlight {
        var to: PeerAddress
        var transfer: Transfer
        /// When it was first and last sent.
        var sentAt: Instant
        var lastSent: Instant
        /// Sent more than once: its acknowledgement is ambiguous and measures nothing.
        var retransmitted = false
        /// When it is sent again unless acknowledged first.
        var due: Instant
    }

    /// What a sender knows about the round trips of its transfers to one peer.
    struct RoundTrip: SortedTableElement {
        var peer: PeerID
        /// Smoothed round trip and its variation, in nanoseconds, from acknowledgements of
        /// transfers sent once (nil before the first).
        var smoothed: Int64?
        var variation: Int64 = 0
        var tableKey: PeerID { peer }
    }

    struct SenderKey: Hashable, Comparable {
        var peer: PeerID
        var epoch: UInt64

        static func < (a: SenderKey, b: SenderKey) -> Bool { (a.peer, a.epoch) < (b.peer, b.epoch) }
    }

    struct SenderRecord: SortedTableElement {
        var key: SenderKey
        /// Sequences applied (see ``PushSumAverager/dedupWindow``).
        var applied = SequenceWindow()
        var lastSeen: Instant
        var tableKey: SenderKey { key }

        /// Whether `sequence` counts as applied: marked in the window, or older than the
        /// window (hence resolved long ago).
        func contains(_ sequence: UInt64) -> Bool { applied.contains(sequence) }

        mutating func mark(_ sequence: UInt64, at now: Instant) {
            applied.insert(sequence)
            lastSeen = now
        }
    }

    public let settings: Settings
    /// This node's identity.
    public let peerID: PeerID
    /// Elements of the averaged vector.
    public let dimension: Int
    /// Peers a share may go to; the composite node sets it from the peer-sampling view.
    public var neighbours: [PeerAddress]
    public private(set) var counters = Counters()
    /// The weight `w`.
    public internal(set) var weight: Double
    /// Samples whose mass this node has yet to add (a joiner that first takes the network's
    /// current estimate from the shares it receives; see ``contribute(at:)``); 0 once added.
    public internal(set) var pendingContribution: Double = 0
    var value: [Double]
    /// With a sparse codec (sparse push-sum, see ``SparseShare``), each coordinate's own
    /// weight, and ``weight`` is their mean; empty with a dense codec, where every coordinate
    /// has the weight ``weight``.
    var coordinateWeights: [Double] = []
    /// With a sparse codec, each coordinate's estimate when this node last sent it: a
    /// coordinate's priority for the next transfer is how far its estimate has moved since.
    private var lastSent: [Float] = []
    /// With a sparse codec, where the round-robin sweep that every transfer also carries goes on.
    private var sweepCursor = 0
    let codec: any ShareCodec
    private var rng: SplitMix64
    let epoch: UInt64
    var nextSequence: UInt64 = 1
    var inFlight: [InFlight] = []
    /// Round trips to the peers this node sends to (links differ: a weak link's slow round
    /// trip must not slow the retries on a fast one). Looked up by peer, never iterated.
    private(set) var roundTrips = SortedTable<RoundTrip>()
    var senders = SortedTable<SenderRecord>()
    private var leaving = false
    private var handOffDone = false
    private var handOffsSent = 0

    /// A node whose local vector is `initial`, averaged over `sampleCount` samples.
    ///
    /// `rng` drives neighbour choice and the epoch; give a restarted node a fresh seed.
    public init(
        peer: PeerID, initial: [Float], sampleCount: Double, neighbours: [PeerAddress] = [],
        settings: Settings = Settings(), codec: any ShareCodec = IdentityShareCodec(), rng: SplitMix64
    ) {
        var settings = settings
        settings.maxInFlight = min(max(settings.maxInFlight, 1), Self.maxInFlightLimit)
        self.settings = settings
        self.peerID = peer
        self.dimension = initial.count
        self.neighbours = neighbours
        self.weight = sampleCount
        self.value = initial.map { Double($0) * sampleCount }
        self.codec = codec
        self.rng = rng
        self.epoch = self.rng.next()
        if codec.sparseSelection != nil {
            coordinateWeights = [Double](repeating: sampleCount, count: dimension)
            lastSent = initial
            sweepCursor = Int(self.rng.next(upperBound: UInt64(max(dimension, 1))))
        }
    }

    /// A node that joins a running network: it holds no mass at first, so the first shares it
    /// receives give it the network's current estimate (a late joiner thus starts from the
    /// trained model, not from scratch), and it adds its own `sampleCount` samples' worth of
    /// mass at that estimate with ``contribute(at:)``.
    public init(
        joining peer: PeerID, dimension: Int, sampleCount: Double, neighbours: [PeerAddress] = [],
        settings: Settings = Settings(), codec: any ShareCodec = IdentityShareCodec(), rng: SplitMix64
    ) {
        self.init(peer: peer, initial: [Float](repeating: 0, count: dimension), sampleCount: 0, neighbours: neighbours,
                  settings: settings, codec: codec, rng: rng)
        pendingContribution = sampleCount
    }

    /// A node resuming saved state (``DurableState``): its value, weight, epoch, sequence
    /// numbers, transfers in flight and duplicate suppression, exactly as saved. Its own
    /// vector is not added again.
    init(restoring state: DurableState, settings: Settings, codec: any ShareCodec, rng: SplitMix64) {
        var settings = settings
        settings.maxInFlight = min(max(settings.maxInFlight, 1), Self.maxInFlightLimit)
        self.settings = settings
        peerID = state.peer
        dimension = state.value.count
        neighbours = []
        weight = state.weight
        pendingContribution = state.pendingContribution
        value = state.value
        self.codec = codec
        self.rng = rng
        epoch = state.epoch
        nextSequence = state.nextSequence
        inFlight = state.inFlight.map {
            InFlight(to: $0.to, transfer: $0.transfer, sentAt: .zero, lastSent: .zero, retransmitted: true, due: .zero)
        }
        for s in state.senders {
            let key = SenderKey(peer: s.peer, epoch: s.epoch)
            senders[key] = SenderRecord(key: key, applied: SequenceWindow(highest: s.highest, bitmap: s.bitmap), lastSeen: .zero)
        }
        if codec.sparseSelection != nil {
            // A dense state resumed sparse: every coordinate starts at the one weight it had.
            coordinateWeights = state.coordinateWeights ?? [Double](repeating: state.weight, count: dimension)
            lastSent = estimate.map { $0.map(Float.init) } ?? [Float](repeating: 0, count: dimension)
            sweepCursor = Int(self.rng.next(upperBound: UInt64(max(dimension, 1))))
        }
    }

    // MARK: Reading the state

    /// `v / w` per element, or nil while the weight is zero. With a sparse codec each
    /// element has its own weight, and the estimate is nil until every element has weight
    /// (a joiner first hears of every coordinate).
    public var estimate: [Double]? {
        guard weight > 0 else { return nil }
        guard isSparse else {
            let w = weight
            return value.map { $0 / w }
        }
        guard !coordinateWeights.contains(0) else { return nil }
        return zip(value, coordinateWeights).map { $0 / $1 }
    }

    /// Whether transfers carry some coordinates, each at its own weight (a sparse codec).
    public var isSparse: Bool { !coordinateWeights.isEmpty }

    /// Calls `body` with the value `v` and the weight `w` without copying: the mass this node
    /// holds. With a sparse codec, `w` is the mean of the elements' own weights, which sums
    /// over the network like a dense weight; divide by ``estimate`` or
    /// ``withEstimateParts(_:)``, not by `w`.
    public func withValue<R>(_ body: (UnsafeBufferPointer<Double>, Double) throws -> R) rethrows -> R {
        try value.withUnsafeBufferPointer { try body($0, weight) }
    }

    /// Calls `body` with the estimate as values and one divisor (`estimate = values / divisor`):
    /// `(v, w)` without copying when every element has the node's weight, else the estimate
    /// itself and 1 (or a weight of 0 while some element has none).
    public func withEstimateParts<R>(_ body: (UnsafeBufferPointer<Double>, Double) throws -> R) rethrows -> R {
        guard isSparse else { return try withValue(body) }
        guard let estimate else { return try value.withUnsafeBufferPointer { try body($0, 0) } }
        return try estimate.withUnsafeBufferPointer { try body($0, 1) }
    }

    /// Transfers sent and not yet acknowledged or reclaimed, with their destinations.
    public var pendingTransfers: [(to: PeerAddress, transfer: Transfer)] {
        inFlight.map { ($0.to, $0.transfer) }
    }

    /// Whether a transfer to `peer` is in flight (sent, neither acknowledged nor reclaimed).
    public func hasTransfers(inFlightTo peer: PeerID) -> Bool { inFlight.contains { $0.to.peer == peer } }

    /// Whether the transfer `(epoch, sequence)` from `sender` has been applied here.
    public func hasApplied(from sender: PeerID, epoch: UInt64, sequence: UInt64) -> Bool {
        senders[SenderKey(peer: sender, epoch: epoch)].map { $0.contains(sequence) } ?? false
    }

    /// Where `peer` is reached now: its address among the neighbours if it is one, else the
    /// one a transfer was first sent to.
    private func currentEndpoint(of address: PeerAddress) -> Endpoint {
        neighbours.first { $0.peer == address.peer }?.endpoint ?? address.endpoint
    }

    /// A transfer's share as decoded: every coordinate at the transfer's weight, or some
    /// coordinates each at its own (sparse push-sum).
    enum DecodedShare {
        case dense([Float])
        case sparse(SparseShare)
    }

    /// Decodes a transfer's share with this node's codec.
    func decodeShare(_ transfer: Transfer) throws(AveragingError) -> DecodedShare {
        guard transfer.codec == codec.identifier else { throw .unknownCodec(transfer.codec) }
        guard isSparse else { return .dense(try codec.decode(transfer.payload, count: transfer.count)) }
        guard case .bytes(let bytes) = transfer.payload else { throw .badPayload("expected a sparse share, got raw floats") }
        return .sparse(try SparseShare(decoding: bytes, dimension: transfer.count))
    }

    // MARK: Local training

    /// Moves this node's estimate by `change` (the parameters a local training step produced,
    /// minus the estimate it started from): `v += w · change`, the weight untouched. Training
    /// thus creates and loses no weight: the total weight, counting transfers in flight, stays
    /// the total sample count, and the total value moves by exactly the mass added over the
    /// updates applied (stochastic gradient push; docs/averaging.md).
    ///
    /// With a sparse codec a coordinate holding less than the node's mean weight takes a
    /// damped step: `v_c += w_c · min(1, (w_c / w̄)²) · change_c`. The node holds little there
    /// because it sent the coordinate away (its training made it a priority) and its peers have
    /// not sent it back yet; a full step would drive its model further from theirs meanwhile.
    ///
    /// A node holding no weight (it handed all of it on) has no estimate to move, and skips
    /// the update; so does a node that is leaving. Returns whether it was applied.
    @discardableResult
    public mutating func applyLocalUpdate(_ change: [Float]) throws(AveragingError) -> Bool {
        guard change.count == dimension else { throw .wrongDimension(expected: dimension, got: change.count) }
        guard weight > 0, !leaving else {
            counters.localUpdatesSkipped += 1
            return false
        }
        let w = weight
        var moved = value
        var finite = true
        moved.withUnsafeMutableBufferPointer { v in
            change.withUnsafeBufferPointer { c in
                if isSparse {
                    coordinateWeights.withUnsafeBufferPointer { cw in
                        for i in 0..<v.count {
                            let held = cw[i] / w
                            v[i] += cw[i] * min(1, held * held) * Double(c[i])
                            finite = finite && v[i].isFinite
                        }
                    }
                } else {
                    for i in 0..<v.count {
                        v[i] += w * Double(c[i])
                        finite = finite && v[i].isFinite
                    }
                }
            }
        }
        guard finite else { throw .nonFinite }
        value = moved
        counters.localUpdates += 1
        return true
    }

    /// Adds this node's own mass, once: its ``pendingContribution`` samples `n` at `vector`:
    /// the value grows by `n · vector` and the weight by `n`. A joiner passes its estimate
    /// (the network's model, taken from the shares it received), so the network's weighted
    /// average stays where it was; the first peers of a network, holding no weight, pass the
    /// shared initial model. Returns whether mass was added.
    @discardableResult
    public mutating func contribute(at vector: [Float]) throws(AveragingError) -> Bool {
        guard pendingContribution > 0, !leaving else { return false }
        guard vector.count == dimension else { throw .wrongDimension(expected: dimension, got: vector.count) }
        guard vector.allSatisfy(\.isFinite) else { throw .nonFinite }
        let n = pendingContribution
        value.withUnsafeMutableBufferPointer { v in
            for i in 0..<v.count { v[i] += Double(vector[i]) * n }
        }
        if isSparse {
            for i in coordinateWeights.indices { coordinateWeights[i] += n }
            lastSent = vector
            refreshMeanWeight()
        } else {
            weight += n
        }
        pendingContribution = 0
        return true
    }

    // MARK: Driver entry points

    /// Starts loading what a tick, a transfer or an acknowledgement reads first: the value,
    /// the neighbours, the transfers in flight and the per-peer tables.
    public static func prefetchState(at node: UnsafeRawPointer) {
        for (offset, lines) in stateOffsets { prefetchObject(referencedAt: node, offset: offset, lines: lines) }
    }

    /// Where those arrays' references sit in the node value, and how many lines of each to load.
    static let stateOffsets: [(offset: Int, lines: Int)] = {
        let arrays: [(PartialKeyPath<PushSumAverager>, Int)] = [
            (\.value, 2), (\.neighbours, 4), (\.inFlight, 3), (\.roundTrips, 4), (\.senders, 4),
        ]
        return arrays.compactMap { path, lines in MemoryLayout<PushSumAverager>.offset(of: path).map { ($0, lines) } }
    }()

    public mutating func onStart(at now: Instant) -> [Action] {
        let offset = Int64(rng.next(upperBound: UInt64(max(settings.tickInterval.nanosecondsClamped, 1))))
        var actions: [Action] = [.schedule(.tick, at: Instant(nanoseconds: now.nanoseconds &+ offset))]
        for index in inFlight.indices { inFlight[index].due = now + retransmitTimeout(to: inFlight[index].to.peer) }
        scheduleRetransmission(into: &actions)
        return actions
    }

    public mutating func onTimer(_ timer: Timer, at now: Instant) -> [Action] {
        switch timer {
        case .tick:
            // The next tick, a transfer, its report and the retransmission timer: one allocation.
            var actions: [Action] = []
            actions.reserveCapacity(4)
            actions.append(.schedule(.tick, at: now + settings.tickInterval))
            if leaving {
                continueHandOff(at: now, into: &actions)
            } else {
                push(fraction: isSparse ? settings.sparseShareFraction : settings.shareFraction, at: now, into: &actions)
            }
            return actions
        case .retransmit:
            var actions: [Action] = []
            for index in inFlight.indices where inFlight[index].due <= now {
                let entry = inFlight[index]
                inFlight[index].retransmitted = true
                inFlight[index].lastSent = now
                inFlight[index].due = now + retransmitTimeout(to: entry.to.peer)
                counters.retransmitted += 1
                // To the peer's current address: a peer that moved still gets its share.
                actions.append(.send(.transfer(entry.transfer), to: currentEndpoint(of: entry.to), via: .session(entry.to.peer)))
                actions.append(.report(.transferSent(to: entry.to.peer, sequence: entry.transfer.sequence, retransmission: true)))
            }
            scheduleRetransmission(into: &actions)
            return actions
        }
    }

    /// A transfer or acknowledgement that did not come over an authenticated session is
    /// refused: whatever changes per-peer state must be attributable to a peer.
    public mutating func onMessage(_ message: Message, from sender: Sender, at now: Instant) -> [Action] {
        guard let peer = sender.peer else {
            counters.rejected += 1
            return [.report(.transferRejected(from: sender, reason: .unauthenticated))]
        }
        switch message {
        case .transfer(let transfer):
            return receive(transfer, from: PeerAddress(peer: peer, endpoint: sender.endpoint), at: now)
        case .ack(let ackEpoch, let sequence):
            guard ackEpoch == epoch,
                  let index = inFlight.firstIndex(where: { $0.transfer.sequence == sequence && $0.to.peer == peer })
            else { return [] }
            let acked = inFlight.remove(at: index)
            counters.acked += 1
            if !acked.retransmitted {
                measureRoundTrip(to: peer, now.nanoseconds - acked.sentAt.nanoseconds)
            } else if acked.lastSent != .zero {
                // The acknowledgement answers one of the copies, so the round trip is at least
                // the time since the last: a lower bound, used only to raise the estimate.
                let atLeast = now.nanoseconds - acked.lastSent.nanoseconds
                if atLeast > roundTrips[peer]?.smoothed ?? 0 { measureRoundTrip(to: peer, atLeast) }
            }
            var actions: [Action] = [.report(.transferAcked(by: peer, sequence: sequence))]
            if inFlight.isEmpty { actions.append(.cancel(.retransmit)) }
            if leaving { continueHandOff(at: now, into: &actions) }
            return actions
        }
    }

    /// Membership learned that `peer` left or died: take back every share still in flight
    /// to it, and stop choosing it. Call this only once the peer is confirmed gone: a share
    /// the peer did apply, reclaimed here, would count twice.
    public mutating func onPeerGone(_ peer: PeerID, at now: Instant) -> [Action] {
        neighbours.removeAll { $0.peer == peer }
        roundTrips[peer] = nil
        var actions: [Action] = []
        var kept: [InFlight] = []
        for entry in inFlight {
            guard entry.to.peer == peer else {
                kept.append(entry)
                continue
            }
            // The share was produced by this node's codec, so it decodes; a failure would be
            // a codec bug, and keeping the entry in flight then loses nothing.
            guard let share = try? decodeShare(entry.transfer) else {
                kept.append(entry)
                continue
            }
            add(share, weight: entry.transfer.weight)
            counters.reclaimed += 1
            actions.append(.report(.transferReclaimed(from: peer, sequence: entry.transfer.sequence)))
            actions.append(.report(.estimateChanged(weight: weight)))
        }
        inFlight = kept
        if inFlight.isEmpty, !actions.isEmpty { actions.append(.cancel(.retransmit)) }
        if leaving { continueHandOff(at: now, into: &actions) }
        return actions
    }

    /// Starts a graceful leave: from now on every tick hands all remaining mass to a
    /// neighbour, until ``Event/handOffComplete`` is reported; the node may then stop.
    /// Meanwhile new incoming transfers are refused (neither applied nor acknowledged), so
    /// their senders keep that mass and reclaim it when membership reports the leave.
    public mutating func beginLeave(at now: Instant) -> [Action] {
        leaving = true
        var actions: [Action] = []
        continueHandOff(at: now, into: &actions)
        return actions
    }

    // MARK: Retransmission timing

    /// How long an unacknowledged transfer to `peer` waits before it is sent again: the
    /// measured round trip to that peer plus four times its variation (RFC 6298's estimator),
    /// at least ``Settings/retransmitInterval``. A share that takes longer to cross a slow
    /// link than the configured interval is then not sent again and again while it is still
    /// on its way; a weak link's slow round trip does not slow retries to others.
    ///
    /// Samples come from transfers sent once (Karn's rule: the acknowledgement of a transfer
    /// sent twice may answer either copy). A transfer sent again still tells that the round
    /// trip is at least the time since its last copy left; that raises the estimate when
    /// every transfer is retransmitted before its answer can arrive (a round trip longer than
    /// the configured interval), which would otherwise never give a sample. The timeout does
    /// not back off exponentially: on edge links loss is mostly noise, not congestion, and a
    /// peer that stops answering is declared dead by membership, which takes its shares back.
    public func retransmitTimeout(to peer: PeerID) -> Duration {
        let floor = settings.retransmitInterval.nanosecondsClamped
        guard let timing = roundTrips[peer], let smoothed = timing.smoothed else { return .nanoseconds(floor) }
        return .nanoseconds(max(floor, smoothed &+ 4 &* timing.variation))
    }

    private mutating func measureRoundTrip(to peer: PeerID, _ sample: Int64) {
        let sample = max(0, sample)
        // One search per acknowledgement: the record's position serves the read and the update.
        guard let slot = roundTrips.index(of: peer), let smoothed = roundTrips[at: slot].smoothed else {
            roundTrips[peer] = RoundTrip(peer: peer, smoothed: sample, variation: sample / 2)
            return
        }
        var timing = roundTrips[at: slot]
        timing.variation = timing.variation - timing.variation / 4 + abs(smoothed - sample) / 4
        timing.smoothed = smoothed - smoothed / 8 + sample / 8
        roundTrips[at: slot] = timing
    }

    /// Peers whose round trips are remembered before those no longer neighbours are forgotten.
    static let maxRoundTrips = 256

    private mutating func forgetRoundTripsOfFormerNeighbours() {
        let keep = Set(neighbours.map(\.peer) + inFlight.map(\.to.peer))
        roundTrips.keep { keep.contains($0.peer) }
    }

    /// Wakes the retransmission timer when the earliest transfer in flight is due.
    private func scheduleRetransmission(into actions: inout [Action]) {
        guard let next = inFlight.map(\.due).min() else { return }
        actions.append(.schedule(.retransmit, at: next))
    }

    // MARK: Sending

    private mutating func push(fraction: Double, at now: Instant, into actions: inout [Action]) {
        guard inFlight.count < settings.maxInFlight, !neighbours.isEmpty, weight > 0 || leaving else {
            counters.skippedTicks += 1
            return
        }
        let to = neighbours[Int(rng.next(upperBound: UInt64(neighbours.count)))]
        var weightShare = fraction == 1 ? weight : weight * fraction
        let scale = Self.scale(forWeight: weightShare)
        let payload: SharePayload
        if let selection = codec.sparseSelection {
            let share = takeSparseShare(fraction: fraction, selection: selection)
            payload = .bytes(share.encoded(dimension: dimension))
            weightShare = share.weights.reduce(0.0) { $0 + Double($1) } / Double(dimension)
        } else if codec.decodesExactly {
            payload = codec.encode(takeShare(fraction: fraction, scale: scale)).payload
        } else {
            let share = makeShare(fraction: fraction, scale: scale)
            let encoded = codec.encode(share)
            subtract(settings.errorFeedback ? encoded.decoded : share, scale: scale)
            payload = encoded.payload
        }
        if isSparse { refreshMeanWeight() } else { weight -= weightShare }
        let transfer = Transfer(
            epoch: epoch, sequence: nextSequence, weight: weightShare,
            count: dimension, codec: codec.identifier, payload: payload)
        nextSequence += 1
        counters.sent += 1
        actions.append(.send(.transfer(transfer), to: to.endpoint, via: .session(to.peer)))
        actions.append(.report(.transferSent(to: to.peer, sequence: transfer.sequence, retransmission: false)))
        if settings.lossRecovery == .acknowledged {
            if roundTrips.count > Self.maxRoundTrips { forgetRoundTripsOfFormerNeighbours() }
            inFlight.append(InFlight(to: to, transfer: transfer, sentAt: now, lastSent: now, due: now + retransmitTimeout(to: to.peer)))
            if inFlight.count == 1 { scheduleRetransmission(into: &actions) }
        }
    }

    private mutating func continueHandOff(at now: Instant, into actions: inout [Action]) {
        guard !handOffDone, inFlight.isEmpty else { return }
        let hasMass = weight != 0 || value.contains { $0 != 0 }
        if hasMass, handOffsSent < Self.handOffRounds, !neighbours.isEmpty {
            handOffsSent += 1
            push(fraction: 1, at: now, into: &actions)
            if settings.lossRecovery == .acknowledged { return }
            continueHandOff(at: now, into: &actions)
            return
        }
        if !hasMass || handOffsSent >= Self.handOffRounds {
            actions.append(.report(.handOffComplete))
            handOffDone = true
        }
    }

    /// The power of two by which a share's floats are multiplied to give the mass they move:
    /// the largest one not above the transfer's weight (1 for a weightless transfer).
    ///
    /// Floats then carry `v·f / 2^⌊log₂(w·f)⌋`, which has the magnitude of the estimate, not of
    /// the mass: a node whose mass has shrunk far below `Float`'s range still sends its share
    /// with full 24-bit precision. Multiplying by a power of two is exact in `Double`, so sender
    /// and receiver agree to the last bit on the mass moved.
    public static func scale(forWeight weight: Double) -> Double {
        guard weight > 0, weight.isFinite else { return 1 }
        return Double(sign: .plus, exponent: weight.exponent, significand: 1)
    }

    /// The mass a transfer moves, element by element.
    public func shareMass(_ transfer: Transfer) throws(AveragingError) -> [Double] {
        switch try decodeShare(transfer) {
        case .dense(let share):
            let scale = Self.scale(forWeight: transfer.weight)
            return share.map { Double($0) * scale }
        case .sparse(let share):
            var mass = [Double](repeating: 0, count: dimension)
            for (j, i) in share.indices.enumerated() { mass[i] = Double(share.values[j]) * Self.scale(forWeight: Double(share.weights[j])) }
            return mass
        }
    }

    /// A sparse transfer's share, taken out of `(v, w)` coordinate by coordinate: the
    /// coordinates the codec's selection picks by priority (how far each estimate moved since
    /// this node last sent it), plus a window of the round-robin sweep (an eighth of the
    /// selection, so every coordinate travels at least once every `8 · dimension / k`
    /// transfers: a joiner hears of all of them, and none waits for ever behind busier ones).
    /// A hand-off (`fraction` 1) carries every coordinate that holds weight.
    private mutating func takeSparseShare(fraction: Double, selection: SparseSelection) -> SparseShare {
        let n = dimension
        let chosen: [Int]
        if fraction == 1 {
            chosen = Array(0..<n)
        } else {
            let k = min(n, max(1, selection.count(n)))
            // How much mass a send would shift: w_c · |x_c − x_c^sent| (0 where w_c is 0).
            var priorities = [Float](unsafeUninitializedCapacity: n) { p, initialized in
                value.withUnsafeBufferPointer { v in
                    coordinateWeights.withUnsafeBufferPointer { w in
                        lastSent.withUnsafeBufferPointer { l in
                            for i in 0..<n {
                                let wi = w[i]
                                p[i] = wi > 0 ? Float(wi) * abs(Float(v[i] / wi) - l[i]) : 0
                            }
                        }
                    }
                }
                initialized = n
            }
            let sweep = max(1, k / 8)
            for j in 0..<sweep { priorities[(sweepCursor + j) % n] = .infinity }
            sweepCursor = (sweepCursor + sweep) % n
            chosen = selection.largest(priorities, k)
        }
        // The weight shares: the fraction of each coordinate's weight, rounded down to a weight code
        // (docs/wire.md), so a coordinate costs 5 bytes instead of 8; a hand-off moves each
        // coordinate's whole weight, as floats.
        let weightShares = chosen.map { Float(fraction == 1 ? coordinateWeights[$0] : coordinateWeights[$0] * fraction) }
        let base = fraction == 1 ? nil : weightShares.filter { $0.isNormal && $0 > 0 }.max().map(SparseShare.codeBase(forLargest:))
        var share = SparseShare(indices: [], values: [], weights: [])
        share.indices.reserveCapacity(chosen.count)
        share.values.reserveCapacity(chosen.count)
        share.weights.reserveCapacity(chosen.count)
        for (i, unrounded) in zip(chosen, weightShares) {
            // A coordinate whose weight share would not be a positive normal Float, or is
            // below the share's codes (16 octaves under its largest), moves nothing this time.
            let omega: Float? = if let base { SparseShare.codedWeight(unrounded, base: base) } else { unrounded }
            guard unrounded.isNormal, unrounded > 0, let omega else { continue }
            let w = coordinateWeights[i]
            let scale = Self.scale(forWeight: Double(omega))
            let estimate = value[i] / w
            // The value moves in proportion to the weight, at the sender's estimate.
            let s = Float(value[i] * (Double(omega) / w) / scale)
            value[i] -= Double(s) * scale
            coordinateWeights[i] -= Double(omega)
            lastSent[i] = Float(estimate)
            share.indices.append(i)
            share.values.append(s)
            share.weights.append(omega)
        }
        return share
    }

    /// Sets ``weight`` to the mean of the coordinates' own weights (sparse push-sum).
    private mutating func refreshMeanWeight() {
        weight = coordinateWeights.reduce(0, +) / Double(dimension)
    }

    /// `Float(v[i] · fraction / scale)` for every element.
    private func makeShare(fraction: Double, scale: Double) -> [Float] {
        let n = dimension
        let factor = fraction / scale
        return value.withUnsafeBufferPointer { v in
            [Float](unsafeUninitializedCapacity: n) { s, initialized in
                for i in 0..<n { s[i] = Float(v[i] * factor) }
                initialized = n
            }
        }
    }

    /// ``makeShare(fraction:scale:)``, taken out of `v` in the same pass.
    private mutating func takeShare(fraction: Double, scale: Double) -> [Float] {
        let n = dimension
        let factor = fraction / scale
        return value.withUnsafeMutableBufferPointer { v in
            [Float](unsafeUninitializedCapacity: n) { s, initialized in
                for i in 0..<n {
                    let share = Float(v[i] * factor)
                    s[i] = share
                    v[i] -= Double(share) * scale
                }
                initialized = n
            }
        }
    }

    private mutating func subtract(_ share: [Float], scale: Double) {
        let n = dimension
        value.withUnsafeMutableBufferPointer { v in
            share.withUnsafeBufferPointer { s in
                for i in 0..<n { v[i] -= Double(s[i]) * scale }
            }
        }
    }

    private mutating func add(_ share: DecodedShare, weight shareWeight: Double) {
        switch share {
        case .dense(let share):
            let n = dimension
            let scale = Self.scale(forWeight: shareWeight)
            value.withUnsafeMutableBufferPointer { v in
                share.withUnsafeBufferPointer { s in
                    for i in 0..<n { v[i] += Double(s[i]) * scale }
                }
            }
            weight += shareWeight
        case .sparse(let share):
            for (j, i) in share.indices.enumerated() {
                let omega = Double(share.weights[j])
                value[i] += Double(share.values[j]) * Self.scale(forWeight: omega)
                coordinateWeights[i] += omega
            }
            refreshMeanWeight()
        }
    }

    // MARK: Receiving

    private mutating func receive(_ transfer: Transfer, from sender: PeerAddress, at now: Instant) -> [Action] {
        let acknowledged = settings.lossRecovery == .acknowledged
        let key = SenderKey(peer: sender.peer, epoch: transfer.epoch)
        // Back over the sender's session, so the acknowledgement is attributable too.
        let ack: Action = .send(.ack(epoch: transfer.epoch, sequence: transfer.sequence), to: sender.endpoint, via: .session(sender.peer))
        // One lookup per transfer: the record's position serves the check and the update.
        let slot = acknowledged ? senders.index(of: key) : nil
        if let slot, senders[at: slot].contains(transfer.sequence) {
            counters.duplicates += 1
            senders[at: slot].lastSeen = now
            return [ack]
        }
        if leaving {
            counters.refused += 1
            return []
        }
        let share: DecodedShare
        do {
            share = try validate(transfer)
        } catch {
            counters.rejected += 1
            return [.report(.transferRejected(from: Sender(endpoint: sender.endpoint, peer: sender.peer), reason: error))]
        }
        if let slot {
            senders[at: slot].mark(transfer.sequence, at: now)
        } else if acknowledged {
            guard insertRecord(for: key, marking: transfer.sequence, at: now) else {
                counters.refused += 1
                return []
            }
        }
        add(share, weight: transfer.weight)
        counters.applied += 1
        var actions: [Action] = []
        actions.reserveCapacity(3)
        if acknowledged { actions.append(ack) }
        actions.append(.report(.transferApplied(from: sender.peer, sequence: transfer.sequence)))
        actions.append(.report(.estimateChanged(weight: weight)))
        return actions
    }

    private func validate(_ transfer: Transfer) throws(AveragingError) -> DecodedShare {
        guard transfer.count == dimension else { throw .wrongDimension(expected: dimension, got: transfer.count) }
        guard transfer.weight.isFinite, transfer.weight >= 0 else { throw .negativeWeight }
        let share = try decodeShare(transfer)
        switch share {
        case .dense(let floats):
            guard sumStaysFinite(floats, scale: Self.scale(forWeight: transfer.weight)) else { throw .nonFinite }
        case .sparse(let sparse):
            for (j, i) in sparse.indices.enumerated() {
                let sum = value[i] + Double(sparse.values[j]) * Self.scale(forWeight: Double(sparse.weights[j]))
                guard sum.isFinite, (coordinateWeights[i] + Double(sparse.weights[j])).isFinite else { throw .nonFinite }
            }
        }
        return share
    }

    /// Whether adding the share keeps every element of `v` finite: false for a NaN or infinite
    /// share element and for one so large that the sum overflows. A branch-free pass over the
    /// exponent bits (an all-ones exponent plus one carries into the sign bit) that the compiler
    /// vectorises; reading `v` here also brings it into cache for the add that follows.
    private func sumStaysFinite(_ share: [Float], scale: Double) -> Bool {
        value.withUnsafeBufferPointer { v in
            share.withUnsafeBufferPointer { s in
                var flags: UInt64 = 0
                for i in 0..<min(v.count, s.count) {
                    let sum = v[i] + Double(s[i]) * scale
                    flags |= ((sum.bitPattern & 0x7FF0_0000_0000_0000) &+ 0x0010_0000_0000_0000) & 0x8000_0000_0000_0000
                }
                return flags == 0
            }
        }
    }

    /// Adds a record for a new sender with `sequence` applied; false if the sender table is
    /// full of senders heard from within `senderRetention`.
    private mutating func insertRecord(for key: SenderKey, marking sequence: UInt64, at now: Instant) -> Bool {
        if senders.count >= settings.maxTrackedSenders {
            // Ties broken by key: the first of the oldest in key order.
            guard let oldest = senders.elements.min(by: { ($0.lastSeen, $0.key) < ($1.lastSeen, $1.key) }),
                  now - oldest.lastSeen >= settings.senderRetention
            else { return false }
            senders[oldest.key] = nil
        }
        var record = SenderRecord(key: key, lastSeen: now)
        record.mark(sequence, at: now)
        senders[key] = record
        return true
    }
}
