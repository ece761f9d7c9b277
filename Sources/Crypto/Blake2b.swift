import CSodium

/// BLAKE2b (libsodium `crypto_generichash`).
public enum Blake2b {
    /// Length of the 256-bit digest used for payload hashes, fingerprints and key derivation.
    public static let digest256Length = 32

    /// BLAKE2b-256 of `bytes`, unkeyed.
    public static func hash256(_ bytes: some Collection<UInt8>) -> [UInt8] {
        withContiguous(bytes) { hash256(raw: $0) }
    }

    /// BLAKE2b-256 of raw memory, unkeyed. libsodium fails only on an out-of-range digest or key
    /// length, and both are fixed here (32 bytes, no key), so there is no error to report.
    public static func hash256(raw bytes: UnsafeRawBufferPointer) -> [UInt8] {
        Sodium.prepare()
        var out = [UInt8](repeating: 0, count: digest256Length)
        let rc = out.withUnsafeMutableBytes { o in
            crypto_generichash(o.u8, o.count, bytes.baseAddress?.assumingMemoryBound(to: UInt8.self),
                               UInt64(bytes.count), nil, 0)
        }
        assert(rc == 0, "crypto_generichash with fixed parameters failed")
        return out
    }

    /// Keyed BLAKE2b-256 (`key` 16...64 bytes) over the concatenation of `parts`.
    /// Used for domain-separated derivations: the parts are hashed in order without separators,
    /// so callers length-prefix anything variable. Throws ``CryptoError/invalidLength(what:expected:actual:)``
    /// for a key outside 16...64 bytes.
    public static func keyedHash256(key: UnsafeRawBufferPointer, parts: [[UInt8]]) throws(CryptoError) -> [UInt8] {
        var hasher = try Hasher(key: key)
        for part in parts { hasher.update(part) }
        return try hasher.finalize()
    }

    /// Accepted key lengths of keyed BLAKE2b (`crypto_generichash_KEYBYTES_MIN...MAX`).
    public static let keyLengths = Int(crypto_generichash_KEYBYTES_MIN)...Int(crypto_generichash_KEYBYTES_MAX)

    /// Incremental BLAKE2b-256, for hashing a payload that arrives in chunks.
    /// The state lives in its own aligned allocation, wiped when the hasher ends.
    public struct Hasher: ~Copyable {
        private let state: UnsafeMutableRawPointer
        private let stateSize: Int
        private var finalized = false

        /// An unkeyed hasher (cannot fail: no key, fixed digest length).
        public init() {
            Sodium.prepare()
            stateSize = crypto_generichash_statebytes()
            state = UnsafeMutableRawPointer.allocate(byteCount: stateSize, alignment: 64)
            let rc = crypto_generichash_init(OpaquePointer(state), nil, 0, Blake2b.digest256Length)
            assert(rc == 0, "crypto_generichash_init with fixed parameters failed")
        }

        /// A keyed hasher; `key` must be 16...64 bytes (``Blake2b/keyLengths``), else the state
        /// would be left uninitialised: throws ``CryptoError/invalidLength(what:expected:actual:)``.
        public init(key: UnsafeRawBufferPointer) throws(CryptoError) {
            guard Blake2b.keyLengths.contains(key.count) else {
                throw .invalidLength(what: "BLAKE2b key", expected: Blake2b.keyLengths.upperBound, actual: key.count)
            }
            Sodium.prepare()
            let size = crypto_generichash_statebytes()
            // libsodium declares the state 64-byte aligned.
            let p = UnsafeMutableRawPointer.allocate(byteCount: size, alignment: 64)
            guard crypto_generichash_init(OpaquePointer(p), key.u8, key.count, Blake2b.digest256Length) == 0 else {
                sodium_memzero(p, size)
                p.deallocate()
                throw .primitiveFailed("crypto_generichash_init")
            }
            stateSize = size
            state = p
        }

        deinit {
            sodium_memzero(state, stateSize)
            state.deallocate()
        }

        /// Absorbs more bytes. After ``finalize()`` this has no effect (and a second finalize throws).
        public mutating func update(_ bytes: UnsafeRawBufferPointer) {
            guard !finalized else { return }
            _ = crypto_generichash_update(OpaquePointer(state), bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(bytes.count))
        }

        /// Absorbs more bytes.
        public mutating func update(_ bytes: some Collection<UInt8>) {
            withContiguous(bytes) { update($0) }
        }

        /// The digest. Only once: a second call (or absorbing afterwards) is refused.
        public mutating func finalize() throws(CryptoError) -> [UInt8] {
            guard !finalized else { throw .primitiveFailed("crypto_generichash_final (already finalized)") }
            finalized = true
            var out = [UInt8](repeating: 0, count: Blake2b.digest256Length)
            let rc = out.withUnsafeMutableBytes { crypto_generichash_final(OpaquePointer(state), $0.u8, $0.count) }
            guard rc == 0 else { throw .primitiveFailed("crypto_generichash_final") }
            return out
        }
    }
}

/// Runs `body` over the bytes of `collection` without copying when they are contiguous.
@inlinable
func withContiguous<R>(_ collection: some Collection<UInt8>, _ body: (UnsafeRawBufferPointer) throws -> R) rethrows -> R {
    if let r = try collection.withContiguousStorageIfAvailable({ try body(UnsafeRawBufferPointer($0)) }) {
        return r
    }
    return try Array(collection).withUnsafeBytes(body)
}

extension UnsafeRawBufferPointer {
    /// The start address as bytes, never nil: an empty buffer yields a valid dummy address,
    /// for libsodium parameters declared non-null even when the length is zero.
    @usableFromInline
    var u8: UnsafePointer<UInt8> {
        baseAddress?.assumingMemoryBound(to: UInt8.self) ?? UnsafePointer(emptyBytePointer)
    }
}

extension UnsafeMutableRawBufferPointer {
    /// The start address as bytes, never nil (see `UnsafeRawBufferPointer.u8`).
    @usableFromInline
    var u8: UnsafeMutablePointer<UInt8> {
        baseAddress?.assumingMemoryBound(to: UInt8.self) ?? emptyBytePointer
    }
}

/// One zero byte that is never written: the address passed for empty buffers.
@usableFromInline
nonisolated(unsafe) let emptyBytePointer: UnsafeMutablePointer<UInt8> = {
    let p = UnsafeMutablePointer<UInt8>.allocate(capacity: 1)
    p.initialize(to: 0)
    return p
}()
