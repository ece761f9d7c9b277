/// A priority queue of events in virtual time, ordered by `(time, insertion sequence)`, so
/// events due at the same instant come out in the order they were scheduled and one seed
/// always gives one order.
///
/// A calendar of buckets, each `bucketWidth` of virtual time, covers the near future (about a
/// second): scheduling there is an append, and a bucket is sorted once, when the clock reaches
/// it. Events scheduled into the bucket being drained wait in a small binary heap beside it
/// (with a million nodes a bucket holds thousands of events, too many to insert into in
/// order). Events beyond the calendar wait in a binary heap and move into their bucket as the
/// calendar advances. A simulation schedules almost everything a few milliseconds ahead
/// (deliveries, ticks, retransmissions), so with hundreds of thousands of events pending it
/// no longer sifts a heap larger than the caches on every event.
///
/// Keys are small and trivially copyable; payloads wait in a slab with a free list, so moving
/// keys never retains or releases anything.
struct EventQueue<Payload> {
    private struct Key {
        var time: Int64
        var sequence: UInt64
        var slot: Int32
        /// The node the event concerns (-1: none), for ``upcomingNode(after:)``.
        var node: Int32

        @inline(__always)
        static func before(_ a: Key, _ b: Key) -> Bool {
            a.time < b.time || (a.time == b.time && a.sequence < b.sequence)
        }
    }

    /// Virtual time one bucket covers (1 ms), and the buckets of the calendar (about 1 s).
    static var bucketWidth: Int64 { 1_000_000 }
    static var bucketCount: Int { 1024 }

    /// Events of the bucket being drained, sorted latest first (the next one is last).
    private var current: [Key] = []
    /// Events scheduled into the bucket being drained after it was sorted: a binary heap.
    private var late: [Key] = []
    /// The calendar: bucket `k` holds the unsorted events of `[start + k·width, …)` for the
    /// buckets after the current one, as a ring.
    private var buckets: [[Key]] = Array(repeating: [], count: EventQueue.bucketCount)
    /// Start of the current bucket's interval, and where in the ring it is.
    private var windowStart: Int64 = 0
    private var currentBucket = 0
    /// Events in the calendar's buckets (not counting `current`).
    private var calendarCount = 0
    /// Events at or beyond the calendar's horizon.
    private var far: [Key] = []

    private var slab: [Payload?] = []
    private var free: [Int32] = []
    private var nextSequence: UInt64 = 0

    private(set) var count = 0
    var isEmpty: Bool { count == 0 }

    private var windowEnd: Int64 { windowStart &+ Self.bucketWidth }
    private var horizon: Int64 { windowStart &+ Self.bucketWidth &* Int64(Self.bucketCount) }

    mutating func push(_ payload: Payload, at time: Int64, node: Int32 = -1) {
        let slot: Int32
        if let reused = free.popLast() {
            slot = reused
            slab[Int(slot)] = payload
        } else {
            slot = Int32(slab.count)
            slab.append(payload)
        }
        let key = Key(time: time, sequence: nextSequence, slot: slot, node: node)
        nextSequence &+= 1
        count += 1
        place(key)
    }

    private mutating func place(_ key: Key) {
        if key.time < windowEnd {
            // The clock's own bucket, or the past.
            Self.pushHeap(&late, key)
        } else if key.time < horizon {
            let offset = Int((key.time - windowStart) / Self.bucketWidth)
            buckets[(currentBucket + offset) % Self.bucketCount].append(key)
            calendarCount += 1
        } else {
            Self.pushHeap(&far, key)
        }
    }

    /// Whether the next event is the late heap's rather than the sorted bucket's.
    private var nextIsLate: Bool {
        guard let soon = late.first else { return false }
        guard let sorted = current.last else { return true }
        return Key.before(soon, sorted)
    }

    /// Time of the earliest event, if any.
    mutating func nextTime() -> Int64? {
        guard fillCurrent() else { return nil }
        return nextIsLate ? late.first?.time : current.last?.time
    }

    /// The node of the event `distance` places after the next one in the bucket being drained
    /// (events scheduled into it late are not counted), if known: a hint of what comes soon.
    func upcomingNode(after distance: Int) -> Int32? {
        let position = current.count - 1 - distance
        guard position >= 0 else { return nil }
        let node = current[position].node
        return node >= 0 ? node : nil
    }

    /// Removes and returns the earliest event.
    mutating func pop() -> (time: Int64, payload: Payload)? {
        guard fillCurrent() else { return nil }
        let next = nextIsLate ? Self.popHeap(&late) : current.popLast()
        guard let top = next else { return nil }
        count -= 1
        var payload: Payload? = nil
        swap(&payload, &slab[Int(top.slot)])
        free.append(top.slot)
        guard let payload else { return nil }
        return (top.time, payload)
    }

    /// Advances the calendar until the current bucket holds an event; false when none is left.
    private mutating func fillCurrent() -> Bool {
        while current.isEmpty && late.isEmpty {
            guard count > 0 else { return false }
            if calendarCount == 0, let first = far.first, first.time >= horizon {
                // Nothing near: jump the calendar to the next far event's bucket.
                windowStart = first.time - first.time % Self.bucketWidth
            } else {
                windowStart &+= Self.bucketWidth
            }
            currentBucket = (currentBucket + 1) % Self.bucketCount
            swap(&current, &buckets[currentBucket])
            calendarCount -= current.count
            // Far events now inside the calendar move into their buckets.
            while let first = far.first, first.time < horizon, let key = Self.popHeap(&far) {
                if key.time < windowEnd {
                    current.append(key)
                } else {
                    buckets[(currentBucket + Int((key.time - windowStart) / Self.bucketWidth)) % Self.bucketCount].append(key)
                    calendarCount += 1
                }
            }
            current.sort { Key.before($1, $0) }
        }
        return true
    }

    // MARK: Binary heaps (the late events and the far ones)

    private static func pushHeap(_ heap: inout [Key], _ key: Key) {
        heap.append(key)
        heap.withUnsafeMutableBufferPointer { h in
            var i = h.count - 1
            while i > 0 {
                let parent = (i - 1) / 2
                guard Key.before(key, h[parent]) else { break }
                h[i] = h[parent]
                i = parent
            }
            h[i] = key
        }
    }

    private static func popHeap(_ heap: inout [Key]) -> Key? {
        guard let top = heap.first else { return nil }
        let last = heap.removeLast()
        guard !heap.isEmpty else { return top }
        heap.withUnsafeMutableBufferPointer { h in
            let n = h.count
            var i = 0
            while true {
                var child = 2 * i + 1
                if child >= n { break }
                if child + 1 < n, Key.before(h[child + 1], h[child]) { child += 1 }
                guard Key.before(h[child], last) else { break }
                h[i] = h[child]
                i = child
            }
            h[i] = last
        }
        return top
    }
}
