import Crypto
import Gossip
import Testing
@testable import Simulation

/// The calendar queue pops in exactly `(time, insertion order)`, whatever mix of near, far and
/// past times, ties and interleaved pops it is given: the order a seed's trace depends on.
@Test func eventQueue_popsInTimeThenInsertionOrder_acrossBucketsTheFarHeapAndThePast() {
    var queue = EventQueue<Int>()
    var rng = SplitMix64(seed: 42)
    var expected: [(time: Int64, id: Int)] = []
    var popped: [(time: Int64, id: Int)] = []
    var clock: Int64 = 0
    var id = 0
    for step in 0..<20_000 {
        // Times: the current millisecond, the calendar (up to ~1 s), far beyond it, ties, the past.
        let pick = rng.next(upperBound: UInt64(10))
        let delay: Int64
        switch pick {
        case 0: delay = 0
        case 1: delay = Int64(rng.next(upperBound: UInt64(1_000_000)))
        case 2, 3, 4, 5: delay = Int64(rng.next(upperBound: UInt64(300_000_000)))
        case 6: delay = 1_000_000_000 + Int64(rng.next(upperBound: UInt64(50_000_000_000)))
        case 7: delay = -Int64(rng.next(upperBound: UInt64(5_000_000)))
        default: delay = Int64(rng.next(upperBound: UInt64(8))) * 1_000_000
        }
        let time = max(0, clock + delay)
        queue.push(id, at: time)
        expected.append((time, id))
        id += 1
        if step % 3 == 2, let (t, value) = queue.pop() {
            popped.append((t, value))
            clock = max(clock, t)
        }
    }
    while let (t, value) = queue.pop() { popped.append((t, value)) }
    #expect(queue.isEmpty && queue.count == 0 && queue.nextTime() == nil)
    #expect(popped.count == expected.count)
    // Each pop is the least (time, id) among the events pushed and not yet popped at that moment;
    // replaying the pushes and pops against a sorted list checks it.
    var pending: [(time: Int64, id: Int)] = []
    var next = 0
    var checked = 0
    for step in 0..<20_000 {
        let event = expected[step]
        var low = 0, high = pending.count
        while low < high {
            let mid = (low + high) / 2
            if (pending[mid].time, pending[mid].id) < (event.time, event.id) { low = mid + 1 } else { high = mid }
        }
        pending.insert(event, at: low)
        if step % 3 == 2, let least = pending.first {
            #expect(least.id == popped[next].id && least.time == popped[next].time)
            pending.removeFirst()
            next += 1
            checked += 1
        }
    }
    #expect(pending.map(\.id) == popped[next...].map(\.id))
    #expect(checked > 6_000)
}

/// The hint `distance` places ahead names the node of the event that pops `distance` places
/// after the next one (within the bucket being drained); events without a node give no hint.
@Test func eventQueue_upcomingNode_namesTheNodeOfTheEventThatPopsLater() {
    var queue = EventQueue<Int>()
    var rng = SplitMix64(seed: 7)
    var nodes: [Int: Int32] = [:]
    for id in 0..<2_000 {
        let node: Int32 = id % 5 == 0 ? -1 : Int32(rng.next(upperBound: UInt64(1_000)))
        nodes[id] = node
        queue.push(id, at: Int64(rng.next(upperBound: UInt64(20_000_000))), node: node)
    }
    var order: [Int] = []
    var hints: [(at: Int, distance: Int, node: Int32?)] = []
    while !queue.isEmpty {
        for distance in [0, 3, 8] { hints.append((order.count, distance, queue.upcomingNode(after: distance))) }
        guard let (_, id) = queue.pop() else { break }
        order.append(id)
    }
    #expect(order.count == 2_000)
    var checked = 0
    for hint in hints {
        guard let node = hint.node else { continue }
        let later = hint.at + hint.distance
        #expect(later < order.count && nodes[order[later]] == node)
        checked += 1
    }
    #expect(checked > 1_000)
}
