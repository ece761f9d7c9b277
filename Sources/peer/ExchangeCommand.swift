import ArgumentParser
import CommandSupport
import Crypto
import Foundation
import Gossip

/// `peer exchange`: one handshake and one signed, encrypted delta in each direction over TCP.
struct Exchange: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Exchange one signed, encrypted model delta with another peer over TCP.",
        discussion: """
        One side listens, the other connects. They run the secret handshake (admission by network key, \
        mutual authentication), then each sends a signed delta over its encrypted stream and verifies the one it receives. \
        The connecting side must name the listener's peer ID (see `peer id`): the handshake fails unless it reaches exactly that peer.

        Example:
          peer exchange --listen 127.0.0.1:0 --dir A --network-key net.key
          peer exchange --connect 127.0.0.1:PORT --peer ID_OF_A --dir B --network-key net.key
        """
    )

    @Option(name: .long, help: "Listen on HOST:PORT (port 0 picks a free one) and exchange with the first peer that completes the handshake.")
    var listen: String?

    @Option(name: .long, help: "Connect to HOST:PORT.")
    var connect: String?

    @Option(name: .long, help: "Peer ID (hex) the connecting side requires the listener to be.")
    var peer: String?

    @Option(name: .long, help: "Key directory holding identity.key.")
    var dir: String = KeyDirectory.defaultPath

    @Option(name: .customLong("network-key"), help: "Network key file.")
    var networkKey: String

    @Option(name: .long, parsing: .unconditional, help: "Number of float32 elements in the delta this side sends.")
    var elements: Int = 262_144

    @Option(name: .long, parsing: .unconditional, help: "Give up after this many seconds (1...\(Exchange.maxTimeoutSeconds)).")
    var timeout: UInt64 = 20

    /// Longest accepted --timeout: a day is far beyond any exchange, and keeps the
    /// millisecond conversion for the loop timer far from overflow.
    static let maxTimeoutSeconds: UInt64 = 86_400
    /// Connections the listener lets handshake at once. A port scan or a peer without the
    /// network key occupies one slot until it fails or the handshake deadline passes; the
    /// others stay open for the real peer.
    static let maxPendingHandshakes = 8
    /// Where the listener and connector remember the sequence numbers of the deltas they
    /// accepted, inside the key directory: a replayed delta is refused, also after a restart.
    static let ledgerFileName = "delta-sequences"

    func validate() throws {
        guard (listen == nil) != (connect == nil) else { throw ValidationError("give exactly one of --listen or --connect") }
        if connect != nil && peer == nil { throw ValidationError("--connect needs --peer ID (the listener's `peer id`)") }
        if let listen { _ = try HostPort(parsing: listen, flag: "--listen") }
        if let connect {
            guard try HostPort(parsing: connect, flag: "--connect").port != 0 else { throw ValidationError("--connect needs a port from 1 to 65535") }
        }
        if let peer, PeerID(hex: peer) == nil {
            throw ValidationError("--peer must be a 64-character hex peer ID (the listener's `peer id --quiet`), got '\(peer)'")
        }
        guard (1...Self.maxTimeoutSeconds).contains(timeout) else {
            throw ValidationError("--timeout must be between 1 and \(Self.maxTimeoutSeconds) seconds")
        }
        guard elements > 0, elements <= DeltaLimits().maxPayloadLength / 4 else {
            throw ValidationError("--elements must be between 1 and \(DeltaLimits().maxPayloadLength / 4)")
        }
    }

    func run() throws {
        let identity = try userFacing { try Identity.load(from: KeyDirectory.identityPath(dir)) }
        let key = try userFacing { try NetworkKey.load(from: networkKey) }
        let ledger = try userFacing { try DeltaSequenceLedger(path: dir + "/" + Self.ledgerFileName) }
        let loop = try userFacing { try EventLoop() }
        let role = listen != nil ? "listener" : "connector"
        say("\(role): peer id \(identity.peerID) (\(identity.peerID.fingerprint))")
        // The session that completed its handshake (the listener may try several connections).
        var session: ExchangeSession?
        func makeSession() -> ExchangeSession {
            ExchangeSession(loop: loop, identity: identity, networkKey: key, ledger: ledger, elements: elements, role: role)
        }

        if let listen {
            let address = try HostPort(parsing: listen, flag: "--listen").resolved()
            // One guard for every connection, made at start: a hello recorded earlier (or
            // before a restart) opens no handshake.
            let replayGuard = ReplayGuard.forHandshakes(startedAt: WallClock.milliseconds())
            var listener: StreamListener?
            var pending: [ObjectIdentifier: ExchangeSession] = [:]
            listener = try userFacing {
                do {
                    return try StreamListener(loop: loop, host: address.host, port: address.port) { connection in
                        guard session == nil, pending.count < Self.maxPendingHandshakes else { connection.close(); return }
                        let candidate = makeSession()
                        let id = ObjectIdentifier(candidate)
                        pending[id] = candidate
                        candidate.onHandshakeFailed = { message in
                            pending[id] = nil
                            printNote("\(role): refused a connection: \(message); still listening")
                        }
                        candidate.onEstablished = {
                            session = candidate
                            pending[id] = nil
                            for other in pending.values { other.abandon() }
                            pending = [:]
                            listener?.close()
                            listener = nil
                        }
                        let responder = HandshakeResponder(identity: identity, keyring: NetworkKeyring(current: key))
                        candidate.attach(connection, SecureConnection(responder: responder, replayGuard: replayGuard))
                    }
                } catch {
                    throw UserFacingError("cannot listen on \(address): \(reason(error))")
                }
            }
            say("\(role): listening on \(HostPort(host: address.host, port: listener?.port ?? 0))")
        } else if let connect, let peer, let expected = PeerID(hex: peer) {
            let address = try HostPort(parsing: connect, flag: "--connect").resolved()
            let connector = makeSession()
            session = connector
            try userFacing {
                try StreamConnection.connect(loop: loop, host: address.host, port: address.port) { result in
                    switch result {
                    case let .success(connection):
                        say("\(role): connected to \(address)")
                        let initiator = HandshakeInitiator(identity: identity, networkKey: key, expectedResponder: expected)
                        connector.attach(connection, SecureConnection(initiator: initiator))
                    case let .failure(error):
                        connector.fail("cannot connect to \(address): \(reason(error))")
                    }
                }
            }
        }
        try userFacing {
            try loop.after(milliseconds: timeout * 1000, keepsLoopAlive: false) {
                guard let current = session else {
                    CommandConventions.printError("\(role): timed out after \(timeout) s: no peer completed the handshake")
                    Foundation.exit(1)
                }
                if !current.isDone {
                    current.fail("timed out after \(timeout) s")
                    Foundation.exit(1)
                }
            }
        }
        loop.run()
        // The failure was already reported on standard error.
        guard let session, session.failure == nil else { throw ExitCode.failure }
        say("\(role): done")
    }
}

/// Drives one ``SecureConnection`` over one ``StreamConnection`` for the exchange.
final class ExchangeSession {
    let loop: EventLoop
    let identity: Identity
    let networkKey: NetworkKey
    let ledger: DeltaSequenceLedger
    let elements: Int
    let role: String
    /// Called once the handshake completed.
    var onEstablished: (() -> Void)?
    /// If set, a failure before the handshake completed is reported here (the listener goes
    /// on listening) instead of failing the exchange.
    var onHandshakeFailed: ((String) -> Void)?
    private var tcp: StreamConnection?
    private var secure: SecureConnection?
    private var assembler: DeltaAssembler?
    private var sentFinal = false
    private var peerFinished = false
    private var received = false
    private(set) var failure: String?
    var isDone: Bool { (sentFinal && peerFinished && received) || failure != nil }

    init(loop: EventLoop, identity: Identity, networkKey: NetworkKey, ledger: DeltaSequenceLedger, elements: Int, role: String) {
        self.loop = loop
        self.identity = identity
        self.networkKey = networkKey
        self.ledger = ledger
        self.elements = elements
        self.role = role
    }

    func attach(_ connection: StreamConnection, _ secure: SecureConnection) {
        tcp = connection
        self.secure = secure
        // Held weakly: a callback run while the loop is torn down finds the exchange gone.
        connection.onRead = { [weak self] bytes in
            guard let self else { return }
            do { handle(try secure.receive(bytes)) } catch { fail("\(error)") }
        }
        connection.onEnd = { [weak self] error in
            guard let self else { return }
            if let error { fail("\(error)"); return }
            do { try secure.streamClosed() } catch { if !isDone { fail("\(error)") } }
        }
        connection.onClose = { [weak self] in self?.tcp = nil }
        do { try connection.startReading() } catch { fail("\(error)") }
        // A peer that stalls the handshake loses the connection; it does not wait for --timeout.
        let deadline = SecureConnection.handshakeDeadlineMilliseconds
        do {
            try loop.after(milliseconds: deadline, keepsLoopAlive: false) { [weak self, weak secure] in
                guard let self, let secure, !secure.isEstablished else { return }
                self.fail("handshake did not complete within \(deadline / 1000) s")
            }
        } catch { fail("\(error)") }
        do { handle(try secure.start()) } catch { fail("\(error)") }
    }

    private func handle(_ events: [SecureConnection.Event]) {
        for event in events {
            guard failure == nil else { return }
            switch event {
            case let .send(bytes):
                tcp?.write(bytes)
            case let .established(remote):
                say("\(role): handshake done with \(remote.fingerprint) (\(remote))")
                onHandshakeFailed = nil
                onEstablished?()
                sendDelta()
            case let .message(bytes):
                receive(bytes)
            case .peerFinished:
                peerFinished = true
                finishIfDone()
            }
        }
    }

    /// A deterministic synthetic delta, different for each author.
    private func makePayload() -> [Float] {
        let phase = Float(identity.peerID.bytes[0]) / 255
        return (0..<elements).map { i in 0.001 * sin(Float(i) * 0.01 + phase) }
    }

    private func sendDelta() {
        guard let secure else { return }
        let floats = makePayload()
        let shape: [UInt32] = elements % 256 == 0 ? [UInt32(elements / 256), 256] : [UInt32(elements)]
        // Metadata: the push-sum weight (local sample count), signed with the header.
        var meta = ByteWriter()
        meta.writeUInt64(600)
        do {
            try floats.withUnsafeBytes { raw in
                // The wall clock in ms as the sequence: it grows from one run to the next,
                // so the receiver's ledger accepts each run's delta once.
                let header = SignedDelta.makeHeader(kind: .modelDelta, networkID: networkKey.id, recipient: secure.remote,
                                                    round: 1, sequence: WallClock.milliseconds(),
                                                    encoding: .float32, shape: shape, metadata: meta.bytes,
                                                    payload: raw, identity: identity)
                handle([try secure.send(SignedDelta.sealHead(header, identity: identity))])
                // Chunks are encrypted straight from the payload buffer (no intermediate copies).
                var offset = 0
                while offset < raw.count {
                    let piece = UnsafeRawBufferPointer(rebasing: raw[offset..<min(raw.count, offset + DeltaChunk.maxLength)])
                    let start = UInt64(offset)
                    handle([try secure.send(length: DeltaChunk.headerLength + piece.count) {
                        try DeltaChunk.encode(offset: start, bytes: piece, into: $0)
                    }])
                    offset += piece.count
                }
                say("\(role): sent signed delta round 1 seq \(header.sequence) shape \(shape) f32, \(raw.count) payload bytes, hash \(Hex.encode(header.payloadHash.prefix(8)))…")
            }
            handle([try secure.finish()])
            sentFinal = true
            finishIfDone()
        } catch {
            fail("\(error)")
        }
    }

    private func receive(_ message: [UInt8]) {
        do {
            if assembler == nil {
                guard let remote = secure?.remote else { return }
                let expectation = DeltaExpectation(kind: .modelDelta, author: .peer(remote), localPeer: identity.peerID)
                let head = try SignedDelta.openHead(message, keyring: NetworkKeyring(current: networkKey), expecting: expectation)
                guard head.headLength == message.count else { throw DeltaError.malformed(.trailingBytes(count: message.count - head.headLength)) }
                say("\(role): delta header verified before payload: author \(head.header.author.fingerprint), round \(head.header.round), seq \(head.header.sequence), shape \(head.header.shape), \(head.header.payloadLength) bytes announced")
                assembler = DeltaAssembler(head: head)
                return
            }
            guard let a = assembler else { return }
            try message.withUnsafeBytes { raw in
                try DeltaChunk.withDecoded(raw) { offset, bytes in try a.add(offset: offset, bytes: bytes) }
            }
            if a.isComplete {
                assembler = nil
                let (header, payload) = try a.finish(ledger: ledger)
                // Copy the bytes into Float storage (no rebinding of the byte array's memory).
                let floats = [Float](unsafeUninitializedCapacity: payload.count / 4) { buffer, count in
                    payload.withUnsafeBytes { UnsafeMutableRawBufferPointer(buffer).copyMemory(from: UnsafeRawBufferPointer(rebasing: $0.prefix(buffer.count * 4))) }
                    count = buffer.count
                }
                let norm = sqrt(floats.reduce(0) { $0 + $1 * $1 })
                say("\(role): delta verified: signature ok, BLAKE2b-256 ok, \(payload.count) bytes, \(floats.count) floats, L2 norm \(String(format: "%.4f", norm)) from \(header.author.fingerprint)")
                received = true
                finishIfDone()
            }
        } catch {
            fail("\(error)")
        }
    }

    private func finishIfDone() {
        guard sentFinal && peerFinished && received, let secure else { return }
        say("\(role): stream closed with authenticated end marker; \(secure.bytesSent) bytes sent, \(secure.bytesReceived) bytes received")
        tcp?.close()
    }

    /// Closes a connection that lost the race to another one, without reporting anything.
    func abandon() {
        onHandshakeFailed = nil
        failure = "abandoned"
        tcp?.close()
    }

    func fail(_ message: String) {
        guard failure == nil else { return }
        if let refused = onHandshakeFailed {
            onHandshakeFailed = nil
            failure = message
            refused(message)
            tcp?.close()
            return
        }
        failure = message
        let received = secure.map { " (received \($0.bytesReceived) bytes from the peer)" } ?? ""
        CommandConventions.printError("\(role): \(message)\(received)")
        tcp?.close()
    }
}

/// Reports progress on standard error (the exchange prints no data), unbuffered, so a script
/// watching it sees each line at once.
func say(_ line: String) {
    printNote(line)
}
