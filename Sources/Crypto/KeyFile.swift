import CSodium
#if canImport(Glibc)
import Glibc
#endif

/// Errors about key files, each naming the file and what to do.
public enum KeyFileError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The file already exists; keys are never overwritten.
    case alreadyExists(path: String)
    /// The file does not exist.
    case notFound(path: String)
    /// Group or others can access the file (read, write or execute).
    case tooOpen(path: String, mode: UInt32)
    /// The directory holding keys is accessible to group or others.
    case directoryTooOpen(path: String, mode: UInt32)
    /// The file is not a key file of the expected kind.
    case malformed(path: String, reason: String)
    /// A system call failed.
    case system(path: String, call: String, errno: Int32)

    public var description: String {
        switch self {
        case let .alreadyExists(path):
            return "\(path) already exists; refusing to overwrite a key (move it away first if you really mean to replace it)"
        case let .notFound(path):
            return "\(path) does not exist (create an identity with `peer keygen --dir DIR`, a network key with `peer network-key new --out FILE`)"
        case let .tooOpen(path, mode):
            return "\(path) can be accessed by group or others (mode \(String(mode & 0o777, radix: 8))); fix it with: chmod 600 \(path)"
        case let .directoryTooOpen(path, mode):
            return "key directory \(path) is accessible by group or others (mode \(String(mode & 0o777, radix: 8))); fix it with: chmod 700 \(path)"
        case let .malformed(path, reason):
            return "\(path) is not a valid key file: \(reason)"
        case let .system(path, call, code):
            return "\(call) \(path): \(String(cString: strerror(code)))"
        }
    }
}

/// Reading and writing small binary key files safely.
///
/// Layout (see docs/wire.md): 4-byte magic, 1-byte version, 32 secret bytes.
/// Files are created with `O_CREAT | O_EXCL` (never overwritten) and mode 0600, inside a
/// directory with mode 0700; loading refuses a file group or others can read.
/// Secret bytes go straight from `read(2)` into ``SecureBytes``.
public enum KeyFile {
    /// Current key file format version.
    public static let version: UInt8 = 1
    /// Magic of an identity key file (holds the Ed25519 seed).
    public static let identityMagic: [UInt8] = Array("MMID".utf8)
    /// Magic of a network key file.
    public static let networkKeyMagic: [UInt8] = Array("MMNK".utf8)
    /// Size of every key file: magic, version, 32 secret bytes.
    public static let fileLength = 4 + 1 + 32
    /// Default file name of the identity inside a key directory.
    public static let identityFileName = "identity.key"
    /// Default file name of the network key inside a key directory.
    public static let networkKeyFileName = "network.key"

    /// Creates `path` (0700) if missing; refuses an existing directory group or others can access.
    public static func prepareDirectory(_ path: String) throws {
        var st = stat()
        if stat(path, &st) == 0 {
            guard (st.st_mode & S_IFMT) == S_IFDIR else { throw KeyFileError.malformed(path: path, reason: "not a directory") }
            guard st.st_mode & 0o077 == 0 else { throw KeyFileError.directoryTooOpen(path: path, mode: st.st_mode) }
            return
        }
        guard mkdir(path, 0o700) == 0 else { throw KeyFileError.system(path: path, call: "mkdir", errno: errno) }
        // mkdir honours the umask, which can only remove bits; make the mode exact.
        guard chmod(path, 0o700) == 0 else { throw KeyFileError.system(path: path, call: "chmod", errno: errno) }
    }

    /// Writes a new key file exclusively with mode 0600. Never replaces an existing file.
    public static func create(path: String, magic: [UInt8], secret: SecureBytes) throws {
        let fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            let code = errno
            throw code == EEXIST ? KeyFileError.alreadyExists(path: path) : .system(path: path, call: "open", errno: code)
        }
        var ok = false
        defer {
            close(fd)
            if !ok { unlink(path) }
        }
        guard fchmod(fd, 0o600) == 0 else { throw KeyFileError.system(path: path, call: "fchmod", errno: errno) }
        var header = magic
        header.append(version)
        try header.withUnsafeBytes { try writeAll(fd, $0, path) }
        try secret.withUnsafeBytes { try writeAll(fd, $0, path) }
        guard fsync(fd) == 0 else { throw KeyFileError.system(path: path, call: "fsync", errno: errno) }
        ok = true
    }

    /// Reads a key file of the given kind; refuses it if group or others can read it.
    public static func load(path: String, magic: [UInt8]) throws -> SecureBytes {
        let fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            throw code == ENOENT ? KeyFileError.notFound(path: path) : .system(path: path, call: "open", errno: code)
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw KeyFileError.system(path: path, call: "fstat", errno: errno) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw KeyFileError.malformed(path: path, reason: "not a regular file") }
        guard st.st_mode & 0o077 == 0 else { throw KeyFileError.tooOpen(path: path, mode: st.st_mode) }
        guard st.st_size == fileLength else {
            throw KeyFileError.malformed(path: path, reason: "expected \(fileLength) bytes, found \(st.st_size)")
        }
        var header = [UInt8](repeating: 0, count: magic.count + 1)
        try header.withUnsafeMutableBytes { try readAll(fd, $0, path) }
        guard Array(header.prefix(magic.count)) == magic else {
            throw KeyFileError.malformed(path: path, reason: "wrong magic (is this the other kind of key?)")
        }
        guard header[magic.count] == version else {
            throw KeyFileError.malformed(path: path, reason: "unsupported version \(header[magic.count])")
        }
        let secretLength = fileLength - magic.count - 1
        return try SecureBytes(count: secretLength) { buffer in try readAll(fd, buffer, path) }
    }

    private static func writeAll(_ fd: Int32, _ bytes: UnsafeRawBufferPointer, _ path: String) throws {
        var done = 0
        while done < bytes.count {
            let n = write(fd, bytes.baseAddress.map { $0 + done }, bytes.count - done)
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else { throw KeyFileError.system(path: path, call: "write", errno: errno) }
            done += n
        }
    }

    private static func readAll(_ fd: Int32, _ bytes: UnsafeMutableRawBufferPointer, _ path: String) throws {
        var done = 0
        while done < bytes.count {
            let n = read(fd, bytes.baseAddress.map { $0 + done }, bytes.count - done)
            if n < 0 && errno == EINTR { continue }
            guard n >= 0 else { throw KeyFileError.system(path: path, call: "read", errno: errno) }
            guard n > 0 else { throw KeyFileError.malformed(path: path, reason: "file ended early") }
            done += n
        }
    }
}

extension Identity {
    /// Writes this identity's seed to a new key file (never overwrites; mode 0600).
    public func save(to path: String) throws {
        let seed = try withSeed { try SecureBytes(copying: $0) }
        try KeyFile.create(path: path, magic: KeyFile.identityMagic, secret: seed)
    }

    /// Loads an identity from a key file; refuses files group or others can read.
    public static func load(from path: String) throws -> Identity {
        let seed = try KeyFile.load(path: path, magic: KeyFile.identityMagic)
        return try seed.withUnsafeBytes { try Identity(seed: $0) }
    }
}

extension NetworkKey {
    /// Writes the key to a new key file (never overwrites; mode 0600).
    public func save(to path: String) throws {
        try KeyFile.create(path: path, magic: KeyFile.networkKeyMagic, secret: secret)
    }

    /// Loads a network key file; refuses files group or others can read.
    public static func load(from path: String) throws -> NetworkKey {
        try NetworkKey(secret: KeyFile.load(path: path, magic: KeyFile.networkKeyMagic))
    }
}
