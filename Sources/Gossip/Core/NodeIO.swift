import Crypto

/// The vocabulary shared by every sans-IO protocol component and the drivers that run them.
///
/// A node never reads a clock, opens a socket or draws from a global random source.
/// A driver (the libuv runtime, or the simulator in virtual time) calls the node's
/// `on…` handlers with the current ``Instant`` and carries out the ``NodeAction``s
/// they return.

/// A point on a node's monotonic clock: virtual time in the simulator, `uv_now` in the runtime.
public struct Instant: Comparable, Hashable, Sendable, CustomStringConvertible {
    /// Nanoseconds since the driver's epoch.
    public var nanoseconds: Int64

    public init(nanoseconds: Int64) { self.nanoseconds = nanoseconds }

    public static let zero = Instant(nanoseconds: 0)

    public static func < (a: Instant, b: Instant) -> Bool { a.nanoseconds < b.nanoseconds }

    public static func + (a: Instant, d: Duration) -> Instant {
        Instant(nanoseconds: a.nanoseconds &+ d.nanosecondsClamped)
    }

    public static func - (a: Instant, b: Instant) -> Duration {
        .nanoseconds(a.nanoseconds &- b.nanoseconds)
    }

    public var description: String {
        let ms = Double(nanoseconds) / 1e6
        return "\(ms)ms"
    }
}

extension Duration {
    /// This duration in whole nanoseconds (rounded toward zero), clamped to the range of
    /// `Int64`. From the 128-bit attosecond count in one step: `components` would divide it
    /// by 10¹⁸ first, several times slower, and drivers convert durations on every event.
    public var nanosecondsClamped: Int64 { Int64(clamping: attoseconds / 1_000_000_000) }

    /// This duration in seconds as a `Double`.
    public var seconds: Double {
        let (s, atto) = components
        return Double(s) + Double(atto) * 1e-18
    }
}

/// Where a peer can be reached: a host (IPv4/IPv6 literal, or a simulator name) and a port.
public struct Endpoint: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var host: String
    public var port: UInt16

    public init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    public static func < (a: Endpoint, b: Endpoint) -> Bool {
        (a.host, a.port) < (b.host, b.port)
    }

    public var description: String {
        host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)"
    }
}

/// A peer and where to reach it: per-peer state is keyed by the identity, the endpoint is
/// only where to send next (it changes when the peer moves).
public struct PeerAddress: Hashable, Sendable, Comparable, CustomStringConvertible {
    public var peer: PeerID
    public var endpoint: Endpoint

    public init(peer: PeerID, endpoint: Endpoint) {
        self.peer = peer
        self.endpoint = endpoint
    }

    public static func < (a: PeerAddress, b: PeerAddress) -> Bool { (a.peer, a.endpoint) < (b.peer, b.endpoint) }

    public var description: String { "\(peer.fingerprint)@\(endpoint)" }
}

/// Who a message came from: the address it arrived from and, when the transport
/// authenticated it (a message over a peer's session), that peer's identity.
public struct Sender: Hashable, Sendable, CustomStringConvertible {
    public var endpoint: Endpoint
    /// The authenticated peer; nil for a datagram, which the network-key seal proves only
    /// to come from some member.
    public var peer: PeerID?

    public init(endpoint: Endpoint, peer: PeerID? = nil) {
        self.endpoint = endpoint
        self.peer = peer
    }

    public var description: String { peer.map { "\($0.fingerprint)@\(endpoint)" } ?? "\(endpoint)" }
}

/// How a message should travel: small control messages as datagrams (UDP), anything that
/// changes per-peer state (model transfers and their acknowledgements) over the
/// authenticated session with one peer (TCP behind the secret handshake). The simulator
/// models both as links.
public enum Transport: Sendable, Hashable {
    /// A datagram sealed for this peer (its ID is bound into the seal, so it opens nowhere
    /// else), or, when nil, addressed to any member: only for messages that introduce a peer
    /// whose identity is not known yet (a join to a bootstrap address, a LAN beacon).
    case datagram(to: PeerID?)
    /// Over the session with this peer: the driver delivers only if the peer at the endpoint
    /// proves to be it, and the receiver learns the sender's identity.
    case session(PeerID)
}

/// Work that takes time, which a node asks its driver to run (a training step): `job` is a
/// pure function of values the node handed over, so the driver may run it anywhere; the node
/// hears its result through ``ProtocolNode/onComputed(_:result:at:)``.
///
/// `cost` is in work units the node defines (a training step: multiply-adds), from which a
/// simulator charges virtual time at each node's own rate, so slow and fast devices differ; a
/// real driver runs the job on a thread pool and the result arrives when it is done.
public struct ComputeRequest: Sendable {
    /// Chosen by the node to match the result to its request.
    public var id: UInt64
    public var cost: Double
    public var job: @Sendable () -> any Sendable

    public init(id: UInt64, cost: Double, job: @escaping @Sendable () -> any Sendable) {
        self.id = id
        self.cost = cost
        self.job = job
    }
}

/// What a protocol component asks its driver to do.
public enum NodeAction<Message: Sendable, Timer: Hashable & Sendable, Event: Sendable>: Sendable {
    /// Send a message to an endpoint.
    case send(Message, to: Endpoint, via: Transport)
    /// Call the node's `onTimer` with this timer at (or after) the given instant.
    /// Scheduling a timer that is already pending replaces it.
    case schedule(Timer, at: Instant)
    /// Forget a pending timer.
    case cancel(Timer)
    /// Something an observer (log, metrics, test, the learner glue) should know.
    case report(Event)
    /// Run work that takes time; its result comes back through `onComputed`. A node that
    /// crashes meanwhile never hears of it.
    case compute(ComputeRequest)
}

/// A message whose encoded size is known, so drivers can count bytes and model bandwidth.
public protocol WireSized {
    /// Bytes this message occupies on the wire (before link-layer overhead).
    var wireSize: Int { get }
}

/// A message that names itself in a run's trace, so two runs compare equal only if they sent
/// the same messages, not merely messages of the same sizes at the same times.
public protocol TraceIdentified {
    /// A word that tells this message apart from others: its kind and what identifies it
    /// (sequence numbers, epochs, weights). Never a hash of a whole payload, which would cost
    /// the simulator its speed.
    var traceWord: UInt64 { get }
}

/// Mixes words into one trace word (SplitMix64's finaliser after each), for ``TraceIdentified``.
public func traceMix(_ words: UInt64...) -> UInt64 {
    var h: UInt64 = 0x9E37_79B9_7F4A_7C15
    for w in words {
        var z = h ^ w
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        h = z ^ (z >> 31)
    }
    return h
}

/// A sans-IO protocol node that a driver can run.
///
/// Each node has an identity: drivers tell receivers who sent a session message, and deliver
/// a message sent over a session only to the peer it names.
///
/// Each handler takes the current instant and returns the actions to carry out, in order.
/// Implementations are value types: copying a node copies its whole state.
public protocol ProtocolNode {
    associatedtype Message: Sendable & WireSized & TraceIdentified
    associatedtype Timer: Hashable & Sendable
    associatedtype Event: Sendable

    typealias Action = NodeAction<Message, Timer, Event>

    /// This node's identity.
    var peerID: PeerID { get }

    /// The node starts (or restarts after a crash).
    mutating func onStart(at now: Instant) -> [Action]
    /// A message arrived from `sender`.
    mutating func onMessage(_ message: Message, from sender: Sender, at now: Instant) -> [Action]
    /// A timer scheduled earlier fired.
    mutating func onTimer(_ timer: Timer, at now: Instant) -> [Action]
    /// Work asked for with ``NodeAction/compute(_:)`` is done.
    mutating func onComputed(_ id: UInt64, result: any Sendable, at now: Instant) -> [Action]

    /// Starts loading into the cache the memory the next event of the node stored at `node`
    /// will touch beyond the node value (its arrays and tables), for a driver that runs many
    /// nodes and calls this a few events ahead, once the node value itself is cached. It reads
    /// the node in place (a copy would retain every array it holds, touching the very memory
    /// to be loaded) and changes nothing: a hint only.
    static func prefetchState(at node: UnsafeRawPointer)
}

extension ProtocolNode {
    /// A node that never asks for work hears of none.
    public mutating func onComputed(_ id: UInt64, result: any Sendable, at now: Instant) -> [Action] { [] }

    /// No hint.
    public static func prefetchState(at node: UnsafeRawPointer) {}
}

extension NodeAction {
    /// This action as the node that composes its asker passes it on: message, timer and event
    /// wrapped in the composite's own types.
    public func wrapped<M, T, E>(message: (Message) -> M, timer: (Timer) -> T, event: (Event) -> E) -> NodeAction<M, T, E> {
        switch self {
        case let .send(m, to, via): return .send(message(m), to: to, via: via)
        case let .schedule(t, at): return .schedule(timer(t), at: at)
        case let .cancel(t): return .cancel(timer(t))
        case let .report(e): return .report(event(e))
        case let .compute(request): return .compute(request)
        }
    }
}
