import Crypto
import Testing
@testable import Gossip

/// Deterministic identities for tests: identity `i` comes from a seed built from `i`.
func testIdentity(_ i: Int) -> Identity {
    var seed = [UInt8](repeating: 0, count: 32)
    withUnsafeBytes(of: UInt64(i).littleEndian) { for (k, b) in $0.enumerated() { seed[k] = b } }
    seed[31] = 0xA5
    // A 32-byte seed always derives a key pair.
    return try! Identity(seed: seed)
}

func testEndpoint(_ i: Int, port: UInt16 = 7000) -> Endpoint { Endpoint(host: "10.0.\(i / 256).\(i % 256)", port: port) }

/// A tiny discrete-event driver for GossipNode unit tests (the full simulator lives in
/// `Simulation`): fixed latency, independent random loss, crash and restart.
struct NodeHarness {
    struct Item: Comparable {
        var time: Int64
        var order: UInt64
        var node: Int
        var payload: Payload
        static func < (a: Item, b: Item) -> Bool { (a.time, a.order) < (b.time, b.order) }
        static func == (a: Item, b: Item) -> Bool { a.time == b.time && a.order == b.order }
    }
    enum Payload {
        case message(GossipMessage, from: Sender)
        case timer(GossipTimer, token: UInt64)
    }

    var nodes: [GossipNode] = []
    var up: [Bool] = []
    var endpoints: [Endpoint: Int] = [:]
    var interpreters: [ActionInterpreter<GossipMessage, GossipTimer, GossipEvent>] = []
    var heap: [Item] = []
    var order: UInt64 = 0
    var now = Instant.zero
    var latency: Duration = .milliseconds(5)
    var loss = 0.0
    var rng = SplitMix64(seed: 42)
    var events: [(node: Int, at: Instant, event: GossipEvent)] = []
    var keepEvents: (GossipEvent) -> Bool = { _ in false }
    /// Messages dropped on the way to a node (by message and receiving node), beside `loss`.
    var drops: (GossipMessage, Int) -> Bool = { _, _ in false }
    var messagesSent = 0

    mutating func add(_ node: GossipNode, start: Bool = true) -> Int {
        let i = nodes.count
        nodes.append(node)
        up.append(false)
        interpreters.append(ActionInterpreter())
        for e in node.record.endpoints { endpoints[e] = i }
        if start { self.start(i) }
        return i
    }

    mutating func start(_ i: Int) {
        up[i] = true
        interpreters[i].reset()
        for e in nodes[i].record.endpoints { endpoints[e] = i }
        perform(nodes[i].onStart(at: now), node: i)
    }

    mutating func crash(_ i: Int) {
        up[i] = false
        interpreters[i].reset()
    }

    /// Replaces node `i` by `node` (a restart, possibly at new endpoints) and starts it.
    mutating func replace(_ i: Int, with node: GossipNode) {
        for (e, j) in endpoints where j == i { endpoints.removeValue(forKey: e) }
        nodes[i] = node
        start(i)
    }

    mutating func perform(_ actions: [GossipNode.Action], node i: Int) {
        // Moved out while it runs, so the closures may change the rest of the harness.
        var interpreter = interpreters[i]
        interpreter.perform(
            actions,
            send: { m, to, via in
                messagesSent += 1
                guard let j = endpoints[to] else { return }
                if loss > 0, Double(rng.next() >> 11) / Double(1 << 53) < loss { return }
                if drops(m, j) { return }
                var sender = Sender(endpoint: nodes[i].record.primary)
                if case .session(let peer) = via {
                    // A session reaches only the peer it names, and tells it who is speaking.
                    guard nodes[j].peerID == peer else { return }
                    sender.peer = nodes[i].peerID
                }
                push(Item(time: now.nanoseconds + latency.nanosecondsClamped, order: 0, node: j, payload: .message(m, from: sender)))
            },
            wake: { t, token, at in push(Item(time: max(at.nanoseconds, now.nanoseconds), order: 0, node: i, payload: .timer(t, token: token))) },
            report: { e in if keepEvents(e) { events.append((i, now, e)) } },
            compute: { request in Issue.record("a gossip node asked for work \(request.id); none of its parts computes") })
        interpreters[i] = interpreter
    }

    mutating func push(_ item: Item) {
        var item = item
        order += 1
        item.order = order
        heap.append(item)
        var c = heap.count - 1
        while c > 0 {
            let p = (c - 1) / 2
            if heap[c] < heap[p] { heap.swapAt(c, p); c = p } else { break }
        }
    }

    mutating func pop() -> Item? {
        guard !heap.isEmpty else { return nil }
        heap.swapAt(0, heap.count - 1)
        let top = heap.removeLast()
        var p = 0
        while true {
            let l = 2 * p + 1, r = l + 1
            var m = p
            if l < heap.count, heap[l] < heap[m] { m = l }
            if r < heap.count, heap[r] < heap[m] { m = r }
            if m == p { break }
            heap.swapAt(p, m)
            p = m
        }
        return top
    }

    mutating func run(for d: Duration) {
        let end = now.nanoseconds + d.nanosecondsClamped
        while let top = heap.first, top.time <= end, let item = pop() {
            now = Instant(nanoseconds: item.time)
            let i = item.node
            guard up[i] else { continue }
            switch item.payload {
            case let .message(m, from):
                perform(nodes[i].onMessage(m, from: from, at: now), node: i)
            case let .timer(t, token):
                guard interpreters[i].fire(t, token: token) else { continue }
                perform(nodes[i].onTimer(t, at: now), node: i)
            }
        }
        now = Instant(nanoseconds: end)
    }
}
