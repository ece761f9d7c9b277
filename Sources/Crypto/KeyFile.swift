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
    /// The file or directory belongs to another user, who could replace or read the key.
    case wrongOwner(path: String, owner: UInt32)
    /// The key directory is a symbolic link; keys must live in a real directory the user owns.
    case symbolicLink(path: String)
    /// The key file itself is a symbolic link.
    case fileIsSymbolicLink(path: String)
    /// The directory holding a key file can be written by group or others, who could replace the file.
    case directoryWritable(path: String, mode: UInt32)
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
        case let .wrongOwner(path, owner):
            return "\(path) belongs to uid \(owner), not to this user (uid \(geteuid())); use keys owned by the user running the peer"
        case let .symbolicLink(path):
            return "key directory \(path) is a symbolic link; give the real directory's path instead"
        case let .fileIsSymbolicLink(path):
            return "\(path) is a symbolic link; key files are never followed through links: give the real file's path"
        case let .directoryWritable(path, mode):
            return "directory \(path) can be written by group or others (mode \(String(mode & 0o7777, radix: 8))), who could replace the key; fix it with: chmod go-w \(path)"
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

    /// What a key file's directory must satisfy.
    public enum DirectoryPolicy: Sendable {
        /// The identity's key directory: a real directory (not a symbolic link) owned by this
        /// user that group and others cannot access at all (0700).
        case keyDirectory
        /// Any other directory holding a key file (a network key given by path): a real
        /// directory owned by this user or root that group and others cannot write to, unless
        /// it is sticky like /tmp (then nobody else can replace the file).
        case keyFileParent
    }

    /// Creates `path` (0700) if missing; refuses an existing directory that group or others can
    /// access, that another user owns, or that is a symbolic link. Checks are made on the opened
    /// directory (`O_DIRECTORY | O_NOFOLLOW`, then `fstat`/`fchmod`), so the path cannot be
    /// swapped between check and use.
    public static func prepareDirectory(_ path: String) throws {
        var created = false
        if mkdir(path, 0o700) == 0 {
            created = true
        } else if errno != EEXIST {
            throw KeyFileError.system(path: path, call: "mkdir", errno: errno)
        }
        let fd = try openDirectory(path, policy: .keyDirectory, freshlyCreated: created)
        close(fd)
    }

    /// Opens a directory and checks the opened directory against `policy`. A directory this
    /// call's caller just created gets its mode set exactly (mkdir honours the umask) instead.
    static func openDirectory(_ path: String, policy: DirectoryPolicy, freshlyCreated: Bool = false) throws -> Int32 {
        let fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            var st = stat()
            if lstat(path, &st) == 0 {
                if (st.st_mode & S_IFMT) == S_IFLNK { throw KeyFileError.symbolicLink(path: path) }
                if (st.st_mode & S_IFMT) != S_IFDIR { throw KeyFileError.malformed(path: path, reason: "not a directory") }
            }
            throw code == ENOENT ? KeyFileError.notFound(path: path) : .system(path: path, call: "open", errno: code)
        }
        do {
            var st = stat()
            guard fstat(fd, &st) == 0 else { throw KeyFileError.system(path: path, call: "fstat", errno: errno) }
            switch policy {
            case .keyDirectory:
                guard st.st_uid == geteuid() else { throw KeyFileError.wrongOwner(path: path, owner: st.st_uid) }
                if freshlyCreated {
                    guard fchmod(fd, 0o700) == 0 else { throw KeyFileError.system(path: path, call: "fchmod", errno: errno) }
                } else {
                    guard st.st_mode & 0o077 == 0 else { throw KeyFileError.directoryTooOpen(path: path, mode: st.st_mode) }
                }
            case .keyFileParent:
                guard st.st_uid == geteuid() || st.st_uid == 0 else { throw KeyFileError.wrongOwner(path: path, owner: st.st_uid) }
                guard st.st_mode & 0o022 == 0 || st.st_mode & S_ISVTX != 0 else {
                    throw KeyFileError.directoryWritable(path: path, mode: st.st_mode)
                }
            }
            return fd
        } catch {
            close(fd)
            throw error
        }
    }

    /// Splits a key file path into its directory and file name.
    static func split(_ path: String) throws -> (directory: String, name: String) {
        guard let slash = path.lastIndex(of: "/") else { return (".", path) }
        let name = String(path[path.index(after: slash)...])
        guard !name.isEmpty, name != ".", name != ".." else { throw KeyFileError.malformed(path: path, reason: "names a directory, not a file") }
        let directory = String(path[..<slash])
        return (directory.isEmpty ? "/" : directory, name)
    }

    /// Writes a new key file exclusively with mode 0600. Never replaces an existing file.
    /// The directory is opened and checked against `policy` once; the file is created and,
    /// on failure, removed relative to that handle (`openat`, `unlinkat`).
    public static func create(path: String, magic: [UInt8], secret: SecureBytes, policy: DirectoryPolicy) throws {
        let (directory, name) = try split(path)
        let dirFD = try openDirectory(directory, policy: policy)
        defer { close(dirFD) }
        let fd = openat(dirFD, name, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0o600)
        guard fd >= 0 else {
            let code = errno
            throw code == EEXIST ? KeyFileError.alreadyExists(path: path) : .system(path: path, call: "open", errno: code)
        }
        var ok = false
        defer {
            close(fd)
            if !ok { unlinkat(dirFD, name, 0) }
        }
        guard fchmod(fd, 0o600) == 0 else { throw KeyFileError.system(path: path, call: "fchmod", errno: errno) }
        var header = magic
        header.append(version)
        try header.withUnsafeBytes { try writeAll(fd, $0, path) }
        try secret.withUnsafeBytes { try writeAll(fd, $0, path) }
        guard fsync(fd) == 0 else { throw KeyFileError.system(path: path, call: "fsync", errno: errno) }
        ok = true
    }

    /// Reads a key file of the given kind; checks its directory against `policy` and refuses
    /// anything but a regular file owned by this user that group and others cannot access.
    /// The file is opened relative to the checked directory handle, `O_NOFOLLOW` (a symbolic
    /// link is refused) and `O_NONBLOCK` (a FIFO is refused, not waited on).
    public static func load(path: String, magic: [UInt8], policy: DirectoryPolicy) throws -> SecureBytes {
        let (directory, name) = try split(path)
        let dirFD = try openDirectory(directory, policy: policy)
        defer { close(dirFD) }
        let fd = openat(dirFD, name, O_RDONLY | O_NONBLOCK | O_NOFOLLOW | O_CLOEXEC)
        guard fd >= 0 else {
            let code = errno
            switch code {
            case ENOENT: throw KeyFileError.notFound(path: path)
            case ELOOP: throw KeyFileError.fileIsSymbolicLink(path: path)
            default: throw KeyFileError.system(path: path, call: "open", errno: code)
            }
        }
        defer { close(fd) }
        var st = stat()
        guard fstat(fd, &st) == 0 else { throw KeyFileError.system(path: path, call: "fstat", errno: errno) }
        guard (st.st_mode & S_IFMT) == S_IFREG else { throw KeyFileError.malformed(path: path, reason: "not a regular file") }
        guard st.st_uid == geteuid() else { throw KeyFileError.wrongOwner(path: path, owner: st.st_uid) }
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
    /// Writes this identity's seed to a new key file (never overwrites; mode 0600) in a key
    /// directory (see ``KeyFile/DirectoryPolicy/keyDirectory``).
    public func save(to path: String) throws {
        let seed = try withSeed { try SecureBytes(copying: $0) }
        try KeyFile.create(path: path, magic: KeyFile.identityMagic, secret: seed, policy: .keyDirectory)
    }

    /// Loads an identity from a key file in a key directory; refuses a file group or others
    /// can read, and a directory that is a link, another user's, or open to group or others.
    public static func load(from path: String) throws -> Identity {
        let seed = try KeyFile.load(path: path, magic: KeyFile.identityMagic, policy: .keyDirectory)
        return try seed.withUnsafeBytes { try Identity(seed: $0) }
    }
}

extension NetworkKey {
    /// Writes the key to a new key file (never overwrites; mode 0600).
    public func save(to path: String) throws {
        try KeyFile.create(path: path, magic: KeyFile.networkKeyMagic, secret: secret, policy: .keyFileParent)
    }

    /// Loads a network key file; refuses a file group or others can read, and a directory
    /// others could replace it in (see ``KeyFile/DirectoryPolicy/keyFileParent``).
    public static func load(from path: String) throws -> NetworkKey {
        try NetworkKey(secret: KeyFile.load(path: path, magic: KeyFile.networkKeyMagic, policy: .keyFileParent))
    }
}
