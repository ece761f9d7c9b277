import CSodium

/// The 32-byte secret every member of one network holds. It gates the handshake,
/// keys datagrams and beacons, and names the network (``id``) in signed envelopes.
public struct NetworkKey: Sendable {
    /// Length of a network key.
    public static let length = 32

    /// The key itself, outside Swift arrays.
    public let secret: SecureBytes
    /// Public name of the network: BLAKE2b-256 keyed by the network key over a fixed label.
    /// It reveals nothing about the key and lets envelopes say which network they belong to.
    public let id: [UInt8]

    /// Label hashed under the key to form ``id``.
    static let idLabel = Array("murmuration/network-id/v1".utf8)

    /// A fresh random key.
    public static func generate() throws -> NetworkKey {
        try NetworkKey(secret: SecureBytes.random(count: length))
    }

    /// A key held in secure memory (must be 32 bytes).
    public init(secret: SecureBytes) throws {
        guard secret.count == Self.length else {
            throw CryptoError.invalidLength(what: "network key", expected: Self.length, actual: secret.count)
        }
        self.secret = secret
        self.id = secret.withUnsafeBytes { Blake2b.keyedHash256(key: $0, parts: [Self.idLabel]) }
    }

    /// A key from raw bytes (tests and simulations; real keys come from files).
    public init(bytes: [UInt8]) throws {
        guard bytes.count == Self.length else {
            throw CryptoError.invalidLength(what: "network key", expected: Self.length, actual: bytes.count)
        }
        try self.init(secret: bytes.withUnsafeBytes { try SecureBytes(copying: $0) })
    }

    /// A 32-byte subkey for one purpose (`crypto_kdf_derive_from_key`, context `"murmurnk"`).
    /// Distinct `purpose` values give independent keys, so one network key can serve several uses.
    public func deriveSubkey(_ purpose: KeyPurpose) throws -> SecureBytes {
        try secret.withUnsafeBytes { master in
            try SecureBytes(count: Int(crypto_kdf_KEYBYTES)) { out in
                let rc = Self.kdfContext.withCString { ctx in
                    crypto_kdf_derive_from_key(out.u8, out.count, purpose.rawValue, ctx, master.u8)
                }
                guard rc == 0 else { throw CryptoError.primitiveFailed("crypto_kdf_derive_from_key") }
            }
        }
    }

    /// The 8-byte context libsodium's KDF requires: names the project, so keys never collide with another application's.
    static let kdfContext = "murmurnk"

    /// Constant-time equality of two keys.
    public func sameKey(as other: NetworkKey) -> Bool { secret.constantTimeEquals(other.secret) }
}

/// What a subkey derived from the network key is for (the KDF subkey id).
public struct KeyPurpose: RawRepresentable, Sendable, Hashable {
    public let rawValue: UInt64
    public init(rawValue: UInt64) { self.rawValue = rawValue }

    /// XChaCha20-Poly1305 key for UDP datagrams and beacons.
    public static let datagram = KeyPurpose(rawValue: 1)
}

/// The network keys a node accepts: the current one (used to send) and, during a rotation,
/// the previous one (still accepted on receive until every member has the new key).
public struct NetworkKeyring: Sendable {
    /// Key used for everything this node sends.
    public var current: NetworkKey
    /// Key still accepted on receive, if a rotation is under way.
    public var previous: NetworkKey?

    public init(current: NetworkKey, previous: NetworkKey? = nil) {
        self.current = current
        self.previous = previous
    }

    /// Current first, then previous.
    public var accepted: [NetworkKey] { previous.map { [current, $0] } ?? [current] }

    /// Makes `next` current and keeps the old current as previous.
    public mutating func rotate(to next: NetworkKey) {
        previous = current
        current = next
    }

    /// Stops accepting the previous key (once the rotation is complete).
    public mutating func dropPrevious() { previous = nil }

    /// True if `networkID` names one of the accepted keys.
    public func accepts(networkID: some Collection<UInt8>) -> Bool {
        accepted.contains { $0.id.elementsEqual(networkID) }
    }
}
