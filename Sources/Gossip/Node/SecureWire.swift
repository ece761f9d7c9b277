import Crypto

/// The one wire layer between a node and the network: what every driver (the libuv runtime,
/// the simulator's wire mode, the benchmarks) turns messages into, and back.
///
/// - Datagrams (membership, sampling, discovery): the ``GossipWire`` encoding, sealed with the
///   network key for the peer it is addressed to (its ID bound into the seal), with a random
///   nonce and a timestamp checked by the node's ``ReplayGuard``. A datagram addressed to any
///   member may carry only a join or a beacon.
/// - Session messages (averaging, releases, model copies): an averaging transfer or a model
///   copy (``ModelCopyEnvelope``) is a ``SignedDelta`` envelope signed by this node and
///   addressed to the session's peer; an acknowledgement is
///   the plain ``AveragingWire`` encoding; a release message is the byte 0x52 and its
///   ``ReleaseMessage`` encoding (manifests and rollbacks carry their publisher's signature,
///   chunks are checked against a manifest). The secure channel below encrypts and
///   authenticates all of them; on receipt the author of a transfer must be the session's
///   authenticated peer.
///
/// Every refusal is counted by reason. One owner (the node's driver).
public final class SecureWire {
    /// Messages refused, by reason.
    public struct Refusals: Sendable, Equatable {
        /// Datagrams the opener refused (malformed, not for us, replayed, stale, ahead).
        public var datagrams = DatagramOpener.Refusals()
        /// Datagrams that opened but held no valid message.
        public var malformedMessages = 0
        /// Broadcast-addressed datagrams carrying something other than a join or a beacon.
        public var misaddressed = 0
        /// Session messages refused (bad envelope, wrong author or recipient, malformed).
        public var sessionMessages = 0

        public var total: Int { datagrams.total + malformedMessages + misaddressed + sessionMessages }
    }

    /// Why a message was refused.
    public enum Failure: Error, Sendable, Equatable, CustomStringConvertible {
        case datagram(DatagramError)
        case message(WireError)
        /// A datagram addressed to any member carried a message that must name its recipient.
        case misaddressed
        case averaging(AveragingEnvelope.Failure)
        case release(WireError)
        case model(ModelCopyEnvelope.Failure)
        /// A message sent on the wrong transport (an averaging message as a datagram, or a
        /// membership message on a session).
        case wrongTransport

        public var description: String {
            switch self {
            case let .datagram(e): return "\(e)"
            case let .message(e): return "gossip message: \(e)"
            case .misaddressed: return "datagram addressed to any member carries a message that must name its recipient"
            case let .averaging(e): return "\(e)"
            case let .release(e): return "release message: \(e)"
            case let .model(e): return "\(e)"
            case .wrongTransport: return "message on the wrong transport (averaging travels over sessions, the rest as datagrams)"
            }
        }
    }

    public let identity: Identity
    public private(set) var keyring: NetworkKeyring
    private let sealer: DatagramSealer
    private let opener: DatagramOpener
    private var counts = Refusals()

    /// The wire of a node with `identity` in the network of `keyring`, refusing replayed
    /// datagrams with `replayGuard` (see ``ReplayGuard/forDatagrams(startedAt:)``).
    public init(identity: Identity, keyring: NetworkKeyring, replayGuard: ReplayGuard) throws {
        self.identity = identity
        self.keyring = keyring
        sealer = try DatagramSealer(networkKey: keyring.current)
        opener = try DatagramOpener(keyring: keyring, localPeer: identity.peerID, replayGuard: replayGuard)
    }

    /// A wire for another node of the same network that shares `other`'s derived keys (a
    /// simulation of thousands of nodes in one process; see
    /// ``DatagramOpener/init(sharingKeysWith:localPeer:replayGuard:)``).
    public init(identity: Identity, sharingKeysWith other: SecureWire, replayGuard: ReplayGuard) {
        self.identity = identity
        keyring = other.keyring
        sealer = other.sealer
        opener = DatagramOpener(sharingKeysWith: other.opener, localPeer: identity.peerID, replayGuard: replayGuard)
    }

    /// Everything refused so far.
    public var refusals: Refusals {
        var r = counts
        r.datagrams = opener.refusals
        return r
    }

    // MARK: Datagrams

    /// The datagram for `message` to `recipient` (nil: any member) at wall-clock `now` (ms).
    public func sealDatagram(_ message: GossipMessage, to recipient: PeerID?, now: UInt64) throws(Failure) -> [UInt8] {
        let plain: [UInt8]
        do { plain = try GossipWire.encode(message) } catch { throw .wrongTransport }
        do {
            return try sealer.seal(plain, to: recipient.map(DatagramRecipient.peer) ?? .broadcast, now: now)
        } catch {
            throw .datagram(error)
        }
    }

    /// Opens a datagram that arrived at wall-clock `now` (ms).
    public func openDatagram(_ bytes: [UInt8], now: UInt64) throws(Failure) -> GossipMessage {
        let opened: DatagramOpener.Opened
        do { opened = try opener.open(bytes, now: now) } catch { throw .datagram(error) }
        let message: GossipMessage
        do { message = try GossipWire.decode(opened.plaintext) } catch {
            counts.malformedMessages += 1
            throw .message(error)
        }
        if opened.recipient == .broadcast {
            switch message {
            case .discovery(.join), .discovery(.beacon): break
            default:
                counts.misaddressed += 1
                throw .misaddressed
            }
        }
        return message
    }

    // MARK: Sessions

    /// What encodes and decodes session messages, free of the wire's counters: a value that
    /// may run on another thread (a driver signs and checks large deltas off its loop), whose
    /// refusals the driver reports back with ``countSessionRefusal()``.
    public struct SessionCodec: Sendable {
        let identity: Identity
        let keyring: NetworkKeyring

        /// The byte that opens a release message on a session (an averaging message opens
        /// with its envelope's or its encoding's own tag, never this one).
        static let releaseTag: UInt8 = 0x52

        /// The session message for `message` to `peer` (the session's other end).
        public func encode(_ message: GossipMessage, to peer: PeerID) throws(Failure) -> [UInt8] {
            switch message {
            case .averaging(let m): return try encode(m, to: peer)
            case .release(let m): return [Self.releaseTag] + m.encoded
            case .model(let copy):
                do {
                    return try ModelCopyEnvelope.encode(copy, identity: identity, networkID: keyring.current.id, to: peer)
                } catch {
                    throw .model(.envelope(error))
                }
            default: throw .wrongTransport
            }
        }

        /// The session message for an averaging message to `peer`.
        public func encode(_ message: PushSumAverager.Message, to peer: PeerID) throws(Failure) -> [UInt8] {
            do {
                return try AveragingEnvelope.encode(message, identity: identity, networkID: keyring.current.id, to: peer)
            } catch {
                throw .averaging(.envelope(error))
            }
        }

        /// Decodes a message that arrived over the session with the authenticated `peer`: a
        /// transfer must be signed by `peer` and addressed to this node.
        public func decode(_ bytes: [UInt8], from peer: PeerID) throws(Failure) -> GossipMessage {
            if ModelCopyEnvelope.isModelCopy(bytes) {
                do {
                    return .model(try ModelCopyEnvelope.decode(bytes, keyring: keyring, from: peer, localPeer: identity.peerID))
                } catch {
                    throw .model(error)
                }
            }
            guard bytes.first == Self.releaseTag else { return .averaging(try decodeAveraging(bytes, from: peer)) }
            do { return .release(try ReleaseMessage(decoding: Array(bytes.dropFirst()))) } catch { throw .release(error) }
        }

        /// Decodes an averaging message that arrived over the session with `peer`.
        public func decodeAveraging(_ bytes: [UInt8], from peer: PeerID) throws(Failure) -> PushSumAverager.Message {
            do {
                return try AveragingEnvelope.decode(bytes, keyring: keyring, from: peer, localPeer: identity.peerID)
            } catch {
                throw .averaging(error)
            }
        }
    }

    /// This wire's session codec.
    public var sessionCodec: SessionCodec { SessionCodec(identity: identity, keyring: keyring) }

    /// Counts a session message that ``SessionCodec/decode(_:from:)`` refused.
    public func countSessionRefusal() { counts.sessionMessages += 1 }

    /// The session message for `message` to `peer` (the session's other end).
    public func encodeSession(_ message: GossipMessage, to peer: PeerID) throws(Failure) -> [UInt8] {
        try sessionCodec.encode(message, to: peer)
    }

    /// The session message for an averaging message to `peer`.
    public func encodeSession(_ message: PushSumAverager.Message, to peer: PeerID) throws(Failure) -> [UInt8] {
        try sessionCodec.encode(message, to: peer)
    }

    /// Decodes a message that arrived over the session with the authenticated `peer` (see
    /// ``SessionCodec/decode(_:from:)``), counting a refusal.
    public func decodeSession(_ bytes: [UInt8], from peer: PeerID) throws(Failure) -> GossipMessage {
        do {
            return try sessionCodec.decode(bytes, from: peer)
        } catch {
            countSessionRefusal()
            throw error
        }
    }

    /// Decodes an averaging message that arrived over the session with `peer`, counting a refusal.
    public func decodeAveragingSession(_ bytes: [UInt8], from peer: PeerID) throws(Failure) -> PushSumAverager.Message {
        do {
            return try sessionCodec.decodeAveraging(bytes, from: peer)
        } catch {
            countSessionRefusal()
            throw error
        }
    }
}
