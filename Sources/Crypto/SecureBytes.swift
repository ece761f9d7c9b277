import CSodium

/// A fixed-size buffer of secret bytes outside Swift's array storage.
///
/// The memory comes from `sodium_malloc` (guard pages, locked where the system allows)
/// and is wiped and released by `sodium_free` when the last reference goes away.
/// Instances are immutable after initialisation, so they are safe to share.
///
/// A simulated node's key protects nothing, and guarded allocations (several memory mappings
/// each) run out after some tens of thousands: ``Protection/unguarded`` keeps such a key in
/// ordinary heap memory, still wiped when released.
public final class SecureBytes: @unchecked Sendable {
    /// Where the bytes live.
    public enum Protection: Sendable {
        /// `sodium_malloc`: guard pages around the buffer, locked in memory where allowed.
        case guarded
        /// Ordinary heap memory, wiped on release: only for keys that protect nothing.
        case unguarded
    }

    /// Number of bytes held.
    public let count: Int
    private let pointer: UnsafeMutableRawPointer
    private let protection: Protection

    /// Allocates `count` bytes and lets `initialize` fill them once.
    /// Throws ``CryptoError/outOfMemory`` if the memory cannot be allocated.
    public init(count: Int, protection: Protection = .guarded, initialize: (UnsafeMutableRawBufferPointer) throws -> Void) throws {
        try Sodium.require()
        guard count > 0, let p = protection == .guarded ? sodium_malloc(count) : malloc(count) else { throw CryptoError.outOfMemory }
        self.count = count
        self.pointer = p
        self.protection = protection
        do {
            try initialize(UnsafeMutableRawBufferPointer(start: p, count: count))
        } catch {
            Self.release(p, count: count, protection)
            throw error
        }
    }

    private static func release(_ p: UnsafeMutableRawPointer, count: Int, _ protection: Protection) {
        switch protection {
        case .guarded: sodium_free(p)
        case .unguarded:
            sodium_memzero(p, count)
            free(p)
        }
    }

    /// `count` fresh random bytes.
    public static func random(count: Int) throws -> SecureBytes {
        try SecureBytes(count: count) { randombytes_buf(UnsafeMutableRawPointer($0.u8), $0.count) }
    }

    /// Copies `source` (which the caller should wipe afterwards if it was secret).
    public convenience init(copying source: UnsafeRawBufferPointer) throws {
        try self.init(count: source.count) { dst in
            dst.copyMemory(from: source)
        }
    }

    deinit { Self.release(pointer, count: count, protection) }

    /// Read access to the secret bytes. Do not let the pointer escape.
    public func withUnsafeBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
        try body(UnsafeRawBufferPointer(start: pointer, count: count))
    }

    /// Constant-time comparison with another secret of the same length.
    public func constantTimeEquals(_ other: SecureBytes) -> Bool {
        guard count == other.count else { return false }
        return withUnsafeBytes { a in other.withUnsafeBytes { b in sodium_memcmp(a.u8, b.u8, count) == 0 } }
    }
}

/// Wipes a Swift array that held secret material (best effort: copies made earlier are not reached).
@inlinable
public func wipe(_ bytes: inout [UInt8]) {
    bytes.withUnsafeMutableBytes { sodium_memzero($0.baseAddress, $0.count) }
}

/// Anything whose bytes can be read in place: public arrays and secret buffers alike,
/// so hashing and MAC helpers accept both without copying secrets into arrays.
public protocol ByteSource {
    func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R
}

extension Array: ByteSource where Element == UInt8 {
    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R { try withUnsafeBytes(body) }
}

extension ArraySlice: ByteSource where Element == UInt8 {
    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R { try withUnsafeBytes(body) }
}

extension SecureBytes: ByteSource {
    public func withBytes<R>(_ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R { try withUnsafeBytes(body) }
}
