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
        /// The connection already failed; the driver should have closed it.
        case alreadyFailed
        /// More bytes are waiting than any expected message can hold (see ``SecureConnection/maxBuffered``).
        case bufferOverflow(Int, maximum: Int)

        public var description: String {
            switch self {
            case let .handshake(e): return e.description
            case let .channel(e): return e.description
            case .notEstablished: return "secure connection: not established yet"
            case .closedDuringHandshake: return "secure connection: peer closed during the handshake (wrong network key or wrong peer ID?)"
            case .alreadyFailed: return "secure connection: already failed; close the connection"
            case let .bufferOverflow(n, max): return "secure connection: \(n) bytes buffered exceed \(max)"
            }
        }
    }

    private enum Phase { case handshaking, established, failed }

    /// Milliseconds a driver should allow for the handshake before closing the connection.
    /// Two round trips of small messages; 10 s covers slow links while bounding how long a
    /// silent or stalled peer holds a connection slot.
    public static let handshakeDeadlineMilliseconds: UInt64 = 10_000

    /// Once the handshake ends (either way) its state, and with it every ephemeral secret, is dropped.
    private var phase: Phase = .handshaking
    private var initiator: HandshakeInitiator?
    private var responder: HandshakeResponder?
    private let replayGuard: ReplayGuard?
    /// Wall-clock milliseconds for hello timestamps (injected so tests control time).
    private let clock: @Sendable () -> UInt64
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

    /// The initiating side; it completes only with the initiator's expected responder.
    public init(initiator: consuming HandshakeInitiator, settings: SecureChannelSettings = .init(),
                clock: @escaping @Sendable () -> UInt64 = WallClock.milliseconds) {
        self.initiator = Optional(initiator)
        self.responder = nil
        self.replayGuard = nil
        self.clock = clock
        self.settings = settings
        assembler = FrameAssembler(settings: settings)
    }

    /// The accepting side; `replayGuard` is shared by every accepted connection of the node.
    public init(responder: HandshakeResponder, replayGuard: ReplayGuard, settings: SecureChannelSettings = .init(),
                clock: @escaping @Sendable () -> UInt64 = WallClock.milliseconds) {
        self.initiator = nil
        self.responder = responder
        self.replayGuard = replayGuard
        self.clock = clock
        self.settings = settings
        assembler = FrameAssembler(settings: settings)
    }

    /// Most bytes that may wait unprocessed: one largest channel frame plus the stream header.
    /// Every expected message is smaller, so more means the peer sends what nobody asked for.
    public var maxBuffered: Int { SecureChannel.lengthPrefix + settings.maxCiphertextLength + SecureChannel.headerLength }

    /// True once the handshake completed.
    public var isEstablished: Bool { remote != nil }

    /// Events to act on when the stream opens (the initiator's first message). Call once.
    public func start() throws(Failure) -> [Event] {
        guard phase == .handshaking, var i = initiator.take() else { return [] }
        let hello: [UInt8]
        do { hello = try i.start(now: clock()) } catch {
            fail()
            throw .handshake(error)
        }
        initiator = consume i
        return [sendEvent(hello)]
    }

    /// Consumes bytes that arrived. After any error every later call throws ``Failure/alreadyFailed``.
    public func receive(_ bytes: some Collection<UInt8>) throws(Failure) -> [Event] {
        if phase == .failed { throw .alreadyFailed }
        do throws(Failure) {
            bytesReceived += bytes.count
            assembler.append(bytes)
            let events = try process()
            guard assembler.buffered <= maxBuffered else { throw .bufferOverflow(assembler.buffered, maximum: maxBuffered) }
            return events
        } catch {
            fail()
            throw error
        }
    }

    private func fail() {
        phase = .failed
        initiator = nil
        responder = nil
        pendingReceiveKey = nil
        sender = nil
        receiver = nil
        assembler = FrameAssembler(settings: settings)
    }

    private func process() throws(Failure) -> [Event] {
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
                if var i = initiator.take() {
                    output = try i.receive(frame)
                    initiator = consume i
                } else if var r = responder.take(), let replayGuard {
                    output = try r.receive(frame, replayGuard: replayGuard, now: clock())
                    responder = r
                } else {
                    return events
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
                phase = .established
                initiator = nil
                responder = nil
                events.append(.established(result.remote))
            }
        }
    }

    private var expectedHandshakeFrame: HandshakeFrame.Kind? {
        guard phase == .handshaking else { return nil }
        if let kind = initiator?.expectedFrame { return kind }
        return responder?.expectedFrame
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
