/// Errors raised by the cryptographic layer. Each message says what went wrong and,
/// where a person can fix it, how.
public enum CryptoError: Error, Equatable, Sendable, CustomStringConvertible {
    /// libsodium could not allocate secure memory.
    case outOfMemory
    /// A key, seed or signature had the wrong length.
    case invalidLength(what: String, expected: Int, actual: Int)
    /// A public key is not a canonical, prime-order Ed25519 point.
    case invalidPublicKey
    /// A signature did not verify.
    case badSignature
    /// Authenticated decryption failed: the data was altered, truncated, replayed or keyed differently.
    case authenticationFailed
    /// libsodium failed to initialise (`sodium_init`), so no random bytes or secure memory can be had.
    case libraryUnavailable
    /// A libsodium primitive reported failure (for example a small-order point in key exchange).
    case primitiveFailed(String)

    public var description: String {
        switch self {
        case .outOfMemory: return "libsodium could not allocate secure memory"
        case let .invalidLength(what, expected, actual): return "\(what) must be \(expected) bytes, got \(actual)"
        case .invalidPublicKey: return "public key is not a valid Ed25519 point"
        case .badSignature: return "signature does not verify"
        case .authenticationFailed: return "authentication failed (data altered, truncated, replayed or wrong key)"
        case .libraryUnavailable: return "libsodium failed to initialise (sodium_init); check that the system's random source (getrandom, /dev/urandom) is available"
        case let .primitiveFailed(name): return "\(name) failed"
        }
    }
}
