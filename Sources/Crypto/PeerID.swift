import CSodium

/// A peer's identity on the network: its 32-byte Ed25519 public key.
///
/// `description` is the key in lowercase hex (64 characters); ``fingerprint`` is a
/// short form for logs (first 8 hex characters of the key's BLAKE2b-256).
public struct PeerID: Hashable, Comparable, Sendable, CustomStringConvertible {
    /// Length of an Ed25519 public key.
    public static let length = 32

    /// The raw public key.
    public let bytes: [UInt8]

    /// A peer ID from exactly 32 bytes; nil for any other length.
    /// The bytes are not checked to be a valid curve point: see ``isValidPublicKey``.
    public init?(bytes: some Collection<UInt8>) {
        guard bytes.count == Self.length else { return nil }
        self.bytes = Array(bytes)
    }

    /// Parses the 64-character hex form printed by `description`.
    public init?(hex: String) {
        guard let raw = Hex.decode(hex) else { return nil }
        self.init(bytes: raw)
    }

    /// Lowercase hex of the key.
    public var description: String { Hex.encode(bytes) }

    /// Short form for logs: first 8 hex characters of BLAKE2b-256 of the key.
    public var fingerprint: String { String(Hex.encode(Blake2b.hash256(bytes)).prefix(8)) }

    /// True if the key is a canonical Ed25519 point of prime order (not small-order, not
    /// non-canonical). Signatures from other keys never verify anyway; this lets decoders
    /// reject such keys early.
    public var isValidPublicKey: Bool {
        Sodium.ensureInitialized()
        return bytes.withUnsafeBufferPointer { crypto_core_ed25519_is_valid_point(UnsafeRawBufferPointer($0).u8) == 1 }
    }

    public static func < (a: PeerID, b: PeerID) -> Bool { a.bytes.lexicographicallyPrecedes(b.bytes) }

    /// Verifies a 64-byte detached Ed25519 signature over `message` (strict libsodium rules:
    /// canonical signatures, no small-order keys or R).
    public func verify(signature: some Collection<UInt8>, message: some Collection<UInt8>) -> Bool {
        withContiguous(message) { verify(signature: signature, message: $0) }
    }

    /// Verifies a detached signature over raw memory.
    public func verify(signature: some Collection<UInt8>, message: UnsafeRawBufferPointer) -> Bool {
        Sodium.ensureInitialized()
        guard signature.count == Int(crypto_sign_BYTES) else { return false }
        return withContiguous(signature) { sig in
            bytes.withUnsafeBufferPointer { pk in
                crypto_sign_verify_detached(sig.u8, message.u8, UInt64(message.count), UnsafeRawBufferPointer(pk).u8) == 0
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
