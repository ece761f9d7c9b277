import CSodium

/// A peer's long-term Ed25519 signing key. The secret key lives in ``SecureBytes``.
public struct Identity: Sendable {
    /// Length of the seed an identity is derived from.
    public static let seedLength = 32
    /// Length of a detached Ed25519 signature.
    public static let signatureLength = 64

    /// The public half: this peer's ID.
    public let peerID: PeerID
    /// libsodium's 64-byte Ed25519 secret key (seed ‖ public key).
    let secretKey: SecureBytes

    /// A fresh random identity. The seed is drawn straight into secure memory.
    /// Throws ``CryptoError/outOfMemory`` if libsodium cannot allocate it.
    public static func generate() throws -> Identity {
        let seed = try SecureBytes.random(count: seedLength)
        return try seed.withUnsafeBytes { try Identity(seed: $0) }
    }

    /// The identity derived deterministically from a 32-byte seed (RFC 8032 private key).
    public init(seed: [UInt8]) throws {
        guard seed.count == Self.seedLength else {
            throw CryptoError.invalidLength(what: "identity seed", expected: Self.seedLength, actual: seed.count)
        }
        self = try seed.withUnsafeBytes { try Identity(seed: $0) }
    }

    /// The identity of a simulated node, derived from `seed` like ``init(seed:)`` but with its
    /// secret key in ordinary memory (``SecureBytes/Protection/unguarded``), so a million fit in
    /// one process. Never for a real peer's key.
    public static func simulated(seed: [UInt8]) throws -> Identity {
        guard seed.count == Self.seedLength else {
            throw CryptoError.invalidLength(what: "identity seed", expected: Self.seedLength, actual: seed.count)
        }
        return try seed.withUnsafeBytes { try Identity(seed: $0, protection: .unguarded) }
    }

    /// The identity derived from a seed held in raw (possibly secure) memory.
    public init(seed: UnsafeRawBufferPointer) throws {
        try self.init(seed: seed, protection: .guarded)
    }

    private init(seed: UnsafeRawBufferPointer, protection: SecureBytes.Protection) throws {
        try Sodium.require()
        guard seed.count == Self.seedLength else {
            throw CryptoError.invalidLength(what: "identity seed", expected: Self.seedLength, actual: seed.count)
        }
        var pk = [UInt8](repeating: 0, count: PeerID.length)
        let sk = try SecureBytes(count: Int(crypto_sign_SECRETKEYBYTES), protection: protection) { sk in
            guard crypto_sign_seed_keypair(&pk, sk.u8, seed.u8) == 0 else {
                throw CryptoError.primitiveFailed("crypto_sign_seed_keypair")
            }
        }
        guard let id = PeerID(bytes: pk) else { throw CryptoError.primitiveFailed("crypto_sign_seed_keypair") }
        self.peerID = id
        self.secretKey = sk
    }

    /// A 64-byte detached signature over `message`.
    public func sign(_ message: [UInt8]) -> [UInt8] {
        message.withUnsafeBytes { sign(raw: $0) }
    }

    /// A 64-byte detached signature over raw memory.
    public func sign(raw message: UnsafeRawBufferPointer) -> [UInt8] {
        var sig = [UInt8](repeating: 0, count: Self.signatureLength)
        secretKey.withUnsafeBytes { sk in
            _ = crypto_sign_detached(&sig, nil, message.u8, UInt64(message.count), sk.u8)
        }
        return sig
    }

    /// Runs `body` with the 32-byte seed (the first half of the secret key), e.g. to write a key file.
    func withSeed<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try secretKey.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0.prefix(Self.seedLength))) }
    }
}
