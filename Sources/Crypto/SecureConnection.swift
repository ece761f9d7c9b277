/// A handshake followed by a secure channel over one byte stream, as a sans-IO state machine:
/// feed it the bytes that arrive, send the bytes it returns.
///
/// After the handshake each side sends its 24-byte stream header, then channel frames.
/// Any error means: close the connection without sending anything more.
public final class SecureConnection {
    /// What the driver should do or know.
    public enum Event: Sendable {
        /// Write these bytes to the stream.
        case send([UInt8])
        /// The handshake completed with this peer.
        case established(PeerID)
        /// A message arrived.
        case message([UInt8])
        /// The peer sent its authenticated end marker.
        case peerFinished
    }

    /// Errors end the connection.
    public enum Failure: Error, Sendable, CustomStringConvertible {
        case handshake(HandshakeError)
        case channel(SecureChannelError)
        /// `send` before the handshake completed.
        case notEstablished
        /// The peer closed the stream before the handshake completed.
        case closedDuringHandshake

        public var description: String {
            switch self {
            case let .handshake(e): return e.description
            case let .channel(e): return e.description
            case .notEstablished: return "secure connection: not established yet"
            case .closedDuringHandshake: return "secure connection: peer closed during the handshake (wrong network key or wrong peer ID?)"
            }
        }
    }

    private enum Role {
        case initiator(HandshakeInitiator)
        case responder(HandshakeResponder, ReplayGuardBox)
    }

    /// A replay guard shared by every responder connection of one node.
    public final class ReplayGuardBox {
        public var value: HandshakeReplayGuard
        public init(_ value: HandshakeReplayGuard = .init()) { self.value = value }
    }

    private var role: Role
    private var assembler: FrameAssembler
    private let settings: SecureChannelSettings
    private var sender: SecureChannelSender?
    private var receiver: SecureChannelReceiver?
    private var pendingReceiveKey: SecureBytes?
    /// The authenticated peer, once established.
    public private(set) var remote: PeerID?
    /// Total bytes returned for sending and bytes consumed, for reporting.
    public private(set) var bytesSent = 0
    public private(set) var bytesReceived = 0

    /// The initiating side; it completes only with `expectedResponder`.
    public init(initiator: HandshakeInitiator, settings: SecureChannelSettings = .init()) {
        role = .initiator(initiator)
        self.settings = settings
        assembler = FrameAssembler(settings: settings)
    }

    /// The accepting side.
    public init(responder: HandshakeResponder, replayGuard: ReplayGuardBox, settings: SecureChannelSettings = .init()) {
        role = .responder(responder, replayGuard)
        self.settings = settings
        assembler = FrameAssembler(settings: settings)
    }

    /// Events to act on when the stream opens (the initiator's first message).
    public func start() -> [Event] {
        guard case var .initiator(i) = role else { return [] }
        let hello = i.start()
        role = .initiator(i)
        return [sendEvent(hello)]
    }

    /// Consumes bytes that arrived.
    public func receive(_ bytes: some Collection<UInt8>) throws(Failure) -> [Event] {
        bytesReceived += bytes.count
        assembler.append(bytes)
        var events: [Event] = []
        while true {
            if let receiver {
                let frame: [UInt8]?
                do { frame = try assembler.nextFrame() } catch { throw .channel(error) }
                guard let frame else { return events }
                do {
                    let m = try receiver.open(frame: frame)
                    if !m.isEmpty { events.append(.message(m)) }
                    if receiver.isFinished { events.append(.peerFinished) }
                } catch { throw .channel(error) }
                continue
            }
            if let key = pendingReceiveKey {
                guard let header = assembler.take(SecureChannel.headerLength) else { return events }
                do { receiver = try SecureChannelReceiver(key: key, header: header, settings: settings) } catch { throw .channel(error) }
                pendingReceiveKey = nil
                continue
            }
            guard let kind = expectedHandshakeFrame, let frame = assembler.take(kind.frameLength) else { return events }
            let output: HandshakeOutput
            do {
                switch role {
                case var .initiator(i):
                    output = try i.receive(frame)
                    role = .initiator(i)
                case .responder(var r, let box):
                    output = try r.receive(frame, replayGuard: &box.value)
                    role = .responder(r, box)
                }
            } catch { throw .handshake(error) }
            if let reply = output.reply { events.append(sendEvent(reply)) }
            if let result = output.result {
                do {
                    let s = try SecureChannelSender(key: result.sendKey, settings: settings)
                    sender = s
                    events.append(sendEvent(s.header))
                } catch { throw .channel(error) }
                pendingReceiveKey = result.receiveKey
                remote = result.remote
                events.append(.established(result.remote))
            }
        }
    }

    private var expectedHandshakeFrame: HandshakeFrame.Kind? {
        switch role {
        case let .initiator(i): return i.expectedFrame
        case let .responder(r, _): return r.expectedFrame
        }
    }

    /// Encrypts one message for the peer.
    public func send(_ message: some Collection<UInt8>) throws(Failure) -> Event {
        guard let sender else { throw .notEstablished }
        do { return sendEvent(try sender.seal(message)) } catch { throw .channel(error) }
    }

    /// Encrypts a message that `fill` writes in place (see ``SecureChannelSender/seal(length:fill:)``).
    public func send(length: Int, fill: (UnsafeMutableRawBufferPointer) throws -> Void) throws -> Event {
        guard let sender else { throw Failure.notEstablished }
        return sendEvent(try sender.seal(length: length, fill: fill))
    }

    /// The authenticated end marker; nothing may be sent afterwards.
    public func finish() throws(Failure) -> Event {
        guard let sender else { throw .notEstablished }
        do { return sendEvent(try sender.finish()) } catch { throw .channel(error) }
    }

    /// The stream closed: throws unless the peer ended it with its end marker.
    public func streamClosed() throws(Failure) {
        guard let receiver else { throw .closedDuringHandshake }
        do { try receiver.streamClosed() } catch { throw .channel(error) }
    }

    private func sendEvent(_ bytes: [UInt8]) -> Event {
        bytesSent += bytes.count
        return .send(bytes)
    }
}
