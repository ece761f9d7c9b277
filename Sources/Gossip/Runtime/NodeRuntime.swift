import CLibUV
import Crypto
import Foundation

/// Runs an overlay node (a ``GossipNode``, or one composed with learning) on real sockets:
/// the thin libuv driver of the sans-IO core.
///
/// One loop per node. Datagrams go over one UDP socket, sealed and opened by the node's
/// ``SecureWire``; session messages (averaging) over one TCP session per peer behind the secret
/// handshake and the secure channel, reused while it lives. Timers are libuv timers driven by
/// the one ``ActionInterpreter``. Nothing about the protocol is decided here: the runtime moves
/// bytes, keeps time and counts what it had to drop.
public final class OverlayRuntime<Node: OverlayNode> {
    /// Where the node listens and what it tells others.
    public typealias Configuration = RuntimeConfiguration

    /// What the runtime had to refuse or drop, by reason (the wire's refusals are separate).
    public struct Counters: Sendable {
        public var sessionsOpened = 0
        /// Handshakes in progress closed to make room for a newer one (a stalled or flooding
        /// source loses its oldest attempts, an honest handshake gets a slot).
        public var handshakesEvicted = 0
        public var handshakeFailures = 0
        public var sessionMessagesDropped = 0
        public var connectFailures = 0
        /// Datagrams dropped unopened: their source address failed authentication too often
        /// (see ``AuthenticationThrottle``).
        public var datagramsThrottled = 0
        /// Retransmissions not queued because the transfer's last copy had not left yet.
        public var retransmissionsCoalesced = 0
        /// Session messages signed or checked on the thread pool.
        public var codedOffLoop = 0
        /// Work the node asked for that the thread pool refused.
        public var computeFailures = 0
        /// Bytes written to and read from the network, datagrams and sessions together
        /// (after sealing: what the links carry, less IP and transport headers).
        public var bytesSent = 0
        public var bytesReceived = 0
    }

    /// Most handshakes in progress at once, and from one source address. When either is
    /// reached, the oldest handshake in progress (from that address, or at all) is closed to
    /// make room: a stalled connection (slowloris) or a flood holds slots only until newer
    /// attempts arrive, while an honest handshake, done in a round trip, keeps its slot, even
    /// from an address it shares with the attacker. A session, once authenticated, is never
    /// counted here.
    public static var maxPendingHandshakes: Int { 64 }
    public static var maxPendingHandshakesPerAddress: Int { 16 }
    /// Messages waiting for a session to open. A peer that cannot be reached loses them (the
    /// averager retransmits what matters).
    public static var maxQueuedSessionMessages: Int { 64 }
    /// Bytes a session may have waiting to be written. A message that would go beyond is dropped
    /// (and counted): a peer, or a link, slower than what is sent to it gets retransmissions
    /// later instead of an ever-growing buffer. One message of any size is always let through
    /// an empty queue.
    public static var maxSessionWriteQueue: Int { 8 << 20 }
    /// Session messages from this size on are signed and checked on libuv's thread pool, so
    /// the loop keeps serving datagrams and other sessions meanwhile; smaller ones inline,
    /// where a round trip through the pool would cost more than the work.
    public static var offLoopCodingThreshold: Int { 64 << 10 }
    /// Incoming session messages checked on the thread pool at once (each holds its bytes and
    /// its decoded share).
    public static var maxOffLoopChecks: Int { 2 }
    /// A session idle this long is closed; the next message opens a new one.
    public static var sessionIdleMilliseconds: UInt64 { 120_000 }
    /// File names inside the data directory.
    public static var controlSocketName: String { RuntimeFiles.controlSocket }
    public static var peerCacheName: String { RuntimeFiles.peerCache }
    public static var averagingStateName: String { RuntimeFiles.averagingState }

    public let loop: EventLoop
    public private(set) var node: Node
    public let configuration: Configuration
    /// The address the node is reached at (the advertised one, or the bound one).
    public let endpoint: Endpoint
    public private(set) var counters = Counters()
    /// Every event the node reports, for the command's log.
    public var onEvent: ((Node.Event) -> Void)?
    /// More of the node's state for `peer status` (merged into ``status()``).
    public var statusExtras: (() -> [String: Any])?
    /// Control requests beyond `status` and `leave`: the request word, and its answer to the
    /// request's arguments (the fields of a request sent as a JSON object).
    public var controlRequests: [String: ([String: Any]) -> [String: Any]] = [:]
    /// Where the node keeps its releases, if it takes part in model distribution.
    public private(set) var releaseStore: ReleaseStore?

    private var interpreter = ActionInterpreter<GossipMessage, Node.Timer, Node.Event>()
    private let wire: SecureWire
    private let keyring: NetworkKeyring
    private let udp: UDPSocket
    /// Receives the LAN beacons' multicast group, when beacons are on.
    private var beaconSocket: UDPSocket?
    /// Why LAN beacons are off, if they are (for the log and `peer status`).
    public private(set) var beaconsOff: String?
    private var tcpListener: StreamListener?
    private var controlListener: StreamListener?
    private let handshakeGuard: ReplayGuard
    /// Per peer, the sequence numbers of transfers with a copy not yet out of the process.
    private var outgoing: [PeerID: Set<UInt64>] = [:]
    /// Large incoming messages being checked on the thread pool, and those waiting their turn
    /// (their sessions paused).
    private var checksInFlight = 0
    private var waitingChecks: [(bytes: [UInt8], remote: PeerID, sender: Sender, session: Session)] = []
    private var throttle = AuthenticationThrottle()
    /// Holds writes back to the configured bandwidth, if there is a cap.
    private let pacer: OutboundPacer?
    private var timers: [Node.Timer: LoopTimer] = [:]
    /// The session used to send to each peer.
    private var sessions: [PeerID: Session] = [:]
    /// Every open session, sending or not, by identity.
    private var open: [ObjectIdentifier: Session] = [:]
    /// Incoming handshakes in progress, oldest first.
    private var pending: [Session] = []
    private let housekeeping: LoopTimer
    private var lastCache: [UInt8] = []
    private var stopping = false

    /// Binds the sockets and creates the node, the overlay node `compose` turns into the node
    /// to run; call ``start()`` to run it.
    public init(identity: Identity, keyring: NetworkKeyring, configuration: Configuration,
                averager: PushSumAverager?, releases: ReleaseDistributor? = nil, seed: UInt64, compose: (GossipNode) throws -> Node) throws {
        let loop = try EventLoop()
        self.loop = loop
        self.configuration = configuration
        self.keyring = keyring
        let started = WallClock.milliseconds()
        handshakeGuard = .forHandshakes(startedAt: started)
        wire = try SecureWire(identity: identity, keyring: keyring, replayGuard: .forDatagrams(startedAt: started))
        // UDP and TCP on one port.
        let accepting = AcceptForwarder()
        (udp, tcpListener) = try StreamListener.bindPair(loop: loop, host: configuration.listen.host, port: configuration.listen.port) {
            accepting.target?($0)
        }
        let port = udp.port
        let bound = Endpoint(host: configuration.listen.host, port: port)
        endpoint = configuration.advertise ?? bound
        let cachePath = configuration.dataDirectory + "/" + Self.peerCacheName
        let cache = (try? Data(contentsOf: URL(fileURLWithPath: cachePath))).flatMap { try? PeerCache(decoding: Array($0)) } ?? PeerCache()
        node = try compose(GossipNode(identity: identity, endpoints: [endpoint], settings: configuration.settings, cache: cache,
                                      averager: averager, releases: releases, seed: seed))
        releaseStore = releases.map { _ in ReleaseStore(dataDirectory: configuration.dataDirectory) }
        housekeeping = LoopTimer(loop: loop)
        pacer = configuration.bandwidth.map { OutboundPacer(loop: loop, bytesPerSecond: $0) }
        accepting.target = { [weak self] connection in self?.accept(connection) }
        udp.onReceive = { [weak self] bytes, from in self?.receiveDatagram(bytes, from: from) }
        if let group = configuration.settings.discovery.beaconEndpoint {
            // Beacons leave through the interface the node is reached at, and only it (TTL 1).
            let interface = endpoint.host
            do {
                try udp.multicast(through: interface)
                let socket = try UDPSocket(loop: loop, host: "0.0.0.0", port: group.port, shared: true)
                beaconSocket = socket
                try socket.join(group: group.host, interface: interface)
                socket.onReceive = { [weak self] bytes, from in self?.receiveDatagram(bytes, from: from) }
            } catch {
                beaconSocket?.close()
                beaconSocket = nil
                beaconsOff = "LAN beacons are off: \(error)"
            }
        } else {
            beaconsOff = "LAN beacons are off (none configured)"
        }
    }

    /// The current instant on the node's monotonic clock.
    private var now: Instant { Instant(nanoseconds: Int64(loop.nowMilliseconds) * 1_000_000) }

    /// Starts the node and its control socket; returns at once (run the loop with ``run()``).
    public func start() throws {
        let controlPath = configuration.dataDirectory + "/" + Self.controlSocketName
        try? FileManager.default.removeItem(atPath: controlPath)
        controlListener = try StreamListener(loop: loop, unixPath: controlPath) { [weak self] connection in self?.control(connection) }
        perform(node.onStart(at: now))
        scheduleHousekeeping()
    }

    /// Runs the loop until ``stop()``.
    public func run() { loop.run() }

    // MARK: Actions

    private func perform(_ actions: [Node.Action]) {
        // A transfer or acknowledgement must not leave before the state it reflects is on
        // disk: after `kill -9`, a restart resumes exactly what peers have seen.
        // Release messages change no averaging state: they cost no write.
        if node.overlay.averager != nil, actions.contains(where: { if case .send(.averaging, _, .session) = $0 { return true } else { return false } }) {
            persistAveragingState()
        }
        var interpreter = interpreter
        interpreter.perform(
            actions,
            send: { message, to, via in send(message, to: to, via: via) },
            wake: { timer, token, at in wake(timer, token: token, at: at) },
            cancelled: { timer in timers.removeValue(forKey: timer)?.close() },
            report: { event in
                if case .release(let e)? = Node.overlayEvent(event) { keep(e) }
                onEvent?(event)
            },
            compute: { request in compute(request) })
        self.interpreter = interpreter
        persistCacheIfChanged()
    }

    /// Runs the node's work on libuv's thread pool; the node hears the result on the loop.
    private func compute(_ request: ComputeRequest) {
        do {
            try loop.work(request.job) { [weak self] result in
                guard let self, !stopped else { return }
                perform(node.onComputed(request.id, result: result, at: now))
            }
        } catch {
            counters.computeFailures += 1
        }
    }

    private func wake(_ timer: Node.Timer, token: UInt64, at: Instant) {
        let handle = timers[timer] ?? LoopTimer(loop: loop)
        timers[timer] = handle
        // Rounded up: the loop's clock counts whole milliseconds, and a timer that fired before
        // its instant would find nothing due and ask again for the same instant, at once.
        let delay = (max(0, at.nanoseconds - now.nanoseconds) + 999_999) / 1_000_000
        handle.start(after: UInt64(delay)) { [weak self] in
            guard let self else { return }
            timers.removeValue(forKey: timer)?.close()
            guard interpreter.fire(timer, token: token) else { return }
            perform(node.onTimer(timer, at: now))
        }
    }

    private func send(_ message: GossipMessage, to endpoint: Endpoint, via transport: Transport) {
        switch transport {
        case .datagram(let recipient):
            guard let bytes = try? wire.sealDatagram(message, to: recipient, now: WallClock.milliseconds()) else { return }
            counters.bytesSent += bytes.count
            if let pacer {
                pacer.sendDatagram(size: bytes.count) { [udp] in udp.send(bytes, to: endpoint) }
            } else {
                udp.send(bytes, to: endpoint)
            }
        case .session(let peer):
            // Refused before the costly encoding when the session is already backed up.
            if let backlog = sessions[peer]?.backlog, backlog >= Self.maxSessionWriteQueue {
                counters.sessionMessagesDropped += 1
                return
            }
            // A retransmission of a transfer whose last copy has not yet left this process
            // (waiting for the session, the bandwidth cap or the thread pool) would only queue
            // the same bytes twice on a reliable stream: it is coalesced into that copy.
            var done: () -> Void = {}
            if case .averaging(.transfer(let transfer)) = message {
                guard outgoing[peer]?.contains(transfer.sequence) != true else {
                    counters.retransmissionsCoalesced += 1
                    return
                }
                outgoing[peer, default: []].insert(transfer.sequence)
                done = { [weak self] in
                    self?.outgoing[peer]?.remove(transfer.sequence)
                    if self?.outgoing[peer]?.isEmpty == true { self?.outgoing[peer] = nil }
                }
            }
            guard message.wireSize >= Self.offLoopCodingThreshold else {
                guard let bytes = try? wire.encodeSession(message, to: peer) else { return done() }
                sendSession(Outgoing(bytes: bytes, done: done), to: peer, at: endpoint)
                return
            }
            // Signing a large delta takes milliseconds: it runs on the thread pool.
            let codec = wire.sessionCodec
            do {
                counters.codedOffLoop += 1
                try loop.work({ try? codec.encode(message, to: peer) }) { [weak self] bytes in
                    guard let self, !stopped, let bytes else { return done() }
                    sendSession(Outgoing(bytes: bytes, done: done), to: peer, at: endpoint)
                }
            } catch {
                counters.sessionMessagesDropped += 1
                done()
            }
        }
    }

    /// A session message on its way out, and what to do once it has left the process or was
    /// dropped (called exactly once).
    private struct Outgoing {
        var bytes: [UInt8]
        var done: () -> Void
    }

    /// Datagrams are heard until the node stops, through a leave too: a leaver's failure
    /// detector needs its probes' answers, and it must hear of peers that left meanwhile, to
    /// take back the shares it sent them and finish its hand-off.
    private func receiveDatagram(_ bytes: [UInt8], from: Endpoint) {
        guard !stopped else { return }
        counters.bytesReceived += bytes.count
        let clock = loop.nowMilliseconds
        guard throttle.admits(from, now: clock) else {
            counters.datagramsThrottled += 1
            return
        }
        guard let message = try? wire.openDatagram(bytes, now: WallClock.milliseconds()) else {
            throttle.failed(from, now: clock)
            return
        }
        throttle.authenticated(from, now: clock)
        perform(node.onMessage(message, from: Sender(endpoint: from), at: now))
    }

    /// Hands accepted connections to the runtime, which does not exist yet when the listener
    /// is bound.
    private final class AcceptForwarder {
        var target: ((StreamConnection) -> Void)?
    }

    // MARK: Sessions

    /// One TCP connection with the secure channel on top, and the framing of session messages
    /// larger than one channel frame (a leading byte: 1 = more pieces follow, 0 = last).
    private final class Session {
        var tcp: StreamConnection?
        let secure: SecureConnection
        let incoming: Bool
        /// Known from the start for an outgoing session, after the handshake for an incoming one.
        var remote: PeerID?
        let sourceAddress: String
        var countedPending: Bool
        var queue: [Outgoing] = []
        var reassembly: [UInt8] = []
        var lastActivity: UInt64
        /// Bytes held back by the bandwidth cap, not yet handed to the connection.
        var paced = 0
        var established: Bool { secure.isEstablished }
        /// Bytes written but not yet sent.
        var backlog: Int { (tcp?.queuedBytes ?? 0) + paced }

        init(tcp: StreamConnection?, secure: SecureConnection, incoming: Bool, remote: PeerID?, sourceAddress: String, now: UInt64) {
            self.tcp = tcp
            self.secure = secure
            self.incoming = incoming
            self.remote = remote
            self.sourceAddress = sourceAddress
            countedPending = incoming
            lastActivity = now
        }
    }

    /// Largest piece of a session message in one channel frame (one byte goes to the framing).
    static var pieceLength: Int { SecureChannelSettings().maxPlaintextLength - 1 }
    /// Largest session message: the largest signed delta and its head.
    static var maxSessionMessage: Int { DeltaLimits().maxPayloadLength + (1 << 20) }

    private func sendSession(_ message: Outgoing, to peer: PeerID, at given: Endpoint) {
        if let session = sessions[peer] ?? adoptSession(with: peer) {
            if session.established { write(message, on: session) } else { enqueue(message, on: session) }
            return
        }
        // A new session goes to where the peer listens. The endpoint a message names may be
        // where a session of the peer came from (an acknowledgement's): an ephemeral port,
        // or a relay's, that no one listens on.
        let endpoint = listeningEndpoint(of: peer) ?? given
        let initiator = HandshakeInitiator(identity: node.overlay.identity, networkKey: keyring.current, expectedResponder: peer)
        let session = Session(tcp: nil, secure: SecureConnection(initiator: initiator), incoming: false, remote: peer,
                              sourceAddress: endpoint.host, now: loop.nowMilliseconds)
        sessions[peer] = session
        open[ObjectIdentifier(session)] = session
        enqueue(message, on: session)
        do {
            // From the address the node listens on, when it listens on one: a multi-homed host's
            // sessions leave where its datagrams do (and where firewalls and relays expect them).
            let listenHost = configuration.listen.host
            let source = listenHost == "0.0.0.0" || listenHost == "::" || listenHost.contains(":") != endpoint.host.contains(":") ? nil : listenHost
            try StreamConnection.connect(loop: loop, host: endpoint.host, port: endpoint.port, from: source) { [weak self] result in
                guard let self else {
                    if case .success(let connection) = result { connection.close() }
                    return
                }
                switch result {
                case .success(let connection):
                    guard open[ObjectIdentifier(session)] != nil else { connection.close(); return }
                    attach(connection, to: session)
                    do { run(session, try session.secure.start()) } catch { close(session) }
                case .failure:
                    counters.connectFailures += 1
                    close(session)
                }
            }
        } catch {
            counters.connectFailures += 1
            close(session)
        }
    }

    private func accept(_ connection: StreamConnection) {
        let address = connection.remoteEndpoint?.host ?? "unknown"
        // A leaver still accepts sessions: the acknowledgements of its hand-off may come over
        // a session the receiver opens.
        guard !stopped else {
            connection.close()
            return
        }
        if pending.filter({ $0.sourceAddress == address }).count >= Self.maxPendingHandshakesPerAddress,
           let oldest = pending.first(where: { $0.sourceAddress == address }) {
            counters.handshakesEvicted += 1
            close(oldest)
        }
        if pending.count >= Self.maxPendingHandshakes, let oldest = pending.first {
            counters.handshakesEvicted += 1
            close(oldest)
        }
        let responder = HandshakeResponder(identity: node.overlay.identity, keyring: keyring)
        let session = Session(tcp: connection, secure: SecureConnection(responder: responder, replayGuard: handshakeGuard),
                              incoming: true, remote: nil, sourceAddress: address, now: loop.nowMilliseconds)
        open[ObjectIdentifier(session)] = session
        pending.append(session)
        attach(connection, to: session)
    }

    private func attach(_ connection: StreamConnection, to session: Session) {
        session.tcp = connection
        connection.onRead = { [weak self] bytes in self?.receive(bytes, on: session) }
        connection.onEnd = { [weak self] _ in self?.close(session) }
        connection.onClose = { [weak self] in self?.close(session) }
        do { try connection.startReading() } catch { close(session) }
        // A peer that stalls the handshake loses the connection.
        try? loop.after(milliseconds: SecureConnection.handshakeDeadlineMilliseconds, keepsLoopAlive: false) { [weak self, weak session] in
            guard let self, let session, !session.established else { return }
            counters.handshakeFailures += 1
            close(session)
        }
    }

    private func receive(_ bytes: [UInt8], on session: Session) {
        session.lastActivity = loop.nowMilliseconds
        counters.bytesReceived += bytes.count
        do {
            run(session, try session.secure.receive(bytes))
        } catch {
            if !session.established { counters.handshakeFailures += 1 }
            close(session)
        }
    }

    private func run(_ session: Session, _ events: [SecureConnection.Event]) {
        for event in events {
            guard open[ObjectIdentifier(session)] != nil else { return }
            switch event {
            case .send(let bytes):
                counters.bytesSent += bytes.count
                session.tcp?.write(bytes)
            case .established(let remote):
                releasePending(session)
                session.remote = remote
                counters.sessionsOpened += 1
                if sessions[remote] == nil { sessions[remote] = session }
                let queued = session.queue
                session.queue = []
                for message in queued { write(message, on: session) }
            case .message(let piece):
                guard let more = piece.first, session.reassembly.count + piece.count <= Self.maxSessionMessage else {
                    close(session)
                    return
                }
                session.reassembly.append(contentsOf: piece.dropFirst())
                if more == 0 {
                    let message = session.reassembly
                    session.reassembly = []
                    deliver(message, on: session)
                }
            case .peerFinished:
                close(session)
            }
        }
    }

    private func deliver(_ bytes: [UInt8], on session: Session) {
        guard !stopping || node.overlay.averager != nil, let remote = session.remote else { return }
        let from = Sender(endpoint: session.tcp?.remoteEndpoint ?? Endpoint(host: session.sourceAddress, port: 0), peer: remote)
        guard bytes.count >= Self.offLoopCodingThreshold else {
            guard let message = try? wire.decodeSession(bytes, from: remote) else { return }
            perform(node.onMessage(message, from: from, at: now))
            return
        }
        // Checking a large delta's signature takes milliseconds: it runs on the thread pool, a
        // few at a time. Beyond that the session stops reading until the checks catch up, so
        // large deltas wait in the kernel (and TCP holds their senders back), not in memory.
        guard checksInFlight < Self.maxOffLoopChecks else {
            session.tcp?.stopReading()
            waitingChecks.append((bytes, remote, from, session))
            return
        }
        check(bytes, from: remote, sender: from)
    }

    /// Checks a large session message on the thread pool, then delivers it to the node.
    private func check(_ bytes: [UInt8], from remote: PeerID, sender: Sender) {
        let codec = wire.sessionCodec
        do {
            counters.codedOffLoop += 1
            checksInFlight += 1
            try loop.work({ Result { () throws(SecureWire.Failure) in try codec.decode(bytes, from: remote) } }) { [weak self] result in
                guard let self else { return }
                checksInFlight -= 1
                guard !stopped else { return }
                switch result {
                case .success(let message): perform(node.onMessage(message, from: sender, at: now))
                case .failure: wire.countSessionRefusal()
                }
                checkNextWaiting()
            }
        } catch {
            checksInFlight -= 1
            counters.sessionMessagesDropped += 1
        }
    }

    /// Starts the next waiting check and lets its session read again.
    private func checkNextWaiting() {
        guard checksInFlight < Self.maxOffLoopChecks, !waitingChecks.isEmpty else { return }
        let (bytes, remote, sender, session) = waitingChecks.removeFirst()
        if open[ObjectIdentifier(session)] != nil, !waitingChecks.contains(where: { $0.session === session }) {
            try? session.tcp?.startReading()
        }
        check(bytes, from: remote, sender: sender)
    }

    private func enqueue(_ message: Outgoing, on session: Session) {
        guard session.queue.count < Self.maxQueuedSessionMessages else {
            counters.sessionMessagesDropped += 1
            message.done()
            return
        }
        session.queue.append(message)
    }

    private func write(_ message: Outgoing, on session: Session) {
        let bytes = message.bytes
        if session.backlog > 0, session.backlog + bytes.count > Self.maxSessionWriteQueue {
            counters.sessionMessagesDropped += 1
            message.done()
            return
        }
        session.lastActivity = loop.nowMilliseconds
        var offset = 0
        repeat {
            let end = min(bytes.count, offset + Self.pieceLength)
            let more: UInt8 = end < bytes.count ? 1 : 0
            guard case .send(let frame)? = try? session.secure.send([more] + bytes[offset..<end]) else {
                message.done()
                close(session)
                return
            }
            transmit(frame, on: session, then: more == 0 ? message.done : nil)
            offset = end
        } while offset < bytes.count
    }

    /// Writes one channel frame, through the bandwidth cap if there is one, then calls `done`.
    private func transmit(_ frame: [UInt8], on session: Session, then done: (() -> Void)?) {
        counters.bytesSent += frame.count
        guard let pacer else {
            session.tcp?.write(frame)
            done?()
            return
        }
        session.paced += frame.count
        pacer.sendStream(size: frame.count) { [weak self] in
            session.paced -= frame.count
            done?()
            guard let self, open[ObjectIdentifier(session)] != nil else { return }
            session.tcp?.write(frame)
        }
    }

    private func releasePending(_ session: Session) {
        guard session.countedPending else { return }
        session.countedPending = false
        pending.removeAll { $0 === session }
    }

    /// An established session with `peer` that is not the one used to send to it (the peer
    /// opened it), made the one: without it, messages to the peer would wait for a new session
    /// while one is open. The most recently active one, if several.
    private func adoptSession(with peer: PeerID) -> Session? {
        let candidates = open.values.filter { $0.remote == peer && $0.established }
        guard let chosen = candidates.max(by: { $0.lastActivity < $1.lastActivity }) else { return nil }
        sessions[peer] = chosen
        return chosen
    }

    /// Where `peer` listens, from its signed address record in the view or the peer cache.
    private func listeningEndpoint(of peer: PeerID) -> Endpoint? {
        let overlay = node.overlay
        return overlay.sampler.entry(for: peer)?.record.primary ?? overlay.peerCache.records.first { $0.peer == peer }?.primary
    }

    private func close(_ session: Session) {
        guard open.removeValue(forKey: ObjectIdentifier(session)) != nil else { return }
        releasePending(session)
        if let remote = session.remote, sessions[remote] === session { sessions[remote] = nil }
        counters.sessionMessagesDropped += session.queue.count
        for message in session.queue { message.done() }
        session.queue = []
        session.tcp?.close()
    }

    private func scheduleHousekeeping() {
        housekeeping.start(after: 5_000) { [weak self] in
            guard let self else { return }
            let cutoff = loop.nowMilliseconds > Self.sessionIdleMilliseconds ? loop.nowMilliseconds - Self.sessionIdleMilliseconds : 0
            for session in open.values where session.lastActivity < cutoff { close(session) }
            scheduleHousekeeping()
        }
    }

    // MARK: State on disk

    /// Writes the averager's durable state atomically (a temporary file renamed into place).
    /// No fsync: the state must survive the process (`kill -9`), which the page cache does.
    private func persistAveragingState() {
        guard let averager = node.overlay.averager else { return }
        RuntimeFiles.writeAtomically(averager.durableState.encoded(), to: configuration.dataDirectory + "/" + Self.averagingStateName)
    }

    /// Writes the peer cache whenever it changed (atomically: a temporary file renamed into
    /// place), so a restart finds its peers even after `kill -9`.
    private func persistCacheIfChanged() {
        let bytes = node.overlay.peerCache.encoded()
        guard bytes != lastCache else { return }
        lastCache = bytes
        RuntimeFiles.writeAtomically(bytes, to: configuration.dataDirectory + "/" + Self.peerCacheName)
    }

    // MARK: Releases

    /// Publishes a release this node signed; it spreads to every peer.
    public func publish(_ manifest: ReleaseManifest, file: [UInt8], delta: [UInt8]?) throws(ReleaseError) {
        perform(try node.publish(manifest, file: file, delta: delta, at: now))
    }

    /// Rolls a release back everywhere by a notice this node signed.
    public func rollBack(_ notice: RollbackNotice) throws(ReleaseError) {
        perform(try node.rollBack(notice, at: now))
    }

    /// Keeps on disk what a distribution event changed.
    private func keep(_ event: ReleaseDistributor.Event) {
        guard let releases = node.overlay.releases else { return }
        releaseStore?.record(event, of: releases, at: WallClock.milliseconds())
    }

    // MARK: Control

    /// Longest control request line (a JSON object with arguments).
    public static var maxControlRequest: Int { 64 << 10 }

    /// Answers one request on the control socket: `status` (the node's state as JSON),
    /// `leave` (start a graceful leave) or one of ``controlRequests``. One line in (a word, or
    /// a JSON object with `request` and arguments), one JSON line out, then the connection closes.
    private func control(_ connection: StreamConnection) {
        var request: [UInt8] = []
        connection.onRead = { [weak self, unowned connection] bytes in
            guard let self else { return }
            request += bytes
            guard let newline = request.firstIndex(of: 10) else {
                if request.count > Self.maxControlRequest { connection.close() }
                return
            }
            let line = String(decoding: request[..<newline], as: UTF8.self).trimmingCharacters(in: .whitespaces)
            // A word, or a JSON object whose "request" is the word and whose other fields are its arguments.
            var command = line
            var arguments: [String: Any] = [:]
            if line.hasPrefix("{"), let object = (try? JSONSerialization.jsonObject(with: Data(line.utf8))) as? [String: Any] {
                command = object["request"] as? String ?? ""
                arguments = object
            }
            let reply: [String: Any]
            switch command {
            case "status": reply = status()
            case "leave":
                leave()
                reply = ["leaving": true, "peer": node.peerID.description]
            default:
                if let answer = controlRequests[command] {
                    reply = answer(arguments)
                } else {
                    let known = (["status", "leave"] + controlRequests.keys.sorted()).joined(separator: ", ")
                    reply = ["error": "unknown request '\(command)'; send one of \(known)"]
                }
            }
            let data = (try? JSONSerialization.data(withJSONObject: reply, options: [.sortedKeys])) ?? Data("{}".utf8)
            connection.write(Array(data) + [10])
            connection.close()
        }
        do { try connection.startReading() } catch { connection.close() }
    }

    /// The node's state for `peer status`.
    public func status() -> [String: Any] {
        let me = node.peerID
        let overlay = node.overlay
        var result: [String: Any] = [
            "peer": me.description,
            "addresses": overlay.record.endpoints.map(\.description),
            "members": overlay.membership.knownPeers.filter { $0.peer != me }.map { known in
                var member: [String: Any] = ["peer": known.peer.description, "state": Self.name(known.status)]
                if let since = known.since { member["since"] = wallClock(of: since) }
                return member
            },
            "localHealth": overlay.membership.localHealth,
            "view": overlay.sampler.view.count,
            "beacons": beaconsOff == nil,
        ]
        if let a = overlay.averager {
            var averaging: [String: Any] = [
                "weight": a.weight, "dimension": a.dimension, "inFlight": a.pendingTransfers.count,
                "sent": a.counters.sent, "applied": a.counters.applied, "acked": a.counters.acked,
                "reclaimed": a.counters.reclaimed, "rejected": a.counters.rejected, "duplicates": a.counters.duplicates,
            ]
            let estimate = a.estimate
            averaging["norm"] = estimate.map { e in e.reduce(0) { $0 + $1 * $1 }.squareRoot() } ?? NSNull()
            if a.dimension <= 1_024 { averaging["estimate"] = estimate ?? NSNull() }
            result["averaging"] = averaging
        }
        let r = wire.refusals
        result["rejected"] = [
            "datagramMalformed": r.datagrams.malformed, "datagramAuthentication": r.datagrams.authentication,
            "datagramReplayed": r.datagrams.replayed, "datagramStale": r.datagrams.stale, "datagramAhead": r.datagrams.ahead,
            "messageMalformed": r.malformedMessages, "misaddressed": r.misaddressed, "sessionMessages": r.sessionMessages,
            "datagramThrottled": counters.datagramsThrottled, "handshakeFailures": counters.handshakeFailures, "handshakesEvicted": counters.handshakesEvicted,
        ]
        result["traffic"] = [
            "datagramsSent": udp.sent, "datagramsReceived": udp.received, "datagramsDropped": udp.dropped,
            "sessionsOpen": open.count, "sessionsOpened": counters.sessionsOpened, "connectFailures": counters.connectFailures,
            "sessionMessagesDropped": counters.sessionMessagesDropped, "codedOffLoop": counters.codedOffLoop,
            "retransmissionsCoalesced": counters.retransmissionsCoalesced,
            "pacedBytes": pacer?.sentBytes ?? 0, "pacedDatagramsDropped": pacer?.droppedDatagrams ?? 0,
            "bytesSent": counters.bytesSent, "bytesReceived": counters.bytesReceived,
        ]
        if let releases = overlay.releases {
            var models: [String: Any] = [:]
            for name in Set(releases.holdings.keys.map(\.name)).union(releases.active.keys).sorted() {
                models[name] = [
                    "active": releases.active[name].map { $0 as Any } ?? NSNull(),
                    "held": releases.versions(of: name).filter { releases.holdings[$0]?.isComplete == true }.map(\.version),
                    "fetching": releases.versions(of: name).filter { releases.holdings[$0]?.isComplete == false }.map(\.version),
                    "rolled_back": releases.rollbacks.keys.filter { $0.name == name }.map(\.version).sorted(),
                ] as [String: Any]
            }
            var refused: [String: Int] = [:]
            for reason in ReleaseDistributor.Refusal.allCases { refused[reason.rawValue] = releases.counters.refused[reason] ?? 0 }
            result["releases"] = [
                "models": models, "refused": refused, "publishers": releases.publishers.map(\.description),
                "file_bytes_received": releases.counters.fileBytesReceived, "delta_bytes_received": releases.counters.deltaBytesReceived,
                "chunks_served": releases.counters.chunksServed, "stored": releases.counters.releasesStored,
            ] as [String: Any]
        }
        for (key, value) in statusExtras?() ?? [:] { result[key] = value }
        return result
    }

    /// Unix time, in seconds, of an instant of the loop's clock.
    private func wallClock(of instant: Instant) -> Double {
        Date().timeIntervalSince1970 - Double((now - instant).nanosecondsClamped) / 1e9
    }

    static func name(_ status: Membership.Status) -> String {
        switch status {
        case .alive: return "alive"
        case .suspect: return "suspect"
        case .dead: return "dead"
        case .left: return "left"
        }
    }

    // MARK: Leaving

    /// Least time a leave waits for the averager to hand off its mass before the node stops
    /// anyway (keeping what it could not hand off, and saying so).
    public static var leaveDeadlineMilliseconds: UInt64 { 15_000 }

    /// How long this node's leave waits for its hand-off: at least
    /// ``leaveDeadlineMilliseconds``, and long enough for membership to declare a hand-off
    /// receiver that vanished dead (its detection bound), so the share is taken back and
    /// handed to another neighbour, plus five seconds for that one to acknowledge it. A peer
    /// that left just before this one, and had not been heard of as gone, is such a receiver.
    var leaveDeadline: UInt64 {
        let detection = node.overlay.membership.detectionBound + .seconds(5)
        return max(Self.leaveDeadlineMilliseconds, UInt64(clamping: detection.nanosecondsClamped / 1_000_000))
    }
    /// Called once the node stopped: true if every bit of averaging mass was handed off (or
    /// the node did not average).
    public var onStopped: ((Bool) -> Void)?
    private var handedOff = false

    /// Starts a graceful leave: a signed leave notice, the averager's hand-off, then a second
    /// of lingering so shares still arriving are acknowledged, then stop.
    public func leave() {
        guard !stopping else { return }
        stopping = true
        let previous = onEvent
        onEvent = { [weak self] event in
            guard let self else { return }
            previous?(event)
            if case .averaging(.handOffComplete)? = Node.overlayEvent(event), !handedOff {
                handedOff = true
                try? loop.after(milliseconds: 1_000) { [weak self] in self?.stop() }
            }
        }
        perform(node.leave(at: now))
        if node.overlay.averager == nil {
            handedOff = true
            try? loop.after(milliseconds: 1_000) { [weak self] in self?.stop() }
        }
        try? loop.after(milliseconds: leaveDeadline, keepsLoopAlive: false) { [weak self] in self?.stop() }
    }

    private var stopped = false

    /// Stops at once: closes every socket and timer; ``run()`` returns.
    public func stop() {
        guard !stopped else { return }
        stopped = true
        persistCacheIfChanged()
        persistAveragingState()
        for timer in timers.values { timer.close() }
        timers = [:]
        housekeeping.close()
        pacer?.close()
        for session in Array(open.values) { close(session) }
        tcpListener?.close()
        controlListener?.close()
        udp.close()
        beaconSocket?.close()
        try? FileManager.default.removeItem(atPath: configuration.dataDirectory + "/" + Self.controlSocketName)
        loop.stop()
        onStopped?(handedOff)
    }
}

extension OverlayRuntime where Node == GossipNode {
    /// A runtime of a plain overlay node: membership, sampling, discovery and, given an
    /// averager, vector averaging; given a distributor, model distribution.
    public convenience init(identity: Identity, keyring: NetworkKeyring, configuration: Configuration,
                            averager: PushSumAverager?, releases: ReleaseDistributor? = nil, seed: UInt64) throws {
        try self.init(identity: identity, keyring: keyring, configuration: configuration, averager: averager, releases: releases, seed: seed) { $0 }
    }
}

/// Where the node listens and what it tells others.
public struct RuntimeConfiguration {
    /// The numeric address to bind, UDP and TCP on the same port (0 picks a free one).
    public var listen: Endpoint
    /// The address others should use, when it differs from the bound one (NAT, relay).
    public var advertise: Endpoint?
    public var settings: OverlaySettings
    /// Directory of the node's state: the peer cache and the control socket.
    public var dataDirectory: String
    /// Most bytes per second the node sends, datagrams and sessions together (nil: no cap).
    public var bandwidth: Double?

    public init(listen: Endpoint, advertise: Endpoint? = nil, settings: OverlaySettings, dataDirectory: String, bandwidth: Double? = nil) {
        self.listen = listen
        self.advertise = advertise
        self.settings = settings
        self.dataDirectory = dataDirectory
        self.bandwidth = bandwidth
    }
}
/// The runtime of a plain overlay node.
public typealias NodeRuntime
 = OverlayRuntime<GossipNode>

/// The files a node keeps in its data directory, and how they are written.
public enum RuntimeFiles {
    public static let controlSocket = "control.sock"
    public static let peerCache = "peer-cache"
    public static let averagingState = "averaging-state"

    /// Writes `bytes` to `path` atomically (a temporary file, mode 0600, renamed into place),
    /// so a reader or a restart after `kill -9` sees the old file or the new one, never half.
    /// No fsync: the state must survive the process, which the page cache does. Returns
    /// whether the file was replaced.
    @discardableResult
    public static func writeAtomically(_ bytes: [UInt8], to path: String) -> Bool {
        let temporary = path + ".tmp"
        guard FileManager.default.createFile(atPath: temporary, contents: Data(bytes), attributes: [.posixPermissions: 0o600]) else { return false }
        return rename(temporary, path) == 0
    }
}
