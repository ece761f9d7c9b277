import CSodium

/// One-time libsodium initialisation. Every entry point of `Crypto` that touches libsodium
/// goes through it first; those that draw random bytes or secure memory require it to
/// have succeeded (``require()``), the others only warm it up (``prepare()``).
public enum Sodium {
    private static let initialized: Bool = sodium_init() >= 0

    /// Initialises libsodium once per process; true if it can run here.
    public static var isAvailable: Bool { initialized }

    /// Initialises libsodium once per process, for functions that stay correct without it
    /// (their default implementations are used). Never fails.
    public static func prepare() { _ = initialized }

    /// Initialises libsodium once per process and throws if it failed: random bytes and
    /// secure memory must not be used then.
    public static func require() throws(CryptoError) {
        guard initialized else { throw .libraryUnavailable }
    }
}
