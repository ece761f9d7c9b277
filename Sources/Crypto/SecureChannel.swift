import CSodium

/// Limits and timing of a secure channel.
public struct SecureChannelSettings: Sendable, Hashable {
    /// Largest plaintext in one frame. 1 MiB keeps a receiver's buffer small while large
    /// deltas travel as a sequence of chunks.
    public var maxPlaintextLength: Int = 1 << 20
    /// The sender rekeys (TAG_REKEY) after this many messages, so a key never protects an
    /// unbounded amount of data; 4,096 frames of up to 1 MiB bound a key to 4 GiB.
    public var rekeyAfterMessages: Int = 4_096

    public init() {}

    /// Largest ciphertext a frame may declare.
    public var maxCiphertextLength: Int { maxPlaintextLength + SecureChannel.overhead }
}

/// Errors of a secure channel.
public enum SecureChannelError: Error, Equatable, Sendable, CustomStringConvertible {
    /// A frame did not authenticate: dropped, duplicated, reordered, altered or wrongly keyed.
    case authenticationFailed
    /// The stream ended without an authenticated end marker (FINAL tag).
    case truncated
    /// A frame arrived after the end marker.
    case afterEnd
    /// The frame header was malformed or declared too large a length.
    case malformed(WireError)
    /// The message is larger than the settings allow.
    case messageTooLarge(Int, maximum: Int)
    /// The stream header was malformed.
    case badHeader
    /// Secure memory could not be allocated.
    case outOfMemory
    /// The code consuming an opened frame failed (its error, described).
    case consumer(String)
    /// An earlier frame failed; the receiver stays closed (fail closed).
    case closedAfterFailure

    public var description: String {
        switch self {
        case .authenticationFailed: return "secure channel: frame failed authentication (dropped, duplicated, reordered or altered)"
        case .truncated: return "secure channel: stream ended without its end marker (truncated)"
        case .afterEnd: return "secure channel: data after the end marker"
        case let .malformed(e): return "secure channel: \(e)"
        case let .messageTooLarge(n, max): return "secure channel: message of \(n) bytes exceeds \(max)"
        case .badHeader: return "secure channel: invalid stream header"
        case .outOfMemory: return "secure channel: out of secure memory"
        case let .consumer(e): return "secure channel: \(e)"
        case .closedAfterFailure: return "secure channel: closed after an earlier frame failed; close the connection"
        }
    }
}

/// Framing of the post-handshake byte stream:
/// first each side sends its 24-byte `crypto_secretstream` header, then frames
/// `length(u32 BE) ‖ ciphertext(length bytes)` where the 4 length bytes are the associated data.
public enum SecureChannel {
    /// Bytes of the stream header sent once at the start of each direction.
    public static let headerLength = Int(crypto_secretstream_xchacha20poly1305_HEADERBYTES)
    /// Bytes a frame's ciphertext adds to its plaintext (tag byte + MAC).
    public static let overhead = Int(crypto_secretstream_xchacha20poly1305_ABYTES)
    /// Bytes of the frame length prefix.
    public static let lengthPrefix = 4

    /// Reads the 4-byte length prefix and checks it against `settings` before anything is allocated.
    /// Returns the ciphertext length that follows.
    public static func frameLength(prefix: some Collection<UInt8>, settings: SecureChannelSettings) throws(SecureChannelError) -> Int {
        var r = ByteReader(prefix)
        let n: UInt32
        do { n = try r.readUInt32("frame length") } catch { throw .malformed(error) }
        guard Int(n) >= overhead else { throw .malformed(.invalidValue(field: "frame length", reason: "shorter than the tag")) }
        guard Int(n) <= settings.maxCiphertextLength else {
            throw .malformed(.lengthTooLarge(field: "frame", declared: UInt64(n), maximum: settings.maxCiphertextLength))
        }
        return Int(n)
    }
}

/// libsodium secretstream state in secure memory, wiped when released.
final class StreamState {
    let pointer: UnsafeMutablePointer<crypto_secretstream_xchacha20poly1305_state>

    init() throws(SecureChannelError) {
        guard Sodium.isAvailable, let raw = sodium_malloc(MemoryLayout<crypto_secretstream_xchacha20poly1305_state>.size) else { throw .outOfMemory }
        pointer = raw.bindMemory(to: crypto_secretstream_xchacha20poly1305_state.self, capacity: 1)
    }

    deinit { sodium_free(pointer) }
}

/// The sending half of a secure channel (one direction). Not thread-safe; one owner.
public final class SecureChannelSender {
    private let state: StreamState
    /// The stream header to send before the first frame.
    public let header: [UInt8]
    public let settings: SecureChannelSettings
    private var messagesSinceRekey = 0
    private var finished = false
    private var scratch: [UInt8] = []

    /// Starts a stream under `key` (32 bytes, from ``HandshakeResult/sendKey``).
    public init(key: SecureBytes, settings: SecureChannelSettings = .init()) throws(SecureChannelError) {
        guard key.count == Int(crypto_secretstream_xchacha20poly1305_KEYBYTES) else { throw .badHeader }
        let s = try StreamState()
        var h = [UInt8](repeating: 0, count: SecureChannel.headerLength)
        let rc = key.withUnsafeBytes { k in crypto_secretstream_xchacha20poly1305_init_push(s.pointer, &h, k.u8) }
        guard rc == 0 else { throw .badHeader }
        state = s
        self.settings = settings
        header = h
    }

    /// One frame carrying `message`. Every `rekeyAfterMessages` frames carry the REKEY tag.
    public func seal(_ message: some Collection<UInt8>) throws(SecureChannelError) -> [UInt8] {
        guard !finished else { throw .afterEnd }
        return try frame(message, tag: nextTag())
    }

    /// The last frame, carrying the authenticated end marker (FINAL tag). Nothing may follow.
    public func finish(_ message: some Collection<UInt8> = [UInt8]()) throws(SecureChannelError) -> [UInt8] {
        guard !finished else { throw .afterEnd }
        finished = true
        return try frame(message, tag: UInt8(crypto_secretstream_xchacha20poly1305_TAG_FINAL))
    }

    /// One frame whose `length`-byte plaintext is written by `fill` into a buffer the sender
    /// reuses, so large messages (delta chunks) are encrypted without intermediate copies.
    public func seal(length: Int, fill: (UnsafeMutableRawBufferPointer) throws -> Void) throws -> [UInt8] {
        guard !finished else { throw SecureChannelError.afterEnd }
        guard length >= 0, length <= settings.maxPlaintextLength else {
            throw SecureChannelError.messageTooLarge(length, maximum: settings.maxPlaintextLength)
        }
        if scratch.count < length { scratch = [UInt8](repeating: 0, count: length) }
        try scratch.withUnsafeMutableBytes { try fill(UnsafeMutableRawBufferPointer(rebasing: $0.prefix(length))) }
        let tag = nextTag()
        return scratch.withUnsafeBytes { frame(UnsafeRawBufferPointer(rebasing: $0.prefix(length)), tag: tag) }
    }

    /// The tag of the next ordinary frame: REKEY every `rekeyAfterMessages` frames, else MESSAGE.
    private func nextTag() -> UInt8 {
        messagesSinceRekey += 1
        guard messagesSinceRekey >= settings.rekeyAfterMessages else { return UInt8(crypto_secretstream_xchacha20poly1305_TAG_MESSAGE) }
        messagesSinceRekey = 0
        return UInt8(crypto_secretstream_xchacha20poly1305_TAG_REKEY)
    }

    private func frame(_ message: some Collection<UInt8>, tag: UInt8) throws(SecureChannelError) -> [UInt8] {
        guard message.count <= settings.maxPlaintextLength else {
            throw .messageTooLarge(message.count, maximum: settings.maxPlaintextLength)
        }
        return withContiguous(message) { frame($0, tag: tag) }
    }

    private func frame(_ m: UnsafeRawBufferPointer, tag: UInt8) -> [UInt8] {
        let cipherLength = m.count + SecureChannel.overhead
        return [UInt8](unsafeUninitializedCapacity: SecureChannel.lengthPrefix + cipherLength) { o, initialized in
            let length = UInt32(cipherLength)
            for i in 0..<4 { o[i] = UInt8(truncatingIfNeeded: length >> (8 * (3 - i))) }
            let raw = UnsafeMutableRawBufferPointer(o)
            let ad = UnsafeRawBufferPointer(rebasing: raw.prefix(SecureChannel.lengthPrefix))
            _ = crypto_secretstream_xchacha20poly1305_push(state.pointer, raw.u8 + SecureChannel.lengthPrefix, nil,
                                                           m.u8, UInt64(m.count), ad.u8, UInt64(ad.count), tag)
            initialized = o.count
        }
    }
}

/// The receiving half of a secure channel (one direction).
public final class SecureChannelReceiver {
    private let state: StreamState
    public let settings: SecureChannelSettings
    /// True once the authenticated end marker arrived.
    public private(set) var isFinished = false
    /// True once a frame failed: every later frame is refused.
    public private(set) var hasFailed = false
    private var scratch: [UInt8] = []

    /// Starts receiving under `key` (``HandshakeResult/receiveKey``) with the peer's stream header.
    public init(key: SecureBytes, header: [UInt8], settings: SecureChannelSettings = .init()) throws(SecureChannelError) {
        guard header.count == SecureChannel.headerLength,
              key.count == Int(crypto_secretstream_xchacha20poly1305_KEYBYTES) else { throw .badHeader }
        let s = try StreamState()
        let rc = key.withUnsafeBytes { k in crypto_secretstream_xchacha20poly1305_init_pull(s.pointer, header, k.u8) }
        guard rc == 0 else { throw .badHeader }
        state = s
        self.settings = settings
    }

    /// Opens one whole frame (length prefix included). A frame that is malformed or fails
    /// authentication closes the receiver: a stream that was tampered with once is not
    /// trusted again, and every later call throws ``SecureChannelError/closedAfterFailure``.
    public func open(frame: [UInt8]) throws(SecureChannelError) -> [UInt8] {
        try open(frame: frame) { Array($0) }
    }

    /// Opens one frame into a buffer the receiver reuses and passes the plaintext to `body`
    /// (valid only during the call), avoiding a copy for large messages.
    public func open<R>(frame: [UInt8], _ body: (UnsafeRawBufferPointer) throws -> R) throws(SecureChannelError) -> R {
        guard !hasFailed else { throw .closedAfterFailure }
        guard !isFinished else { throw .afterEnd }
        let n: Int
        do { n = try SecureChannel.frameLength(prefix: frame.prefix(SecureChannel.lengthPrefix), settings: settings) } catch {
            hasFailed = true
            throw error
        }
        guard frame.count == SecureChannel.lengthPrefix + n else {
            hasFailed = true
            throw .malformed(.truncated(field: "frame", needed: n, available: max(0, frame.count - SecureChannel.lengthPrefix)))
        }
        let plainLength = n - SecureChannel.overhead
        if scratch.count < plainLength { scratch = [UInt8](repeating: 0, count: plainLength) }
        var tag: UInt8 = 0
        let rc = frame.withUnsafeBytes { f in
            scratch.withUnsafeMutableBytes { o in
                crypto_secretstream_xchacha20poly1305_pull(state.pointer, o.u8, nil, &tag,
                                                           f.u8 + SecureChannel.lengthPrefix, UInt64(n),
                                                           f.u8, UInt64(SecureChannel.lengthPrefix))
            }
        }
        guard rc == 0 else {
            hasFailed = true
            throw .authenticationFailed
        }
        if tag == UInt8(crypto_secretstream_xchacha20poly1305_TAG_FINAL) { isFinished = true }
        do {
            return try scratch.withUnsafeBytes { try body(UnsafeRawBufferPointer(rebasing: $0.prefix(plainLength))) }
        } catch let e as SecureChannelError {
            throw e
        } catch {
            throw .consumer(String(describing: error))
        }
    }

    /// Call when the underlying stream closed: throws ``SecureChannelError/truncated``
    /// unless the end marker was received.
    public func streamClosed() throws(SecureChannelError) {
        guard isFinished else { throw .truncated }
    }
}

/// Splits an incoming byte stream into secure-channel frames (the stream header first).
/// Sans-IO: append bytes as they arrive, then take complete items.
public struct FrameAssembler: Sendable {
    private var buffer: [UInt8] = []
    private var start = 0
    public let settings: SecureChannelSettings

    public init(settings: SecureChannelSettings = .init()) { self.settings = settings }

    /// Adds received bytes.
    public mutating func append(_ bytes: some Collection<UInt8>) {
        if start > 0 && start >= buffer.count / 2 {
            buffer.removeFirst(start)
            start = 0
        }
        let done: Void? = bytes.withContiguousStorageIfAvailable { buffer.append(contentsOf: $0) }
        if done == nil { buffer.append(contentsOf: bytes) }
    }

    /// Bytes received but not yet taken.
    public var buffered: Int { buffer.count - start }

    /// Takes exactly `count` raw bytes (for the stream header or handshake frames), if available.
    public mutating func take(_ count: Int) -> [UInt8]? {
        guard buffered >= count else { return nil }
        defer { start += count }
        return Array(buffer[start..<start + count])
    }

    /// Takes the next complete frame (prefix included), nil if more bytes are needed.
    /// Throws as soon as the length prefix is invalid, before buffering the body.
    public mutating func nextFrame() throws(SecureChannelError) -> [UInt8]? {
        guard buffered >= SecureChannel.lengthPrefix else { return nil }
        let n = try SecureChannel.frameLength(prefix: buffer[start..<start + SecureChannel.lengthPrefix], settings: settings)
        return take(SecureChannel.lengthPrefix + n)
    }
}
