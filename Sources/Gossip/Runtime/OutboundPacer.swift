/// Caps the bytes a node sends per second (an edge device on a metered or shared uplink): a
/// token bucket in front of every socket write, with two queues. Datagrams (membership,
/// acknowledgements) go before session bytes (averaging transfers), so a large transfer never
/// delays the heartbeats that keep the node alive in others' views.
///
/// A write goes out at once while the bucket holds tokens, even if it is larger than what is
/// left (the bucket goes into debt, and what follows waits until it is paid back), so a
/// message of any size passes and the long-run rate stays at the cap. Datagrams that find
/// their queue full are dropped and counted; session bytes are bounded by the runtime's
/// per-session write limit before they get here.
final class OutboundPacer {
    /// Most datagrams waiting; beyond, new ones are dropped.
    static let maxQueuedDatagrams = 256

    let bytesPerSecond: Double
    /// Bytes the bucket holds when full: a tenth of a second's worth, at least 64 KiB.
    let capacity: Double
    private(set) var sentBytes = 0
    private(set) var droppedDatagrams = 0
    private var tokens: Double
    private var updated: UInt64
    private var datagrams = FIFO()
    private var stream = FIFO()
    private let loop: EventLoop
    private let timer: LoopTimer
    private var timerPending = false

    init(loop: EventLoop, bytesPerSecond: Double) {
        self.loop = loop
        self.bytesPerSecond = bytesPerSecond
        capacity = max(65_536, bytesPerSecond / 10)
        tokens = capacity
        updated = loop.nowMilliseconds
        timer = LoopTimer(loop: loop)
    }

    /// Sends a datagram of `size` bytes through `send` now or once the cap allows; false if it
    /// was dropped because too many wait.
    @discardableResult
    func sendDatagram(size: Int, _ send: @escaping () -> Void) -> Bool {
        guard datagrams.count < Self.maxQueuedDatagrams else {
            droppedDatagrams += 1
            return false
        }
        datagrams.append(size, send)
        drain()
        return true
    }

    /// Sends `size` session bytes through `send` now or once the cap allows, in order.
    func sendStream(size: Int, _ send: @escaping () -> Void) {
        stream.append(size, send)
        drain()
    }

    /// Drops everything waiting and stops the timer.
    func close() {
        datagrams = FIFO()
        stream = FIFO()
        timer.close()
    }

    private func drain() {
        let now = loop.nowMilliseconds
        tokens = min(capacity, tokens + Double(now &- updated) / 1_000 * bytesPerSecond)
        updated = now
        while tokens > 0, let (size, send) = datagrams.popFirst() ?? stream.popFirst() {
            tokens -= Double(size)
            sentBytes += size
            send()
        }
        guard datagrams.count + stream.count > 0, !timerPending else { return }
        // Wake when the debt is paid and one more byte may go.
        let wait = UInt64(((1 - tokens) / bytesPerSecond * 1_000).rounded(.up))
        timerPending = true
        timer.start(after: max(1, wait)) { [weak self] in
            guard let self else { return }
            timerPending = false
            drain()
        }
    }

    /// A first-in first-out queue of pending writes.
    private struct FIFO {
        private var items: [(Int, () -> Void)] = []
        private var head = 0

        var count: Int { items.count - head }

        mutating func append(_ size: Int, _ send: @escaping () -> Void) { items.append((size, send)) }

        mutating func popFirst() -> (Int, () -> Void)? {
            guard head < items.count else { return nil }
            let item = items[head]
            items[head] = (0, {})
            head += 1
            if head > 64, head * 2 > items.count {
                items.removeFirst(head)
                head = 0
            }
            return item
        }
    }
}
