import CSodium

/// A peer's identity on the network: its 32-byte Ed25519 public key.
///
/// The key is stored inline as four words (no heap allocation per ID), hashed word by word
/// and ordered lexicographically over its bytes. `description` is the key in lowercase hex
/// (64 characters); ``fingerprint`` is a short form for logs (first 8 hex characters of the
/// key's BLAKE2b-256).
public struct PeerID: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// Length of an Ed25519 public key.
    public static let length = 32

    /// The key's bytes in order, as four words in memory order (not host-endian values):
    /// their memory is exactly the 32 key bytes.
    @usableFromInline let words: (UInt64, UInt64, UInt64, UInt64)

    /// The raw public key (a fresh array; hot paths use ``withUnsafeBytes(_:)``).
    public var bytes: [UInt8] { withUnsafeBytes(Array.init) }

    /// A peer ID from exactly 32 bytes; nil for any other length.
    /// The bytes are not checked to be a valid curve point: see ``isValidPublicKey``.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == Self.length else { return nil }
        var inline: (UInt64, UInt64, UInt64, UInt64) = (0, 0, 0, 0)
        Swift.withUnsafeMutableBytes(of: &inline) { out in
            withContiguous(bytes) { out.copyMemory(from: $0) }
        }
        words = inline
    }

    /// Parses the 64-character hex form printed by `description`.
    public init?(hex: String) {
        guard let raw = Hex.decode(hex) else { return nil }
        self.init(bytes: raw)
    }

    /// Runs `body` over the 32 key bytes without allocating.
    public func withUnsafeBytes<R, E: Error>(_ body: (UnsafeRawBufferPointer) throws(E) -> R) throws(E) -> R {
        var copy = words
        return try Swift.withUnsafeBytes(of: &copy) { (raw) throws(E) -> R in try body(raw) }
    }

    /// Lowercase hex of the key.
    public var description: String { withUnsafeBytes { Hex.encode($0) } }

    /// Short form for logs: first 8 hex characters of BLAKE2b-256 of the key.
    public var fingerprint: String { String(Hex.encode(withUnsafeBytes { Blake2b.hash256(raw: $0) }).prefix(8)) }

    /// True if the key is a canonical Ed25519 point of prime order (not small-order, not
    /// non-canonical). Signatures from other keys never verify anyway; this lets decoders
    /// reject such keys early.
    public var isValidPublicKey: Bool {
        Sodium.prepare()
        return withUnsafeBytes { crypto_core_ed25519_is_valid_point($0.u8) == 1 }
    }

    @inlinable
    public static func == (a: PeerID, b: PeerID) -> Bool {
        a.words.0 == b.words.0 && a.words.1 == b.words.1 && a.words.2 == b.words.2 && a.words.3 == b.words.3
    }

    /// Combines all four words: the key is uniformly random and `Hasher` is seeded per
    /// process, so this is as good as hashing the 32 bytes one by one, with four combines.
    public func hash(into hasher: inout Hasher) {
        hasher.combine(words.0)
        hasher.combine(words.1)
        hasher.combine(words.2)
        hasher.combine(words.3)
    }

    /// Lexicographic order over the key bytes: the first word that differs, read big-endian,
    /// decides. Inlinable, with `==`: per-peer tables search by peer on every message.
    @inlinable
    public static func < (a: PeerID, b: PeerID) -> Bool {
        if a.words.0 != b.words.0 { return a.words.0.bigEndian < b.words.0.bigEndian }
        if a.words.1 != b.words.1 { return a.words.1.bigEndian < b.words.1.bigEndian }
        if a.words.2 != b.words.2 { return a.words.2.bigEndian < b.words.2.bigEndian }
        return a.words.3.bigEndian < b.words.3.bigEndian
    }

    /// Verifies a 64-byte detached Ed25519 signature over `message` (strict libsodium rules:
    /// canonical signatures, no small-order keys or R).
    public func verify(signature: some Collection<UInt8>, message: some Collection<UInt8>) -> Bool {
        withContiguous(message) { verify(signature: signature, message: $0) }
    }

    /// Verifies a detached signature over raw memory.
    public func verify(signature: some Collection<UInt8>, message: UnsafeRawBufferPointer) -> Bool {
        Sodium.prepare()
        guard signature.count == Int(crypto_sign_BYTES) else { return false }
        return withContiguous(signature) { sig in
            withUnsafeBytes { pk in
                crypto_sign_verify_detached(sig.u8, message.u8, UInt64(message.count), pk.u8) == 0
            }
        }
    }
}

/// Lowercase hexadecimal encoding, used for printable keys and test vectors.
public enum Hex {
    private static let digits = Array("0123456789abcdef".utf8)

    /// Lowercase hex of `bytes`.
    public static func encode(_ bytes: some Collection<UInt8>) -> String {
        var out = [UInt8]()
        out.reserveCapacity(bytes.count * 2)
        for b in bytes {
            out.append(digits[Int(b >> 4)])
            out.append(digits[Int(b & 0x0f)])
        }
        return String(decoding: out, as: UTF8.self)
    }

    /// Bytes from hex (either case, whitespace ignored); nil if malformed.
    public static func decode(_ text: String) -> [UInt8]? {
        var out = [UInt8]()
        var high: UInt8? = nil
        for c in text.utf8 {
            let v: UInt8
            switch c {
            case UInt8(ascii: "0")...UInt8(ascii: "9"): v = c - UInt8(ascii: "0")
            case UInt8(ascii: "a")...UInt8(ascii: "f"): v = c - UInt8(ascii: "a") + 10
            case UInt8(ascii: "A")...UInt8(ascii: "F"): v = c - UInt8(ascii: "A") + 10
            case UInt8(ascii: " "), UInt8(ascii: "\n"), UInt8(ascii: "\t"): continue
            default: return nil
            }
            if let h = high { out.append(h << 4 | v); high = nil } else { high = v }
        }
        return high == nil ? out : nil
    }
}
