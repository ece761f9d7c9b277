import CSodium

/// One-time libsodium initialisation. Every public entry point of `Crypto` that
/// touches libsodium calls `Sodium.ensureInitialized()` first.
public enum Sodium {
    private static let initialized: Bool = sodium_init() >= 0

    /// Initialises libsodium once per process. Returns false only if libsodium cannot run here.
    @discardableResult
    public static func ensureInitialized() -> Bool { initialized }
}
