import CSodium

/// Errors opening or sealing a datagram. None of them changes any state.
public enum DatagramError: Error, Equatable, Sendable, CustomStringConvertible {
    case malformed(WireError)
    /// Accepted before, too old, or too far ahead (see ``ReplayGuard``).
    case replayed(ReplayGuard.Refusal)
    /// Did not authenticate under any accepted network key for this recipient: altered,
    /// sealed for another peer, or from outside the network.
    case authenticationFailed
    /// The plaintext is larger than a datagram may carry.
    case tooLarge(Int, maximum: Int)

    public var description: String {
        switch self {
        case let .malformed(e): return "datagram: \(e)"
        case let .replayed(why): return "datagram refused: \(why)"
        case .authenticationFailed: return "datagram: authentication failed (altered, sealed for another peer, or wrong network key)"
        case let .tooLarge(n, max): return "datagram: \(n) bytes exceed \(max)"
        }
    }
}

/// Whom a datagram is for. The recipient is bound into the associated data, so a datagram
/// sealed for one peer never opens at another.
public enum DatagramRecipient: Equatable, Sendable {
    /// One peer, by identity.
    case peer(PeerID)
    /// Every member that hears it (LAN beacons).
    case broadcast

    /// The addressing byte of the header.
    var addressing: UInt8 {
        switch self {
        case .peer: return 1
        case .broadcast: return 2
        }
    }

    /// The 32 bytes bound into the associated data: the peer ID, or all zeros for broadcast.
    var boundBytes: [UInt8] {
        switch self {
        case .peer(let id): return id.bytes
        case .broadcast: return SealedDatagram.broadcastRecipient
        }
    }
}

/// Sealed datagram layout (see docs/wire.md):
/// `version(1) ‖ addressing(1) ‖ nonce(24) ‖ timestamp(u64 BE, ms) ‖ XChaCha20-Poly1305(plaintext) ‖ tag(16)`;
/// associated data = the 34 header bytes ‖ the recipient's peer ID (32 zero bytes for broadcast).
///
/// Nonces are random: XChaCha20's 192-bit nonce makes a collision negligible however many
/// members share the key, and a cloned process or VM cannot repeat one, as it could a counter.
/// Replays are refused by a ``ReplayGuard`` on the nonce and the sender's timestamp.
public enum SealedDatagram {
    public static let version: UInt8 = 2
    public static let nonceLength = Int(crypto_aead_xchacha20poly1305_ietf_NPUBBYTES)
    public static let headerLength = 1 + 1 + nonceLength + 8
    public static let tagLength = Int(crypto_aead_xchacha20poly1305_ietf_ABYTES)
    /// Largest UDP payload over IPv4 (65,535 − 8 − 20).
    public static let maxLength = 65_507
    public static let maxPlaintextLength = maxLength - headerLength - tagLength
    /// What the associated data binds for a broadcast datagram in place of a peer ID.
    public static let broadcastRecipient = [UInt8](repeating: 0, count: PeerID.length)

    /// Parsed header of a sealed datagram.
    public struct Header: Equatable, Sendable {
        /// 1: to one peer; 2: broadcast.
        public var addressing: UInt8
        public var nonce: [UInt8]
        /// The sender's clock when sealing, ms since the Unix epoch.
        public var timestamp: UInt64
    }

    /// Decodes the header; total on any input.
    public static func decodeHeader(_ bytes: [UInt8]) throws(WireError) -> Header {
        guard bytes.count <= maxLength else { throw .lengthTooLarge(field: "datagram", declared: UInt64(bytes.count), maximum: maxLength) }
        var r = ByteReader(bytes)
        let v = try r.readUInt8("datagram version")
        guard v == version else { throw .unsupportedVersion(v) }
        let addressing = try r.readUInt8("datagram addressing")
        guard addressing == 1 || addressing == 2 else { throw .invalidValue(field: "datagram addressing", reason: "\(addressing), expected 1 (peer) or 2 (broadcast)") }
        let nonce = try r.readBytes(nonceLength, "datagram nonce")
        let timestamp = try r.readUInt64("datagram timestamp")
        guard r.remaining >= tagLength else { throw .truncated(field: "datagram tag", needed: tagLength, available: r.remaining) }
        return Header(addressing: addressing, nonce: nonce, timestamp: timestamp)
    }

    /// Associated data: the header bytes followed by the recipient's 32 bytes.
    static func associatedData(header: UnsafeRawBufferPointer, recipient: [UInt8]) -> [UInt8] {
        Array(header.assumingMemoryBound(to: UInt8.self)) + recipient
    }
}

/// Derives the datagram key for a network key.
func datagramKey(_ key: NetworkKey) throws -> SecureBytes { try key.deriveSubkey(.datagram) }

/// Seals outgoing datagrams under the current network key, each with a fresh random nonce.
/// Holds no counter, so copies are harmless.
public struct DatagramSealer: Sendable {
    private let key: SecureBytes

    public init(networkKey: NetworkKey) throws {
        try Sodium.require()
        self.key = try datagramKey(networkKey)
    }

    /// Seals `plaintext` (at most ``SealedDatagram/maxPlaintextLength`` bytes) for `recipient`
    /// at `now` (ms since the Unix epoch).
    public func seal(_ plaintext: some Collection<UInt8>, to recipient: DatagramRecipient, now: UInt64) throws(DatagramError) -> [UInt8] {
        var nonce = [UInt8](repeating: 0, count: SealedDatagram.nonceLength)
        randombytes_buf(&nonce, nonce.count)
        return try seal(plaintext, to: recipient, now: now, nonce: nonce)
    }

    /// Seals with a given nonce (test vectors only: a repeated nonce would break the cipher).
    func seal(_ plaintext: some Collection<UInt8>, to recipient: DatagramRecipient, now: UInt64, nonce: [UInt8]) throws(DatagramError) -> [UInt8] {
        guard plaintext.count <= SealedDatagram.maxPlaintextLength else {
            throw .tooLarge(plaintext.count, maximum: SealedDatagram.maxPlaintextLength)
        }
        var w = ByteWriter(capacity: SealedDatagram.headerLength + plaintext.count + SealedDatagram.tagLength)
        w.write(SealedDatagram.version)
        w.write(recipient.addressing)
        w.write(bytes: nonce)
        w.writeUInt64(now)
        var out = w.bytes
        let headerLength = out.count
        out.append(contentsOf: repeatElement(0, count: plaintext.count + SealedDatagram.tagLength))
        let ad = out.withUnsafeBytes { SealedDatagram.associatedData(header: UnsafeRawBufferPointer(rebasing: $0[..<headerLength]), recipient: recipient.boundBytes) }
        withContiguous(plaintext) { m in
            key.withUnsafeBytes { k in
                out.withUnsafeMutableBytes { o in
                    _ = crypto_aead_xchacha20poly1305_ietf_encrypt(o.u8 + headerLength, nil, m.u8, UInt64(m.count),
                                                                   ad, UInt64(ad.count), nil, nonce, k.u8)
                }
            }
        }
        return out
    }
}

/// Opens the datagrams addressed to one peer (or broadcast): tries each accepted network
/// key, refuses replays with a ``ReplayGuard`` recorded only after authentication, and
/// counts every refusal. One owner.
public final class DatagramOpener {
    /// Datagrams refused, by reason.
    public struct Refusals: Sendable, Equatable {
        public var malformed = 0
        public var authentication = 0
        public var replayed = 0
        public var stale = 0
        public var ahead = 0
        public var total: Int { malformed + authentication + replayed + stale + ahead }

        public init() {}
    }

    /// A datagram that opened.
    public struct Opened: Sendable {
        public var header: SealedDatagram.Header
        public var recipient: DatagramRecipient
        public var plaintext: [UInt8]
    }

    private var keys: [SecureBytes]
    /// The peer this opener receives for.
    public let localPeer: PeerID
    private let replayGuard: ReplayGuard
    public private(set) var refusals = Refusals()

    /// An opener for `localPeer`, refusing replays with `replayGuard` (one per node; see
    /// ``ReplayGuard/forDatagrams(startedAt:)``).
    public init(keyring: NetworkKeyring, localPeer: PeerID, replayGuard: ReplayGuard) throws {
        self.keys = try keyring.accepted.map(datagramKey)
        self.localPeer = localPeer
        self.replayGuard = replayGuard
    }

    /// An opener for `localPeer` that uses `other`'s derived keys (the keys live in secure
    /// memory, one mapping each: a simulation of thousands of peers in one process shares
    /// them instead of exhausting the kernel's map count).
    public init(sharingKeysWith other: DatagramOpener, localPeer: PeerID, replayGuard: ReplayGuard) {
        self.keys = other.keys
        self.localPeer = localPeer
        self.replayGuard = replayGuard
    }

    /// Follows a key rotation; the replay guard is kept.
    public func update(keyring: NetworkKeyring) throws {
        keys = try keyring.accepted.map(datagramKey)
    }

    /// Opens one datagram at local time `now` (ms since the Unix epoch). On any error nothing
    /// changes but the refusal count.
    public func open(_ bytes: [UInt8], now: UInt64) throws(DatagramError) -> Opened {
        do {
            return try attempt(bytes, now: now)
        } catch {
            switch error {
            case .malformed, .tooLarge: refusals.malformed += 1
            case .authenticationFailed: refusals.authentication += 1
            case .replayed(.replayed): refusals.replayed += 1
            case .replayed(.stale): refusals.stale += 1
            case .replayed(.ahead): refusals.ahead += 1
            }
            throw error
        }
    }

    private func attempt(_ bytes: [UInt8], now: UInt64) throws(DatagramError) -> Opened {
        let header: SealedDatagram.Header
        do { header = try SealedDatagram.decodeHeader(bytes) } catch { throw .malformed(error) }
        do { try replayGuard.check(key: header.nonce, timestamp: header.timestamp, now: now) } catch { throw .replayed(error) }
        let recipient: DatagramRecipient = header.addressing == 1 ? .peer(localPeer) : .broadcast
        let ad = bytes.withUnsafeBytes {
            SealedDatagram.associatedData(header: UnsafeRawBufferPointer(rebasing: $0[..<SealedDatagram.headerLength]), recipient: recipient.boundBytes)
        }
        let cipherLength = bytes.count - SealedDatagram.headerLength
        var plain = [UInt8](repeating: 0, count: cipherLength - SealedDatagram.tagLength)
        let opened = keys.contains { key in
            key.withUnsafeBytes { k in
                bytes.withUnsafeBytes { b in
                    plain.withUnsafeMutableBytes { p in
                        crypto_aead_xchacha20poly1305_ietf_decrypt(p.u8, nil, nil, b.u8 + SealedDatagram.headerLength, UInt64(cipherLength),
                                                                   ad, UInt64(ad.count), header.nonce, k.u8) == 0
                    }
                }
            }
        }
        guard opened else { throw .authenticationFailed }
        do { try replayGuard.record(key: header.nonce, timestamp: header.timestamp, now: now) } catch { throw .replayed(error) }
        return Opened(header: header, recipient: recipient, plaintext: plain)
    }
}

extension ReplayGuard {
    /// The guard of a node's datagram opener, made when the node starts at `now` (ms):
    /// datagrams sealed before the start are refused, so a restart does not reopen what the
    /// previous run accepted.
    public static func forDatagrams(startedAt now: UInt64) -> ReplayGuard {
        ReplayGuard(settings: .datagram, floor: now)
    }
}
