import CZlib
import Glibc
import Foundation

/// Model files: a versioned little-endian binary format whose header names the architecture
/// and shape, followed by the parameters, the input normaliser and a CRC-32 of everything before it.
///
/// ```
/// magic "MURMODEL" · u16 version (1)
/// u16 name length · architecture name in UTF-8 ("softmax", "mlp:128")
/// u32 inputs · u32 classes · u16 hidden layer count · u32 per hidden layer
/// u8 normaliser kind (0 none, 1 minmax, 2 standardize)
/// u64 parameter count · f32 × parameters
/// if normaliser kind ≠ 0: f32 × inputs offsets · f32 × inputs scales
/// u32 CRC-32 (zlib) of all the bytes above
/// ```
public enum ModelFile {
    static let magic = Array("MURMODEL".utf8)
    /// The version this code writes and the only one it reads.
    public static let version: UInt16 = 1
    /// Longest architecture name accepted; real names are a few dozen bytes.
    static let maxNameBytes = 1024

    /// What a model file holds: the model and the normalisation to apply to its inputs.
    public struct Contents: Sendable, Equatable {
        public var model: Model
        public var normalizer: Normalizer

        public init(model: Model, normalizer: Normalizer) {
            self.model = model
            self.normalizer = normalizer
        }
    }

    /// The file's bytes.
    public static func encode(_ contents: Contents) -> [UInt8] {
        let arch = contents.model.architecture
        var w = ByteWriter(capacity: 64 + 4 * (arch.parameterCount + 2 * arch.inputCount))
        w.raw(magic)
        w.u16(version)
        let name = Array(arch.name.utf8)
        w.u16(UInt16(name.count))
        w.raw(name)
        w.u32(UInt32(arch.inputCount))
        w.u32(UInt32(arch.classCount))
        w.u16(UInt16(arch.hiddenSizes.count))
        for h in arch.hiddenSizes { w.u32(UInt32(h)) }
        w.u8(contents.normalizer.kind.rawValue)
        w.u64(UInt64(arch.parameterCount))
        w.floats(contents.model.parameters)
        if contents.normalizer.kind != .none {
            w.floats(contents.normalizer.offsets)
            w.floats(contents.normalizer.scales)
        }
        w.u32(crc(w.bytes[...]))
        return w.bytes
    }

    static func crc(_ bytes: ArraySlice<UInt8>) -> UInt32 {
        bytes.withUnsafeBufferPointer { UInt32(crc32(0, $0.baseAddress, UInt32($0.count))) }
    }

    /// Parses a model file's bytes; `path` only names the file in errors. With `expecting`,
    /// a model of another architecture is refused.
    public static func decode(_ bytes: [UInt8], path: String = "model", expecting: Architecture? = nil) throws -> Contents {
        func bad(_ reason: String) -> LearnerError { .badModelFile(path: path, reason: reason) }
        var r = ByteReader(bytes, fail: bad)
        guard bytes.count >= magic.count, Array(bytes[0..<magic.count]) == magic else {
            throw bad("it does not start with \"MURMODEL\"")
        }
        _ = try r.raw(magic.count, "magic")
        let v = try r.u16("version")
        guard v == version else { throw bad("format version \(v); this build reads version \(version)") }
        let nameLength = Int(try r.u16("name length"))
        guard nameLength <= maxNameBytes else { throw bad("architecture name of \(nameLength) bytes") }
        let name = String(decoding: try r.raw(nameLength, "architecture name"), as: UTF8.self)
        let inputs = Int(try r.u32("input count"))
        let classes = Int(try r.u32("class count"))
        let hiddenCount = Int(try r.u16("hidden layer count"))
        guard hiddenCount <= Architecture.maxHiddenLayers else { throw bad("\(hiddenCount) hidden layers") }
        var hidden: [Int] = []
        for i in 0..<hiddenCount { hidden.append(Int(try r.u32("width of hidden layer \(i)"))) }
        let arch: Architecture
        do { arch = try Architecture(inputCount: inputs, hiddenSizes: hidden, classCount: classes) } catch {
            throw bad("its header describes an impossible model (\(error))")
        }
        guard arch.name == name else { throw bad("header names '\(name)' but its layer widths make '\(arch.name)'") }
        let kindByte = try r.u8("normaliser kind")
        guard let kind = Normalizer.Kind(rawValue: kindByte) else { throw bad("unknown normaliser kind \(kindByte)") }
        let count = try r.u64("parameter count")
        guard count == UInt64(arch.parameterCount) else {
            throw bad("header says \(count) parameters, \(arch) has \(arch.parameterCount)")
        }
        let expected = r.offset + 4 * arch.parameterCount + (kind == .none ? 0 : 8 * inputs) + 4
        guard bytes.count == expected else {
            throw bad(bytes.count < expected
                      ? "truncated: \(bytes.count) bytes, the header implies \(expected)"
                      : "\(bytes.count - expected) unexpected bytes after the checksum")
        }
        let stored = UInt32(bytes[expected - 4]) | UInt32(bytes[expected - 3]) << 8 | UInt32(bytes[expected - 2]) << 16 | UInt32(bytes[expected - 1]) << 24
        guard crc(bytes[0..<(expected - 4)]) == stored else { throw bad("checksum mismatch: the file is corrupt") }
        if let expecting, expecting != arch {
            throw bad("it holds \(arch), expected \(expecting)")
        }
        let parameters = try r.floats(arch.parameterCount, "parameters")
        let normalizer: Normalizer
        if kind == .none {
            normalizer = .identity(featureCount: inputs)
        } else {
            let offsets = try r.floats(inputs, "normaliser offsets")
            let scales = try r.floats(inputs, "normaliser scales")
            do { normalizer = try Normalizer(kind: kind, offsets: offsets, scales: scales) } catch { throw bad("\(error)") }
        }
        do {
            return Contents(model: try Model(architecture: arch, parameters: parameters), normalizer: normalizer)
        } catch {
            throw bad("\(error)")
        }
    }

    /// Reads and checks a model file.
    public static func read(_ path: String, expecting: Architecture? = nil) throws -> Contents {
        guard let data = FileManager.default.contents(atPath: path) else {
            throw LearnerError.io(path: path, reason: access(path, F_OK) == 0 ? "cannot read it (permissions?)" : "no such file")
        }
        return try decode([UInt8](data), path: path, expecting: expecting)
    }

    /// Writes atomically: a temporary file in the same directory, fsync, rename over `path`,
    /// fsync of the directory. A crash leaves either the old file or the new one, never half.
    public static func write(_ contents: Contents, to path: String) throws {
        try writeAtomically(encode(contents), to: path)
    }

    static func writeAtomically(_ bytes: [UInt8], to path: String) throws {
        func fail(_ what: String) -> LearnerError { .io(path: path, reason: "\(what): \(String(cString: strerror(errno)))") }
        // Not NSString.deletingLastPathComponent: it traps on some short names on Linux.
        let directory = path.lastIndex(of: "/").map { $0 == path.startIndex ? "/" : String(path[..<$0]) } ?? "."
        // mkstemp picks a fresh name and creates the file exclusively, so concurrent writers
        // of the same path never share a temporary file.
        var template = Array((path + ".tmp-XXXXXX").utf8CString)
        let fd = template.withUnsafeMutableBufferPointer { buf in buf.baseAddress.map { mkstemp($0) } ?? -1 }
        let temporary = String(decoding: template.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        guard fd >= 0 else { throw fail("cannot create a temporary file beside it") }
        fchmod(fd, 0o644)
        var ok = false
        defer {
            if !ok { unlink(temporary) }
        }
        var written = 0
        while written < bytes.count {
            let n = bytes.withUnsafeBytes { buf in buf.baseAddress.map { Glibc.write(fd, $0 + written, buf.count - written) } ?? 0 }
            if n < 0 && errno == EINTR { continue }
            guard n > 0 else {
                let error = fail("cannot write \(temporary)")
                close(fd)
                throw error
            }
            written += n
        }
        guard fsync(fd) == 0 else {
            let error = fail("cannot fsync \(temporary)")
            close(fd)
            throw error
        }
        guard close(fd) == 0 else { throw fail("cannot close \(temporary)") }
        guard rename(temporary, path) == 0 else { throw fail("cannot rename \(temporary) over it") }
        ok = true
        let dirfd = open(directory, O_RDONLY | O_DIRECTORY | O_CLOEXEC)
        if dirfd >= 0 {
            fsync(dirfd)
            close(dirfd)
        }
    }
}
