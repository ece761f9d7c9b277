import Foundation
import Crypto
import Gossip
import CPrefetch

/// How simulated nodes are addressed: node `i` is `sim-i:7946`.
public enum SimAddress {
    /// Every simulated node listens on the same port; hosts tell them apart.
    public static let port: UInt16 = 7946

    /// What a simulated node's host name starts with; its index follows.
    static let hostPrefix = "sim-"
    private static let hostPrefixBytes = Array(hostPrefix.utf8)

    /// The endpoint of node `index`.
    public static func endpoint(_ index: Int) -> Endpoint { Endpoint(host: "\(hostPrefix)\(index)", port: port) }

    /// The index `i` of an endpoint spelled exactly like ``endpoint(_:)`` (`sim-i` on ``port``,
    /// no leading zeros), read from its digits: a simulator resolves every message's
    /// destination this way instead of hashing the host name or comparing it with a stored
    /// one. Nil for any other endpoint.
    public static func index(of endpoint: Endpoint) -> Int? {
        guard endpoint.port == port else { return nil }
        var host = endpoint.host
        return host.withUTF8 { bytes -> Int? in
            let prefix = hostPrefixBytes
            let digits = bytes.count - prefix.count
            guard digits > 0, digits <= 18 else { return nil }
            for i in prefix.indices where bytes[i] != prefix[i] { return nil }
            // Exactly one spelling per index: "sim-0", never "sim-00" or "sim-07".
            if digits > 1, bytes[prefix.count] == UInt8(ascii: "0") { return nil }
            var index = 0
            for byte in bytes[prefix.count...] {
                guard byte >= UInt8(ascii: "0"), byte <= UInt8(ascii: "9") else { return nil }
                index = index * 10 + Int(byte - UInt8(ascii: "0"))
            }
            return index
        }
    }

    /// A synthetic identity for node `index` of a simulation that signs nothing: "sim" and the
    /// index in the 32 bytes of a peer ID. Not a valid Ed25519 key; simulations that sign use
    /// real identities instead.
    public static func peer(_ index: Int) -> PeerID {
        var bytes = [UInt8](repeating: 0, count: PeerID.length)
        bytes[0] = 0x73; bytes[1] = 0x69; bytes[2] = 0x6d
        withUnsafeBytes(of: UInt64(index).bigEndian) { bytes.replaceSubrange(24..<32, with: $0) }
        return PeerID(bytes: bytes) ?? PeerID(bytes: [UInt8](repeating: 0, count: PeerID.length))!
    }
}

/// What a node factory learns about the node it creates.
public struct NodeContext: Sendable, Hashable {
    /// Index of the node, from 0.
    public var index: Int
    /// The node's own endpoint.
    public var endpoint: Endpoint
    /// How many times this node has been created (0 at first start, then once per restart
    /// after a crash that dropped its state).
    public var incarnation: Int
    /// A seed for the node's own randomness, distinct per node and incarnation.
    public var seed: UInt64
}

/// Wire mode: every message is encoded (and, e.g., signed and sealed) by the sender and
/// decoded (opened, verified) by the receiver, so the bytes that travel are real.
public struct WireMode<Message> {
    /// Bytes for `message` sent by a node (its identity and address) to an endpoint, over a
    /// transport.
    public var encode: (_ message: Message, _ from: PeerAddress, _ to: Endpoint, _ via: Transport) throws -> [UInt8]
    /// The message in `bytes` as the receiving node (`to`) opens it: `from` names the sender's
    /// address and, for a session, its authenticated identity (the handshake's result).
    /// Throwing drops the message as ``DropReason/rejected``.
    public var decode: (_ bytes: [UInt8], _ from: Sender, _ to: PeerAddress) throws -> Message

    public init(
        encode: @escaping (Message, PeerAddress, Endpoint, Transport) throws -> [UInt8],
        decode: @escaping ([UInt8], Sender, PeerAddress) throws -> Message
    ) {
        self.encode = encode
        self.decode = decode
    }
}

/// A deterministic discrete-event simulator that runs real sans-IO protocol nodes in
/// virtual time over modelled links. One seed gives one run, checked by ``traceHash``.
public final class Simulator<Node: ProtocolNode> {
    public typealias Action = NodeAction<Node.Message, Node.Timer, Node.Event>
    /// Makes a node when it first starts, or restarts without its old state.
    /// A factory that throws leaves the node down; the error is kept in ``refusedNodes``.
    public typealias Factory = (NodeContext) throws -> Node
    /// Work injected into a node by a test or scenario (e.g. `onPeerGone`, `beginLeave`).
    public typealias Injection = (inout Node, Instant) -> [Action]

    private enum Payload {
        case message(Node.Message)
        case bytes([UInt8])
    }

    /// A message on its way. `session`: the sender's and the intended receiver's identities of
    /// a session message.
    private struct Delivery {
        var from: Int32
        var to: Int32
        var payload: Payload
        var size: Int
        var trace: UInt64
        var session: (from: PeerID, to: PeerID)?
    }

    /// A queued event. Messages wait in their own slab (``deliveries``), so the many timers
    /// pending stay a few words each instead of the size of the largest message.
    private enum Pending {
        case deliver(slot: Int32)
        case timer(node: Int32, timer: Node.Timer, token: UInt64)
        case start(Int32)
        case crash(Int32, keepState: Bool)
        case partition(Int, active: Bool)
        case inject(Int32, Injection)
        /// Work done for `node` in its life `life` (a crash ends a life and discards it).
        case computed(node: Int32, life: UInt32, id: UInt64, work: PendingWork)
    }

    /// The current virtual time.
    public private(set) var now: Instant = .zero
    public let nodeCount: Int
    /// Link models; may be changed between runs.
    public var links: LinkPolicy
    /// Which pairs can talk; may be changed between runs.
    public var topology: Topology
    /// Encode/decode every message when set.
    public var wire: WireMode<Node.Message>?
    /// Called for every event a node reports: (node index, event, time).
    public var onEvent: ((Int, Node.Event, Instant) -> Void)?
    /// Work units per second each node computes (``ComputeRequest/cost`` per second of
    /// virtual time): a node's work takes `cost / rate` to come back, so weak and strong
    /// devices differ. The default, 10⁹, is a modest single core doing multiply-adds.
    public var computeRate: (Int) -> Double = { _ in 1e9 }
    /// Threads that run the nodes' work beside the simulator's own (by default one per core
    /// but one). A job is a pure function of what its node handed over, collected when its
    /// virtual completion time comes, so the number of threads changes no result, only the
    /// wall time. Set before the first job.
    public var computeThreads = max(0, ProcessInfo.processInfo.activeProcessorCount - 1)
    public private(set) var counters = NetworkCounters()
    /// Nodes whose factory threw when they were to start, with the error: they stayed down.
    public private(set) var refusedNodes: [(index: Int, error: any Error)] = []
    /// Running hash of every message delivered or dropped.
    public private(set) var traceHash = TraceHash()

    private let factory: Factory
    private let seed: UInt64
    private var rng: SplitMix64
    private var queue = EventQueue<Pending>()
    /// Messages in flight, and the free slots among them.
    private var deliveries: [Delivery?] = []
    private var freeDeliveries: [Int32] = []
    private var nodes: [Node?]
    /// Each node's identity while it has state: read per message without copying the node
    /// (a node read through its optional is copied whole, retaining every buffer it holds).
    private var peerIDs: [PeerID?]
    private var up: [Bool]
    private var incarnations: [Int]
    /// Crashes per node: work requested before the last crash is discarded.
    private var lives: [UInt32]
    /// One interpreter of the node's actions per node: its timer table.
    private var interpreters: [ActionInterpreter<Node.Message, Node.Timer, Node.Event>]
    private let endpoints: [Endpoint]
    private var linkStates: [UInt64: LinkChannel] = [:]
    private var partitions: [(sides: [Int], active: Bool)] = []
    /// Runs the nodes' work; its threads start with the first job.
    private lazy var pool = WorkPool(threads: computeThreads)


    /// A network of `nodeCount` nodes (none started yet) made by `factory`.
    public init(
        nodeCount: Int, seed: UInt64, links: LinkPolicy = LinkPolicy(), topology: Topology = .complete,
        factory: @escaping Factory
    ) {
        self.nodeCount = nodeCount
        self.seed = seed
        self.rng = SplitMix64(seed: seed)
        self.links = links
        self.topology = topology
        self.factory = factory
        self.nodes = Array(repeating: nil, count: nodeCount)
        self.peerIDs = Array(repeating: nil, count: nodeCount)
        self.up = Array(repeating: false, count: nodeCount)
        self.incarnations = Array(repeating: -1, count: nodeCount)
        self.lives = Array(repeating: 0, count: nodeCount)
        self.interpreters = Array(repeating: ActionInterpreter(), count: nodeCount)
        self.endpoints = (0..<nodeCount).map(SimAddress.endpoint)
    }

    deinit { pool.stop() }

    // MARK: Scenario

    /// Starts (joins) node `index` at `time`: creates it if it has no state, then calls `onStart`.
    public func start(_ index: Int, at time: Instant) {
        queue.push(.start(Int32(index)), at: time.nanoseconds)
    }

    /// Starts every node at `time`.
    public func startAll(at time: Instant = .zero) {
        for i in 0..<nodeCount { start(i, at: time) }
    }

    /// Crashes node `index` at `time`: its timers are forgotten and messages to it dropped.
    /// With `keepState` its state survives for a later ``start(_:at:)`` (a restart).
    public func crash(_ index: Int, at time: Instant, keepState: Bool) {
        queue.push(.crash(Int32(index), keepState: keepState), at: time.nanoseconds)
    }

    /// Separates the nodes into sides (`sides[i]` is node i's side; nodes beyond the array are
    /// on side 0) from `start` until `heal`: messages sent across sides meanwhile are dropped.
    public func partition(sides: [Int], from start: Instant, until heal: Instant) {
        partitions.append((sides, false))
        queue.push(.partition(partitions.count - 1, active: true), at: start.nanoseconds)
        queue.push(.partition(partitions.count - 1, active: false), at: heal.nanoseconds)
    }

    /// Runs `body` on node `index` at `time` (if it is up then) and carries out its actions.
    public func inject(_ index: Int, at time: Instant, _ body: @escaping Injection) {
        queue.push(.inject(Int32(index), body), at: time.nanoseconds)
    }

    // MARK: Inspection

    /// The state of node `index`, nil if it never started or crashed without keeping state.
    public func node(_ index: Int) -> Node? { nodes[index] }

    /// Whether node `index` is running.
    public func isUp(_ index: Int) -> Bool { up[index] }

    /// The endpoint of node `index`.
    public func endpoint(_ index: Int) -> Endpoint { endpoints[index] }

    /// The index of the node at `endpoint`.
    public func index(of endpoint: Endpoint) -> Int? {
        guard let index = SimAddress.index(of: endpoint), index < nodeCount else { return nil }
        return index
    }

    /// Events still queued.
    public var pendingEvents: Int { queue.count }

    // MARK: Running

    /// Processes every event due up to and including `end`; then the clock reads `end`.
    public func run(until end: Instant) {
        while let next = queue.nextTime(), next <= end.nanoseconds {
            guard let (time, pending) = queue.pop() else { break }
            if let later = queue.upcomingNode(after: 2 * Self.prefetchDistance) { prefetch(Int(later)) }
            if let soon = queue.upcomingNode(after: Self.prefetchDistance) { prefetchState(Int(soon)) }
            now = Instant(nanoseconds: time)
            handle(pending)
        }
        if now < end { now = end }
    }

    /// Runs until `end`, calling `observe` every `step` of virtual time (and at the end);
    /// stops early when `observe` returns false.
    public func run(until end: Instant, every step: Duration, _ observe: (Simulator) -> Bool) {
        while now < end {
            let next = now + step
            run(until: next < end ? next : end)
            if !observe(self) { return }
        }
    }

    /// How many events ahead a node's own arrays are prefetched (``prefetchState(_:)``); its
    /// node value and simulator entries come twice as far ahead (``prefetch(_:)``), so they are
    /// in the cache when the node reads where its arrays are. Far enough for the cache misses
    /// to overlap with the handling of the events before.
    static var prefetchDistance: Int { 8 }
    /// Bytes of a node value prefetched, at most: all of a push-sum node (376 bytes), the first
    /// lines of a full `GossipNode` (1,352).
    static var prefetchBytes: Int { 512 }

    /// Starts loading node `index`'s state into the cache: its node value and its entries in
    /// the simulator's own arrays. With many nodes each event's node is cold; this lets the
    /// misses of the next events overlap (about 14 % off 100,000 push-sum nodes). A hint only:
    /// nothing is read, so no result depends on it.
    private func prefetch(_ index: Int) {
        nodes.withUnsafeBufferPointer { all in
            guard let base = all.baseAddress else { return }
            let start = UnsafeRawPointer(base + index)
            for offset in stride(from: 0, to: min(MemoryLayout<Node?>.stride, Self.prefetchBytes), by: 64) {
                murmur_prefetch(start + offset)
            }
        }
        interpreters.withUnsafeBufferPointer { if let base = $0.baseAddress { murmur_prefetch(base + index) } }
        peerIDs.withUnsafeBufferPointer { if let base = $0.baseAddress { murmur_prefetch(base + index) } }
    }

    /// The second stage: node `index`'s value is in the cache by now, so the node can name its
    /// arrays and tables (and the timer table its interpreter keeps) to load next. About 12 %
    /// off 100,000 push-sum nodes. A hint only, like the first stage.
    private func prefetchState(_ index: Int) {
        // A node has state exactly when its identity is known; its optional's payload then
        // starts where the optional does, and the node reads itself there, in place.
        guard peerIDs[index] != nil else { return }
        nodes.withUnsafeBufferPointer { if let base = $0.baseAddress { Node.prefetchState(at: UnsafeRawPointer(base + index)) } }
        interpreters.withUnsafeBufferPointer { all in
            if let base = all.baseAddress { ActionInterpreter<Node.Message, Node.Timer, Node.Event>.prefetchTable(at: UnsafeRawPointer(base + index)) }
        }
    }

    private func handle(_ pending: Pending) {
        switch pending {
        case .deliver(let slot):
            var delivery: Delivery? = nil
            swap(&delivery, &deliveries[Int(slot)])
            freeDeliveries.append(slot)
            if let d = delivery {
                deliver(from: Int(d.from), to: Int(d.to), payload: d.payload, size: d.size, trace: d.trace, session: d.session)
            }
        case .timer(let i, let timer, let token):
            let index = Int(i)
            guard up[index], interpreters[index].fire(timer, token: token) else { return }
            counters.timersFired += 1
            if let actions = nodes[index]?.onTimer(timer, at: now) { perform(actions, by: index) }
        case .start(let i):
            let index = Int(i)
            guard !up[index] else { return }
            if nodes[index] == nil {
                incarnations[index] += 1
                var mixer = SplitMix64(seed: seed ^ (UInt64(index) &* 0x9E37_79B9_7F4A_7C15))
                let context = NodeContext(
                    index: index, endpoint: endpoints[index], incarnation: incarnations[index],
                    seed: mixer.next() &+ UInt64(incarnations[index]) &* 0xD6E8_FEB8_6659_FD93)
                let node: Node
                do { node = try factory(context) } catch {
                    refusedNodes.append((index, error))
                    return
                }
                peerIDs[index] = node.peerID
                nodes[index] = node
            }
            up[index] = true
            if let actions = nodes[index]?.onStart(at: now) { perform(actions, by: index) }
        case .crash(let i, let keepState):
            let index = Int(i)
            up[index] = false
            lives[index] &+= 1
            interpreters[index].reset()
            if !keepState {
                nodes[index] = nil
                peerIDs[index] = nil
            }
        case .partition(let p, let active):
            partitions[p].active = active
        case .computed(let i, let life, let id, let work):
            let index = Int(i)
            guard up[index], lives[index] == life else { return }
            let result = pool.collect(work)
            guard let actions = nodes[index]?.onComputed(id, result: result, at: now) else { return }
            perform(actions, by: index)
        case .inject(let i, let body):
            let index = Int(i)
            guard up[index], var node = nodes[index] else { return }
            nodes[index] = nil
            let actions = body(&node, now)
            nodes[index] = node
            perform(actions, by: index)
        }
    }

    private func perform(_ actions: [Action], by index: Int) {
        interpreters[index].perform(
            actions,
            send: { message, to, via in send(message, from: index, to: to, via: via) },
            wake: { timer, token, at in
                queue.push(.timer(node: Int32(index), timer: timer, token: token), at: max(at.nanoseconds, now.nanoseconds), node: Int32(index))
            },
            report: { event in onEvent?(index, event, now) },
            compute: { request in compute(request, by: index) })
    }

    /// Starts `request` on the work pool (its result is a pure function of what the node
    /// handed over) and hands the result back after the virtual time the node's rate charges
    /// for it.
    private func compute(_ request: ComputeRequest, by index: Int) {
        let work = pool.submit(request.job)
        let rate = computeRate(index)
        let seconds = rate > 0 && request.cost > 0 ? request.cost / rate : 0
        let delay = seconds.isFinite ? Int64(min(seconds * 1e9, 1e18).rounded(.up)) : 0
        queue.push(.computed(node: Int32(index), life: lives[index], id: request.id, work: work), at: now.nanoseconds &+ delay)
    }

    // MARK: Links

    private func send(_ message: Node.Message, from: Int, to endpoint: Endpoint, via transport: Transport) {
        let trace = message.traceWord
        guard let sender = peerIDs[from] else { return }
        var session: (from: PeerID, to: PeerID)?
        if case .session(let peer) = transport { session = (sender, peer) }
        guard let to = index(of: endpoint) else {
            counters.sent += 1
            counters.bytesSent += message.wireSize
            drop(.unknownDestination, from: from, to: -1, size: message.wireSize, trace: trace)
            return
        }
        var payload = Payload.message(message)
        var size = message.wireSize
        if let wire {
            do {
                let bytes = try wire.encode(message, PeerAddress(peer: sender, endpoint: endpoints[from]), endpoint, transport)
                payload = .bytes(bytes)
                size = bytes.count
            } catch {
                counters.sent += 1
                drop(.rejected, from: from, to: to, size: size, trace: trace)
                return
            }
        }
        counters.sent += 1
        counters.bytesSent += size
        guard topology.allows(from: from, to: to) else { return drop(.noLink, from: from, to: to, size: size, trace: trace) }
        for p in partitions where p.active && Self.side(p.sides, from) != Self.side(p.sides, to) {
            return drop(.partition, from: from, to: to, size: size, trace: trace)
        }
        let model = links.model(from: from, to: to)
        let arrivals: LinkChannel.Arrivals?
        if model.isStateful {
            let key = LinkPolicy.key(from, to)
            var channel = linkStates[key] ?? LinkChannel(model: model)
            arrivals = channel.transmit(size: size, at: now.nanoseconds, rng: &rng)
            linkStates[key] = channel
        } else {
            // Stateless links need no stored channel: one made here behaves the same.
            var channel = LinkChannel(model: model)
            arrivals = channel.transmit(size: size, at: now.nanoseconds, rng: &rng)
        }
        guard let arrivals else { return drop(.loss, from: from, to: to, size: size, trace: trace) }
        let delivery = Delivery(from: Int32(from), to: Int32(to), payload: payload, size: size, trace: trace, session: session)
        queue.push(.deliver(slot: hold(delivery)), at: now.nanoseconds + arrivals.first, node: Int32(to))
        if let second = arrivals.duplicate {
            counters.duplicated += 1
            queue.push(.deliver(slot: hold(delivery)), at: now.nanoseconds + second, node: Int32(to))
        }
    }

    /// Keeps `delivery` in a free slot of the slab until its event comes.
    private func hold(_ delivery: Delivery) -> Int32 {
        if let slot = freeDeliveries.popLast() {
            deliveries[Int(slot)] = delivery
            return slot
        }
        deliveries.append(delivery)
        return Int32(deliveries.count - 1)
    }

    /// Side of `node` in a partition; nodes beyond the array are on side 0.
    private static func side(_ sides: [Int], _ node: Int) -> Int { node < sides.count ? sides[node] : 0 }

    private func deliver(from: Int, to: Int, payload: Payload, size: Int, trace: UInt64, session: (from: PeerID, to: PeerID)?) {
        guard up[to], let receiver = peerIDs[to] else { return drop(.nodeDown, from: from, to: to, size: size, trace: trace) }
        // A session reaches only the peer it was opened to (the handshake names the responder).
        if let session, session.to != receiver { return drop(.wrongPeer, from: from, to: to, size: size, trace: trace) }
        let sender = Sender(endpoint: endpoints[from], peer: session?.from)
        let message: Node.Message
        switch payload {
        case .message(let m):
            message = m
        case .bytes(let bytes):
            guard let wire, let m = try? wire.decode(bytes, sender, PeerAddress(peer: receiver, endpoint: endpoints[to])) else {
                return drop(.rejected, from: from, to: to, size: size, trace: trace)
            }
            message = m
        }
        counters.delivered += 1
        counters.bytesDelivered += size
        traceHash.mixEvent(time: now.nanoseconds, from: from, to: to, kind: 0, size: size, message: trace)
        if let actions = nodes[to]?.onMessage(message, from: sender, at: now) { perform(actions, by: to) }
    }

    private func drop(_ reason: DropReason, from: Int, to: Int, size: Int, trace: UInt64) {
        counters.drops[reason.rawValue] += 1
        traceHash.mixEvent(time: now.nanoseconds, from: from, to: to, kind: UInt8(1 + reason.rawValue), size: size, message: trace)
    }

}
