import Crypto
import Foundation

/// Randomized pairwise gossip (Boyd, Ghosh, Prabhakar and Shah, "Randomized gossip
/// algorithms", 2006): unweighted averaging of `[Double]` vectors, the baseline whose
/// convergence rate the theory predicts from the graph alone.
///
/// Every node wakes on its own Poisson clock (exponential gaps, mean
/// ``Settings/tickInterval``), picks a neighbour uniformly and offers it its value `xᵢ`. The
/// neighbour answers with `d = (xⱼ − xᵢ) / 2` computed from the offered value and sets
/// `xⱼ −= d`; the offerer, on the answer, sets `xᵢ += d`. Both end at the pair's mean when
/// nothing else happened in between, and the sum over the network is conserved (up to
/// `Double` rounding) even if the offerer's value changed meanwhile, since each side moves by
/// the same `d`. A lost offer changes nothing. A lost answer loses mass: the neighbour moved
/// and the offerer never does, so the network's mean shifts by `d / n`; so does an answer
/// that arrives after its offer was forgotten (more than ``maxOutstandingOffers`` later
/// offers), and a duplicated offer (answered twice, the second answer ignored). This is the
/// textbook protocol, for comparison with ``PushSumAverager``, which keeps mass under loss.
///
/// Values travel as `Double`s, so two nodes agree to the last bits they can represent.
/// Offers and answers go over the authenticated session with the peer, as push-sum's
/// transfers do: they change the receiver's value, so they must be attributable.
public struct PairwiseAverager: ProtocolNode {
    /// Every tunable of the averager.
    public struct Settings: Sendable {
        /// Mean time between two wake-ups of a node: a Poisson clock, exponential gaps drawn
        /// from the node's generator. 200 ms, push-sum's tick, so the two compare per round.
        public var tickInterval: Duration = .milliseconds(200)

        public init() {}
    }

    /// What pairwise averagers send each other.
    public enum Message: Sendable, Equatable, WireSized, TraceIdentified {
        /// The offerer's value, for exchange `exchange`.
        case offer(exchange: UInt64, value: [Double])
        /// `d`, half the answerer's value minus the offered one, for exchange `exchange`.
        case answer(exchange: UInt64, change: [Double])

        /// Fixed bytes of either message on the wire: kind u8, exchange u64, element count u32.
        public static let headerSize = 1 + 8 + 4

        public var wireSize: Int {
            switch self {
            case .offer(_, let vector), .answer(_, let vector): return Self.headerSize + 8 * vector.count
            }
        }

        /// Kind, exchange and element count.
        public var traceWord: UInt64 {
            switch self {
            case .offer(let exchange, let value): return traceMix(1, exchange, UInt64(value.count))
            case .answer(let exchange, let change): return traceMix(2, exchange, UInt64(change.count))
            }
        }
    }

    public enum Timer: Hashable, Sendable {
        /// The node's Poisson clock rings: it offers its value to a neighbour.
        case wake
    }

    public enum Event: Sendable, Equatable {
        /// This node woke and offered its value to `to`.
        case offered(to: PeerID, exchange: UInt64)
        /// This node answered an offer from `peer` and moved its value.
        case answered(offerFrom: PeerID, exchange: UInt64)
        /// The answer to this node's offer arrived and was applied.
        case exchangeCompleted(with: PeerID, exchange: UInt64)
        /// A message was refused and changed nothing.
        case rejected(from: Sender, reason: AveragingError)
    }

    /// Offers awaiting an answer that a node remembers; an answer to an older one is ignored.
    /// Eight cover eight mean wake-up gaps of answer delay.
    public static let maxOutstandingOffers = 8

    public let peerID: PeerID
    /// The node's current estimate of the network's mean.
    public private(set) var value: [Double]
    /// Exchanges this node took part in that moved its value: offers it answered, and
    /// answers to its own offers it applied.
    public private(set) var exchanges: Int = 0
    /// Peers this node offers its value to, one drawn uniformly per wake-up.
    public var neighbours: [PeerAddress]
    public let settings: Settings
    private var rng: SplitMix64
    private var nextExchange: UInt64 = 1
    /// Offers sent and not yet answered, oldest first.
    private var outstanding: [(exchange: UInt64, peer: PeerID)] = []

    /// A node whose local vector is `initial`, averaging with `neighbours`. `rng` drives the
    /// wake-up clock and the choice of neighbour.
    public init(peer: PeerID, initial: [Float], neighbours: [PeerAddress], settings: Settings = Settings(), rng: SplitMix64) {
        self.peerID = peer
        self.value = initial.map(Double.init)
        self.neighbours = neighbours
        self.settings = settings
        self.rng = rng
    }

    // MARK: Driver entry points

    public mutating func onStart(at now: Instant) -> [Action] {
        // The clock is memoryless: the first ring is one exponential gap away, as any other.
        [.schedule(.wake, at: nextWake(after: now))]
    }

    public mutating func onTimer(_ timer: Timer, at now: Instant) -> [Action] {
        var actions: [Action] = [.schedule(.wake, at: nextWake(after: now))]
        guard !neighbours.isEmpty else { return actions }
        let to = neighbours[Int(rng.next(upperBound: UInt64(neighbours.count)))]
        let exchange = nextExchange
        nextExchange += 1
        if outstanding.count == Self.maxOutstandingOffers { outstanding.removeFirst() }
        outstanding.append((exchange, to.peer))
        actions.append(.send(.offer(exchange: exchange, value: value), to: to.endpoint, via: .session(to.peer)))
        actions.append(.report(.offered(to: to.peer, exchange: exchange)))
        return actions
    }

    /// An offer or answer that did not come over an authenticated session, has the wrong
    /// length or holds a non-finite number is refused and changes nothing.
    public mutating func onMessage(_ message: Message, from sender: Sender, at now: Instant) -> [Action] {
        guard let peer = sender.peer else { return [.report(.rejected(from: sender, reason: .unauthenticated))] }
        switch message {
        case .offer(let exchange, let offered):
            guard offered.count == value.count else {
                return [.report(.rejected(from: sender, reason: .wrongDimension(expected: value.count, got: offered.count)))]
            }
            let change = zip(value, offered).map { ($0 - $1) / 2 }
            guard change.allSatisfy(\.isFinite) else { return [.report(.rejected(from: sender, reason: .nonFinite))] }
            for k in value.indices { value[k] -= change[k] }
            exchanges += 1
            return [
                .send(.answer(exchange: exchange, change: change), to: sender.endpoint, via: .session(peer)),
                .report(.answered(offerFrom: peer, exchange: exchange)),
            ]
        case .answer(let exchange, let change):
            guard let index = outstanding.firstIndex(where: { $0.exchange == exchange && $0.peer == peer }) else { return [] }
            guard change.count == value.count else {
                return [.report(.rejected(from: sender, reason: .wrongDimension(expected: value.count, got: change.count)))]
            }
            let moved = zip(value, change).map { $0 + $1 }
            guard moved.allSatisfy(\.isFinite) else { return [.report(.rejected(from: sender, reason: .nonFinite))] }
            outstanding.remove(at: index)
            value = moved
            exchanges += 1
            return [.report(.exchangeCompleted(with: peer, exchange: exchange))]
        }
    }

    /// One exponential gap of mean ``Settings/tickInterval`` after `now` (at least 1 ns).
    private mutating func nextWake(after now: Instant) -> Instant {
        let uniform = Double((rng.next() >> 11) + 1) * 0x1p-53
        let gap = -log(uniform) * Double(settings.tickInterval.nanosecondsClamped)
        return Instant(nanoseconds: now.nanoseconds &+ max(1, Int64(min(gap, 0x1p62))))
    }
}
