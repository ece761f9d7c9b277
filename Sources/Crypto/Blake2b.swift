import CSodium

/// BLAKE2b (libsodium `crypto_generichash`).
public enum Blake2b {
    /// Length of the 256-bit digest used for payload hashes, fingerprints and key derivation.
    public static let digest256Length = 32

    /// BLAKE2b-256 of `bytes`, unkeyed.
    public static func hash256(_ bytes: some Collection<UInt8>) -> [UInt8] {
        withContiguous(bytes) { hash256(raw: $0) }
    }

    /// BLAKE2b-256 of raw memory, unkeyed.
    public static func hash256(raw bytes: UnsafeRawBufferPointer) -> [UInt8] {
        Sodium.ensureInitialized()
        var out = [UInt8](repeating: 0, count: digest256Length)
        out.withUnsafeMutableBytes { o in
            _ = crypto_generichash(o.u8, o.count,
                                   bytes.baseAddress?.assumingMemoryBound(to: UInt8.self),
                                   UInt64(bytes.count), nil, 0)
        }
        return out
    }

    /// Keyed BLAKE2b-256 (`key` 16...64 bytes) over the concatenation of `parts`.
    /// Used for domain-separated derivations: the parts are hashed in order without separators,
    /// so callers length-prefix anything variable.
    public static func keyedHash256(key: UnsafeRawBufferPointer, parts: [[UInt8]]) -> [UInt8] {
        var hasher = Hasher(key: key)
        for part in parts { hasher.update(part) }
        return hasher.finalize()
    }

    /// Incremental BLAKE2b-256, for hashing a payload that arrives in chunks.
    /// The state lives in its own aligned allocation, wiped when the hasher ends.
    public struct Hasher: ~Copyable {
        private let state: UnsafeMutableRawPointer
        private let stateSize: Int

        /// An unkeyed hasher.
        public init() { self.init(key: UnsafeRawBufferPointer(start: nil, count: 0)) }

        /// A keyed hasher (`key` empty or 16...64 bytes).
        public init(key: UnsafeRawBufferPointer) {
            Sodium.ensureInitialized()
            stateSize = crypto_generichash_statebytes()
            // libsodium declares the state 64-byte aligned.
            state = UnsafeMutableRawPointer.allocate(byteCount: stateSize, alignment: 64)
            _ = crypto_generichash_init(OpaquePointer(state), key.baseAddress?.assumingMemoryBound(to: UInt8.self),
                                        key.count, Blake2b.digest256Length)
        }

        deinit {
            sodium_memzero(state, stateSize)
            state.deallocate()
        }

        /// Absorbs more bytes.
        public mutating func update(_ bytes: UnsafeRawBufferPointer) {
            _ = crypto_generichash_update(OpaquePointer(state), bytes.baseAddress?.assumingMemoryBound(to: UInt8.self), UInt64(bytes.count))
        }

        /// Absorbs more bytes.
        public mutating func update(_ bytes: some Collection<UInt8>) {
            withContiguous(bytes) { update($0) }
        }

        /// The digest. Absorbing more afterwards is not allowed.
        public mutating func finalize() -> [UInt8] {
            var out = [UInt8](repeating: 0, count: Blake2b.digest256Length)
            out.withUnsafeMutableBytes { _ = crypto_generichash_final(OpaquePointer(state), $0.u8, $0.count) }
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
