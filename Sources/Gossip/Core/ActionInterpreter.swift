/// The one interpreter of ``NodeAction``: what sending, scheduling, cancelling and reporting
/// mean, whatever drives the node (the simulator, a test harness, the libuv runtime).
///
/// A driver owns one interpreter per node. It hands the node's actions to
/// ``perform(_:send:wake:cancelled:report:compute:)`` with closures: how to send a message, how
/// to arm a wake-up at an instant, where reports go and how to run work that takes time. The interpreter keeps the timer table: scheduling a timer that is already
/// pending replaces it (the earlier wake-up becomes stale), cancelling forgets it, and when a
/// wake-up comes due the driver asks ``fire(_:token:)`` whether it is still the current one.
/// A driver therefore never needs to cancel anything in its own clock: stale wake-ups are
/// simply ignored.
public struct ActionInterpreter<Message: Sendable, Timer: Hashable & Sendable, Event: Sendable> {
    public typealias Action = NodeAction<Message, Timer, Event>

    /// Each pending timer and the token of its current schedule: a handful per node, searched
    /// in order (a simulation keeps one interpreter per node, so this is a short array rather
    /// than a hash table). Inlinable, like the methods below, so that a driver in another
    /// module (the simulator) runs them specialised to its node's timer type.
    @usableFromInline var pending: [(timer: Timer, token: UInt64)] = []
    @usableFromInline var nextToken: UInt64 = 0

    public init() {}

    /// Timers scheduled and neither fired nor cancelled.
    public var pendingTimers: Int { pending.count }

    /// Whether `timer` is pending.
    public func isPending(_ timer: Timer) -> Bool { position(of: timer) != nil }

    @inlinable
    func position(of timer: Timer) -> Int? { pending.firstIndex { $0.timer == timer } }

    /// Starts loading the timer table of the interpreter at `interpreter` into the cache, for
    /// a driver of many nodes; reads it in place (see ``ProtocolNode/prefetchState(at:)``).
    public static func prefetchTable(at interpreter: UnsafeRawPointer) {
        prefetchObject(referencedAt: interpreter, offset: pendingOffset, lines: 1)
    }

    /// Where ``pending`` sits: it is the first stored property (a test checks).
    static var pendingOffset: Int { 0 }

    /// Carries out `actions` in order: `send` each message, `wake` the driver at each
    /// scheduled instant with the token it must hand back to ``fire(_:token:)``, tell it
    /// through `cancelled` which timers were cancelled (so a driver with real timers can stop
    /// them; a stale wake-up is ignored anyway), pass each report to `report`, and each
    /// request for work to `compute`.
    @inlinable
    public mutating func perform(
        _ actions: [Action],
        send: (Message, Endpoint, Transport) -> Void,
        wake: (Timer, UInt64, Instant) -> Void,
        cancelled: (Timer) -> Void = { _ in },
        report: (Event) -> Void,
        compute: (ComputeRequest) -> Void
    ) {
        for action in actions {
            switch action {
            case let .send(message, to, via):
                send(message, to, via)
            case let .schedule(timer, at):
                wake(timer, schedule(timer), at)
            case let .cancel(timer):
                cancel(timer)
                cancelled(timer)
            case let .report(event):
                report(event)
            case let .compute(request):
                compute(request)
            }
        }
    }

    /// Records a schedule of `timer`, replacing any pending one; returns its token.
    @inlinable
    mutating func schedule(_ timer: Timer) -> UInt64 {
        let token = nextToken
        nextToken &+= 1
        if let i = position(of: timer) { pending[i].token = token } else { pending.append((timer, token)) }
        return token
    }

    /// Forgets a pending `timer`; its wake-up, if it comes, is stale.
    @inlinable
    mutating func cancel(_ timer: Timer) {
        if let i = position(of: timer) { pending.remove(at: i) }
    }

    /// A wake-up with `token` came due: true if it is `timer`'s current schedule (which is
    /// then no longer pending and the driver calls the node's `onTimer`), false if it was
    /// replaced or cancelled since.
    @inlinable
    public mutating func fire(_ timer: Timer, token: UInt64) -> Bool {
        guard let i = position(of: timer), pending[i].token == token else { return false }
        pending.remove(at: i)
        return true
    }

    /// Forgets every pending timer (the node crashed or stopped).
    @inlinable
    public mutating func reset() {
        pending.removeAll(keepingCapacity: true)
    }
}
