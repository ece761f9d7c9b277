import CSodium

/// WireGuard's sliding replay window (RFC 6479 bitmap, as in wireguard-go): a ring of
/// 64-bit blocks; counters more than ``size`` behind the highest accepted one are refused.
public struct ReplayWindow: Sendable, Hashable {
    /// Blocks in the ring. 128 × 64 bits, one block kept free for sliding: window of 8,128
    /// counters, WireGuard's value, enough for a burst of reordering at gigabit rates.
    public static let blocks = 128
    /// Counters accepted behind the highest one seen.
    public static let size = (blocks - 1) * 64

    private var ring = [UInt64](repeating: 0, count: ReplayWindow.blocks)
    /// Highest counter accepted so far (0 before any).
    public private(set) var highest: UInt64 = 0

    public init() {}

    /// True if `counter` would be accepted (not seen, not too old). Does not change the window.
    public func wouldAccept(_ counter: UInt64) -> Bool {
        if counter > highest { return true }
        if highest - counter > UInt64(Self.size) { return false }
        let block = Int((counter >> 6) & UInt64(Self.blocks - 1))
        return ring[block] & (1 << (counter & 63)) == 0
    }

    /// Records `counter`; false (and no change) if it is a replay or too old.
    /// Call only after the datagram authenticated.
    @discardableResult
    public mutating func accept(_ counter: UInt64) -> Bool {
        guard wouldAccept(counter) else { return false }
        let index = counter >> 6
        if counter > highest {
            let current = highest >> 6
            let diff = min(index - current, UInt64(Self.blocks))
            var i: UInt64 = 1
            while i <= diff {
                ring[Int((current + i) & UInt64(Self.blocks - 1))] = 0
                i += 1
            }
            highest = counter
        }
        ring[Int(index & UInt64(Self.blocks - 1))] |= 1 << (counter & 63)
        return true
    }
}

/// Errors opening a datagram. None of them changes any state.
public enum DatagramError: Error, Equatable, Sendable, CustomStringConvertible {
    case malformed(WireError)
    /// Already received, or older than the replay window.
    case replayed(counter: UInt64)
    /// Did not authenticate under any accepted network key.
    case authenticationFailed
    /// The plaintext is larger than a datagram may carry.
    case tooLarge(Int, maximum: Int)
    /// This sender's counter is exhausted (after 2^64 - 1 datagrams).
    case counterExhausted

    public var description: String {
        switch self {
        case let .malformed(e): return "datagram: \(e)"
        case let .replayed(c): return "datagram: counter \(c) replayed or too old"
        case .authenticationFailed: return "datagram: authentication failed"
        case let .tooLarge(n, max): return "datagram: \(n) bytes exceed \(max)"
        case .counterExhausted: return "datagram: counter exhausted"
        }
    }
}

/// Sealed datagram layout (see docs/wire.md):
/// `version(1) ‖ sender(16) ‖ counter(u64 BE) ‖ XChaCha20-Poly1305(plaintext) ‖ tag(16)`;
/// nonce = sender ‖ counter; associated data = the 25 header bytes.
public enum SealedDatagram {
    public static let version: UInt8 = 1
    /// Random per-sender tag: with the counter it forms the nonce, so senders sharing the
    /// network key never reuse a nonce, and it selects the receiver's replay window.
    public static let senderLength = 16
    public static let headerLength = 1 + senderLength + 8
    public static let tagLength = Int(crypto_aead_xchacha20poly1305_ietf_ABYTES)
    /// Largest UDP payload over IPv4 (65,535 − 8 − 20).
    public static let maxLength = 65_507
    public static let maxPlaintextLength = maxLength - headerLength - tagLength

    /// Parsed header of a sealed datagram.
    public struct Header: Equatable, Sendable {
        public var sender: [UInt8]
        public var counter: UInt64
    }

    /// Decodes the header; total on any input.
    public static func decodeHeader(_ bytes: [UInt8]) throws(WireError) -> Header {
        guard bytes.count <= maxLength else { throw .lengthTooLarge(field: "datagram", declared: UInt64(bytes.count), maximum: maxLength) }
        var r = ByteReader(bytes)
        let v = try r.readUInt8("datagram version")
        guard v == version else { throw .unsupportedVersion(v) }
        let sender = try r.readBytes(senderLength, "datagram sender")
        let counter = try r.readUInt64("datagram counter")
        guard r.remaining >= tagLength else { throw .truncated(field: "datagram tag", needed: tagLength, available: r.remaining) }
        return Header(sender: sender, counter: counter)
    }
}

/// Derives the datagram key for a network key.
func datagramKey(_ key: NetworkKey) throws -> SecureBytes { try key.deriveSubkey(.datagram) }

/// Seals outgoing datagrams under the current network key with counter nonces.
public struct DatagramSealer: Sendable {
    private let key: SecureBytes
    /// This sender's random tag (see ``SealedDatagram/senderLength``).
    public let sender: [UInt8]
    /// The counter the next datagram will carry.
    public private(set) var nextCounter: UInt64

    /// A sealer with a fresh random sender tag.
    public init(networkKey: NetworkKey) throws {
        var tag = [UInt8](repeating: 0, count: SealedDatagram.senderLength)
        randombytes_buf(&tag, tag.count)
        try self.init(networkKey: networkKey, sender: tag, firstCounter: 0)
    }

    /// A sealer with a given sender tag and counter (simulations and test vectors).
    public init(networkKey: NetworkKey, sender: [UInt8], firstCounter: UInt64) throws {
        guard sender.count == SealedDatagram.senderLength else {
            throw CryptoError.invalidLength(what: "datagram sender tag", expected: SealedDatagram.senderLength, actual: sender.count)
        }
        self.key = try datagramKey(networkKey)
        self.sender = sender
        self.nextCounter = firstCounter
    }

    /// Seals `plaintext` (at most ``SealedDatagram/maxPlaintextLength`` bytes).
    public mutating func seal(_ plaintext: some Collection<UInt8>) throws(DatagramError) -> [UInt8] {
        guard plaintext.count <= SealedDatagram.maxPlaintextLength else {
            throw .tooLarge(plaintext.count, maximum: SealedDatagram.maxPlaintextLength)
        }
        guard nextCounter < UInt64.max else { throw .counterExhausted }
        let counter = nextCounter
        nextCounter += 1
        var w = ByteWriter(capacity: SealedDatagram.headerLength + plaintext.count + SealedDatagram.tagLength)
        w.write(SealedDatagram.version)
        w.write(bytes: sender)
        w.writeUInt64(counter)
        var out = w.bytes
        let headerLength = out.count
        out.append(contentsOf: repeatElement(0, count: plaintext.count + SealedDatagram.tagLength))
        let nonce = sender + Self.counterBytes(counter)
        withContiguous(plaintext) { m in
            key.withUnsafeBytes { k in
                out.withUnsafeMutableBytes { o in
                    _ = crypto_aead_xchacha20poly1305_ietf_encrypt(o.u8 + headerLength, nil, m.u8, UInt64(m.count),
                                                                   o.u8, UInt64(headerLength), nil, nonce, k.u8)
                }
            }
        }
        return out
    }

    static func counterBytes(_ c: UInt64) -> [UInt8] { (0..<8).map { UInt8(truncatingIfNeeded: c >> (8 * (7 - $0))) } }
}

/// Opens datagrams from many senders: tries each accepted network key and keeps a replay
/// window per sender tag, updated only after authentication succeeded.
public struct DatagramOpener: Sendable {
    /// Sender tags tracked at once. A node hears from its partial view plus transient peers;
    /// 4,096 windows × 1 KiB bound memory to 4 MiB. When full, the stalest window is dropped
    /// (its sender's very old datagrams could then replay once; see docs/security.md).
    public static let defaultMaxSenders = 4_096

    private var keys: [SecureBytes]
    private var windows: [[UInt8]: (window: ReplayWindow, lastUse: UInt64)] = [:]
    private var useClock: UInt64 = 0
    public let maxSenders: Int

    public init(keyring: NetworkKeyring, maxSenders: Int = DatagramOpener.defaultMaxSenders) throws {
        self.keys = try keyring.accepted.map(datagramKey)
        self.maxSenders = max(1, maxSenders)
    }

    /// Follows a key rotation; replay windows are kept.
    public mutating func update(keyring: NetworkKeyring) throws {
        keys = try keyring.accepted.map(datagramKey)
    }

    /// Opens one datagram. On any error nothing changes.
    public mutating func open(_ bytes: [UInt8]) throws(DatagramError) -> (header: SealedDatagram.Header, plaintext: [UInt8]) {
        let header: SealedDatagram.Header
        do { header = try SealedDatagram.decodeHeader(bytes) } catch { throw .malformed(error) }
        if let known = windows[header.sender], !known.window.wouldAccept(header.counter) {
            throw .replayed(counter: header.counter)
        }
        let nonce = header.sender + DatagramSealer.counterBytes(header.counter)
        let cipherLength = bytes.count - SealedDatagram.headerLength
        var plain = [UInt8](repeating: 0, count: cipherLength - SealedDatagram.tagLength)
        let opened = keys.contains { key in
            key.withUnsafeBytes { k in
                bytes.withUnsafeBytes { b in
                    plain.withUnsafeMutableBytes { p in
                        crypto_aead_xchacha20poly1305_ietf_decrypt(p.u8, nil, nil, b.u8 + SealedDatagram.headerLength, UInt64(cipherLength),
                                                                   b.u8, UInt64(SealedDatagram.headerLength), nonce, k.u8) == 0
                    }
                }
            }
        }
        guard opened else { throw .authenticationFailed }
        useClock += 1
        var entry = windows[header.sender] ?? (ReplayWindow(), 0)
        entry.window.accept(header.counter)
        entry.lastUse = useClock
        if windows[header.sender] == nil && windows.count >= maxSenders,
           let stalest = windows.min(by: { $0.value.lastUse < $1.value.lastUse })?.key {
            windows[stalest] = nil
        }
        windows[header.sender] = entry
        return (header, plain)
    }
}
