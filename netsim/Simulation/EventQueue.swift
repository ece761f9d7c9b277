/// A priority queue of events in virtual time: a binary min-heap keyed by
/// `(time, insertion sequence)`, so events due at the same instant come out in the order
/// they were scheduled and one seed always gives one order.
///
/// The heap holds small trivially-copyable keys; payloads wait in a slab with a free list,
/// so sifting never retains or releases anything.
struct EventQueue<Payload> {
    private struct Key {
        var time: Int64
        var sequence: UInt64
        var slot: Int32

        @inline(__always)
        static func before(_ a: Key, _ b: Key) -> Bool {
            a.time < b.time || (a.time == b.time && a.sequence < b.sequence)
        }
    }

    private var heap: [Key] = []
    private var slab: [Payload?] = []
    private var free: [Int32] = []
    private var nextSequence: UInt64 = 0

    var count: Int { heap.count }
    var isEmpty: Bool { heap.isEmpty }
    /// Time of the earliest event, if any.
    var nextTime: Int64? { heap.first?.time }

    mutating func push(_ payload: Payload, at time: Int64) {
        let slot: Int32
        if let reused = free.popLast() {
            slot = reused
            slab[Int(slot)] = payload
        } else {
            slot = Int32(slab.count)
            slab.append(payload)
        }
        heap.append(Key(time: time, sequence: nextSequence, slot: slot))
        nextSequence &+= 1
        siftUp(heap.count - 1)
    }

    /// Removes and returns the earliest event.
    mutating func pop() -> (time: Int64, payload: Payload)? {
        guard let top = heap.first else { return nil }
        let last = heap.removeLast()
        if !heap.isEmpty {
            heap[0] = last
            siftDown(0)
        }
        var payload: Payload? = nil
        swap(&payload, &slab[Int(top.slot)])
        free.append(top.slot)
        guard let payload else { return nil }
        return (top.time, payload)
    }

    private mutating func siftUp(_ start: Int) {
        heap.withUnsafeMutableBufferPointer { h in
            var i = start
            let item = h[i]
            while i > 0 {
                let parent = (i - 1) / 2
                guard Key.before(item, h[parent]) else { break }
                h[i] = h[parent]
                i = parent
            }
            h[i] = item
        }
    }

    private mutating func siftDown(_ start: Int) {
        heap.withUnsafeMutableBufferPointer { h in
            let n = h.count
            var i = start
            let item = h[i]
            while true {
                var child = 2 * i + 1
                if child >= n { break }
                if child + 1 < n, Key.before(h[child + 1], h[child]) { child += 1 }
                guard Key.before(h[child], item) else { break }
                h[i] = h[child]
                i = child
            }
            h[i] = item
        }
    }
}
