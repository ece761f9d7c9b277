import Foundation
import Gossip

/// A relay between real peers that puts a modelled link in the way: each link listens on an
/// address (UDP and TCP, the port a peer advertises) and forwards to the peer's real address.
///
/// UDP works like a NAT: every client gets its own upstream socket, so the peer's replies find
/// their way back; each datagram, in each direction, passes through a ``LinkChannel`` (loss,
/// bursts, latency, jitter, duplication, reordering, bandwidth), the simulator's own link code.
/// TCP is piped both ways with the link's latency (TCP hides loss by retransmitting), and may
/// stall (a direction stops moving for a while, as behind a weak radio link) or be reset (both
/// ends closed mid-stream) at random, per ``StreamFaults``. Counters tell what the links did.
public final class Relay {
    /// One relayed address.
    public struct Link: Sendable {
        public var listen: Endpoint
        public var target: Endpoint

        public init(listen: Endpoint, target: Endpoint) {
            self.listen = listen
            self.target = target
        }
    }

    /// Faults of relayed TCP connections, drawn per chunk the relay reads.
    public struct StreamFaults: Sendable {
        /// Probability that a chunk resets its connection (both ends are closed).
        public var resetChance = 0.0
        /// Probability that a chunk stalls its direction: it and what follows wait
        /// `stallMilliseconds` before they move on, in order.
        public var stallChance = 0.0
        public var stallMilliseconds: UInt64 = 2_000

        public init(resetChance: Double = 0, stallChance: Double = 0, stallMilliseconds: UInt64 = 2_000) {
            self.resetChance = resetChance
            self.stallChance = stallChance
            self.stallMilliseconds = stallMilliseconds
        }
    }

    /// A partition of one host from everyone, for a window of time: while it lasts, every
    /// datagram from or to the host is dropped and every TCP connection from or to it is refused
    /// or reset (a peer that binds its sessions to its own address, as `peer join` does, is
    /// recognised by the source address of its connections too).
    public struct Isolation: Sendable {
        public var host: String
        /// From and until when, in milliseconds since the relay started.
        public var fromMilliseconds: UInt64
        public var untilMilliseconds: UInt64

        public init(host: String, fromMilliseconds: UInt64, untilMilliseconds: UInt64) {
            self.host = host
            self.fromMilliseconds = fromMilliseconds
            self.untilMilliseconds = untilMilliseconds
        }
    }

    /// What the links did to the datagrams and connections they carried.
    public struct Counters: Sendable {
        public var datagrams = 0
        public var dropped = 0
        /// Datagrams dropped and TCP connections refused or reset by an isolation.
        public var isolated = 0
        public var duplicated = 0
        public var tcpConnections = 0
        public var tcpBytes = 0
        public var tcpResets = 0
        public var tcpStalls = 0

        /// Share of the datagrams the links dropped.
        public var dropRate: Double { datagrams > 0 ? Double(dropped) / Double(datagrams) : 0 }
    }

    /// Clients a link tracks at once (each an upstream socket); the least recently heard is
    /// dropped first.
    public static let maxClientsPerLink = 256

    public let loop: EventLoop
    public private(set) var counters = Counters()
    private let model: LinkModel
    private let streamFaults: StreamFaults
    private let isolations: [Isolation]
    private let started: UInt64
    private var rng: SplitMix64
    private var channels: [String: LinkChannel] = [:]
    private var listeners: [UDPSocket] = []
    private var tcpListeners: [StreamListener] = []
    /// Per link, per client address: the upstream socket.
    private var upstream: [[Endpoint: UDPSocket]] = []
    private var order: [[Endpoint]] = []
    /// Open TCP connections (both ends of every pipe), closed by ``stop()``.
    private var streams: [ObjectIdentifier: StreamConnection] = [:]

    /// A relay for `links`, all with the same link `model` and TCP `streamFaults`, cutting off
    /// the hosts of `isolations` while they last, drawing from `seed`, on its own loop or on `loop`.
    public init(links: [Link], model: LinkModel, streamFaults: StreamFaults = .init(), isolations: [Isolation] = [],
                seed: UInt64, loop: EventLoop? = nil) throws {
        self.loop = try loop ?? EventLoop()
        self.model = model
        self.streamFaults = streamFaults
        self.isolations = isolations
        started = self.loop.nowMilliseconds
        rng = SplitMix64(seed: seed)
        for (index, link) in links.enumerated() {
            let (socket, tcp) = try StreamListener.bindPair(loop: self.loop, host: link.listen.host, port: link.listen.port) { [weak self] client in
                self?.pipe(client, to: link.target)
            }
            upstream.append([:])
            order.append([])
            socket.onReceive = { [weak self] bytes, from in self?.forward(bytes, from: from, link: index, target: link.target) }
            listeners.append(socket)
            tcpListeners.append(tcp)
        }
    }

    /// The UDP/TCP port each link listens on (useful with port 0).
    public var ports: [UInt16] { listeners.map(\.port) }

    /// Runs until ``stop()``.
    public func run() { loop.run() }

    /// Closes every socket and connection; ``run()`` returns.
    public func stop() {
        for l in listeners { l.close() }
        for l in tcpListeners { l.close() }
        for clients in upstream { for s in clients.values { s.close() } }
        for connection in streams.values { connection.close() }
        loop.stop()
    }

    /// Whether traffic between `a` and `b` is cut now.
    private func isolated(_ a: String, _ b: String) -> Bool {
        let now = loop.nowMilliseconds - started
        return isolations.contains { i in (i.host == a || i.host == b) && now >= i.fromMilliseconds && now < i.untilMilliseconds }
    }

    /// Passes `bytes` through the link for `key` (one direction of one client's path), then
    /// calls `deliver` after the drawn delay(s).
    private func transmit(_ bytes: [UInt8], key: String, deliver: @escaping ([UInt8]) -> Void) {
        counters.datagrams += 1
        var channel = channels[key] ?? LinkChannel(model: model)
        let arrivals = channel.transmit(size: bytes.count, at: Int64(loop.nowMilliseconds) * 1_000_000, rng: &rng)
        channels[key] = channel
        guard let arrivals else {
            counters.dropped += 1
            return
        }
        for delay in [arrivals.first] + (arrivals.duplicate.map { [$0] } ?? []) {
            try? loop.after(milliseconds: UInt64(max(0, delay) / 1_000_000)) { deliver(bytes) }
        }
        if arrivals.duplicate != nil { counters.duplicated += 1 }
    }

    private func forward(_ bytes: [UInt8], from client: Endpoint, link: Int, target: Endpoint) {
        let socket: UDPSocket
        if let existing = upstream[link][client] {
            socket = existing
            order[link].removeAll { $0 == client }
        } else {
            if upstream[link].count >= Self.maxClientsPerLink, let oldest = order[link].first {
                upstream[link].removeValue(forKey: oldest)?.close()
                order[link].removeFirst()
            }
            guard let made = try? UDPSocket(loop: loop, host: target.host, port: 0) else { return }
            let listener = listeners[link]
            // The peer's replies go back to the client from the address it wrote to.
            made.onReceive = { [weak self] reply, _ in
                guard let self else { return }
                if isolated(client.host, target.host) {
                    counters.isolated += 1
                    return
                }
                transmit(reply, key: "\(link)<\(client)") { listener.send($0, to: client) }
            }
            upstream[link][client] = made
            socket = made
        }
        order[link].append(client)
        if isolated(client.host, target.host) {
            counters.isolated += 1
            return
        }
        transmit(bytes, key: "\(link)>\(client)") { socket.send($0, to: target) }
    }

    /// One direction of a piped connection: when its last chunk is due, and until when it stalls.
    private final class Direction {
        var lastDelivery: UInt64 = 0
        var stalledUntil: UInt64 = 0
    }

    private func pipe(_ client: StreamConnection, to target: Endpoint) {
        counters.tcpConnections += 1
        if isolated(client.remoteEndpoint?.host ?? "", target.host) {
            counters.isolated += 1
            client.close()
            return
        }
        let latency = UInt64(max(0, model.latency.nanosecondsClamped) / 1_000_000)
        var server: StreamConnection?
        var pending: [[UInt8]] = []
        let up = Direction(), down = Direction()
        // Moves a chunk one way after the latency and any stall, never ahead of an earlier one;
        // or resets the connection.
        let forward: (StreamConnection?, Direction, [UInt8]) -> Void = { [weak self] to, direction, bytes in
            guard let self else { return }
            let now = loop.nowMilliseconds
            if isolated(client.remoteEndpoint?.host ?? "", target.host) {
                counters.isolated += 1
                client.close()
                server?.close()
                return
            }
            if LinkChannel.chance(streamFaults.resetChance, &rng) {
                counters.tcpResets += 1
                client.close()
                server?.close()
                return
            }
            if LinkChannel.chance(streamFaults.stallChance, &rng) {
                counters.tcpStalls += 1
                direction.stalledUntil = now + streamFaults.stallMilliseconds
            }
            counters.tcpBytes += bytes.count
            let due = max(now + latency, direction.lastDelivery, direction.stalledUntil)
            direction.lastDelivery = due
            try? loop.after(milliseconds: due - now) { to?.write(bytes) }
        }
        track(client)
        client.onRead = { bytes in
            if let server { forward(server, up, bytes) } else { pending.append(bytes) }
        }
        client.onEnd = { _ in server?.close() }
        do {
            try client.startReading()
            try StreamConnection.connect(loop: loop, host: target.host, port: target.port) { [weak self] result in
                guard case .success(let connection) = result else { client.close(); return }
                server = connection
                self?.track(connection)
                connection.onRead = { bytes in forward(client, down, bytes) }
                connection.onEnd = { _ in client.close() }
                try? connection.startReading()
                for bytes in pending { forward(connection, up, bytes) }
                pending = []
            }
        } catch {
            client.close()
        }
    }

    /// Keeps `connection` until it closes, so ``stop()`` can close it.
    private func track(_ connection: StreamConnection) {
        let id = ObjectIdentifier(connection)
        streams[id] = connection
        connection.onClose = { [weak self] in self?.streams[id] = nil }
    }
}
