import Glibc

/// Which sequence numbers of one stream have been accepted: the highest, and a 64-wide
/// bitmap behind it. A sequence more than 64 behind the highest counts as accepted, so a
/// sender must never have more than 64 unresolved at once. The one sequence window of the
/// project: the delta ledger and the averager's duplicate suppression both use it.
public struct SequenceWindow: Sendable, Hashable {
    /// Sequences remembered behind the highest.
    public static let width: UInt64 = 64

    /// Highest sequence accepted (0 before any).
    public private(set) var highest: UInt64
    /// Bit i set: sequence `highest - i` accepted.
    private var bits: UInt64

    /// An empty window.
    public init() {
        highest = 0
        bits = 0
    }

    /// A window that treats every sequence up to `highest` as accepted (a restart's state).
    public init(acceptedThrough highest: UInt64) {
        self.highest = highest
        bits = .max
    }

    /// A window restored from its ``highest`` and ``bitmap`` (saved state).
    public init(highest: UInt64, bitmap: UInt64) {
        self.highest = highest
        bits = bitmap
    }

    /// Bit i set: sequence `highest - i` accepted (for saving the window).
    public var bitmap: UInt64 { bits }

    /// Whether `sequence` counts as accepted: marked, or older than the window.
    public func contains(_ sequence: UInt64) -> Bool {
        guard sequence <= highest else { return false }
        let distance = highest - sequence
        return distance >= Self.width || bits & (1 << distance) != 0
    }

    /// Marks `sequence` accepted.
    public mutating func insert(_ sequence: UInt64) {
        if sequence > highest {
            let shift = sequence - highest
            bits = shift >= Self.width ? 0 : bits << shift
            bits |= 1
            highest = sequence
        } else {
            bits |= 1 << (highest - sequence)
        }
    }
}

/// Why the ledger could not be read or written.
public enum LedgerError: Error, Sendable, CustomStringConvertible {
    case system(path: String, call: String, errno: Int32)

    public var description: String {
        switch self {
        case let .system(path, call, code):
            return "\(path): \(call) failed: \(String(cString: strerror(code))) (check that the data directory exists and is writable by this user)"
        }
    }
}

/// The highest sequence numbers accepted per (author, kind) of signed delta, kept on disk
/// so that a delta accepted once is refused when replayed or relayed again, also after a
/// restart. Every accepted sequence is appended as a 41-byte record
/// `author(32) ‖ kind(1) ‖ sequence(u64 BE)`; loading keeps the highest per stream (a torn
/// last record is ignored) and the file is compacted when stale records dominate.
///
/// After a restart every sequence up to the persisted highest counts as accepted, so a
/// delta that was still in flight behind a newer one is refused then; senders must treat a
/// refusal like a loss. One owner.
public final class DeltaSequenceLedger {
    /// Streams tracked at most. A full ledger refuses deltas from new streams rather than
    /// forget a stream (which would reopen its old deltas to replay). 65,536 streams hold a
    /// network of thousands of authors; about 4 MiB.
    public static let defaultMaxStreams = 65_536
    static let recordLength = PeerID.length + 1 + 8

    private struct Stream: Hashable {
        var author: PeerID
        var kind: UInt8
    }

    private var windows: [Stream: SequenceWindow] = [:]
    private let path: String?
    private var fd: Int32 = -1
    private var recordsInFile = 0
    public let maxStreams: Int

    /// An in-memory ledger (forgotten on exit).
    public init(maxStreams: Int = DeltaSequenceLedger.defaultMaxStreams) {
        path = nil
        self.maxStreams = max(1, maxStreams)
    }

    /// A ledger persisted at `path` (created with mode 0600 if missing).
    public init(path: String, maxStreams: Int = DeltaSequenceLedger.defaultMaxStreams) throws(LedgerError) {
        self.path = path
        self.maxStreams = max(1, maxStreams)
        fd = open(path, O_RDWR | O_CREAT | O_APPEND | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else { throw .system(path: path, call: "open", errno: errno) }
        try load()
    }

    deinit { if fd >= 0 { close(fd) } }

    /// Streams tracked now.
    public var streams: Int { windows.count }

    /// Accepts `header`'s sequence once: refuses one accepted before (or older than the
    /// window), and any from a new stream while the ledger is full. Persists what it accepts.
    public func admit(_ header: DeltaHeader) throws(DeltaError) {
        let stream = Stream(author: header.author, kind: header.kind.rawValue)
        let window = windows[stream]
        if let window, window.contains(header.sequence) { throw .replayed(sequence: header.sequence) }
        if window == nil, windows.count >= maxStreams { throw .ledgerFull(maxStreams) }
        if path != nil {
            do { try append(stream, header.sequence) } catch { throw .ledger(error.description) }
        }
        windows[stream, default: SequenceWindow()].insert(header.sequence)
    }

    private func load() throws(LedgerError) {
        guard let path else { return }
        var content: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 1 << 16)
        guard lseek(fd, 0, SEEK_SET) >= 0 else { throw .system(path: path, call: "lseek", errno: errno) }
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw .system(path: path, call: "read", errno: errno) }
            if n == 0 { break }
            content.append(contentsOf: buffer[..<n])
        }
        var highest: [Stream: UInt64] = [:]
        var offset = 0
        while offset + Self.recordLength <= content.count {
            if let author = PeerID(bytes: content[offset..<offset + PeerID.length]) {
                let kind = content[offset + PeerID.length]
                var sequence: UInt64 = 0
                for b in content[(offset + PeerID.length + 1)..<(offset + Self.recordLength)] { sequence = sequence << 8 | UInt64(b) }
                let stream = Stream(author: author, kind: kind)
                highest[stream] = max(highest[stream] ?? 0, sequence)
            }
            offset += Self.recordLength
        }
        recordsInFile = content.count / Self.recordLength
        for (stream, h) in highest where windows.count < maxStreams { windows[stream] = SequenceWindow(acceptedThrough: h) }
        if content.count % Self.recordLength != 0 || recordsInFile > 2 * windows.count + 1_024 { try compact() }
    }

    private func append(_ stream: Stream, _ sequence: UInt64) throws(LedgerError) {
        guard let path else { return }
        let record = Self.encode(stream, sequence)
        let n = record.withUnsafeBytes { write(fd, $0.baseAddress, $0.count) }
        guard n == record.count else { throw .system(path: path, call: "write", errno: n < 0 ? errno : EIO) }
        recordsInFile += 1
        if recordsInFile > 4 * windows.count + 1_024 { try compact() }
    }

    /// Rewrites the file with one record per stream (written to a temporary file, then renamed).
    private func compact() throws(LedgerError) {
        guard let path else { return }
        let temporary = path + ".tmp"
        let out = open(temporary, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard out >= 0 else { throw .system(path: temporary, call: "open", errno: errno) }
        var bytes: [UInt8] = []
        bytes.reserveCapacity(windows.count * Self.recordLength)
        // Sorted, so the same state always writes the same file.
        for (stream, window) in windows.sorted(by: { ($0.key.author.bytes, $0.key.kind) < ($1.key.author.bytes, $1.key.kind) }) {
            bytes += Self.encode(stream, window.highest)
        }
        let written = bytes.withUnsafeBytes { write(out, $0.baseAddress, $0.count) }
        let synced = fsync(out) == 0
        close(out)
        guard written == bytes.count, synced else { throw .system(path: temporary, call: "write", errno: errno) }
        guard rename(temporary, path) == 0 else { throw .system(path: path, call: "rename", errno: errno) }
        close(fd)
        fd = open(path, O_RDWR | O_APPEND | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else { throw .system(path: path, call: "open", errno: errno) }
        recordsInFile = windows.count
    }

    private static func encode(_ stream: Stream, _ sequence: UInt64) -> [UInt8] {
        var w = ByteWriter(capacity: recordLength)
        w.write(bytes: stream.author.bytes)
        w.write(stream.kind)
        w.writeUInt64(sequence)
        return w.bytes
    }
}

private func < (a: ([UInt8], UInt8), b: ([UInt8], UInt8)) -> Bool {
    a.0.lexicographicallyPrecedes(b.0) || (a.0 == b.0 && a.1 < b.1)
}
