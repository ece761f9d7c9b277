import CZlib
import Glibc
import Foundation

/// Model files: a versioned little-endian binary format whose header names the architecture,
/// the shape and how the parameters are stored, followed by the parameters, the input
/// normaliser and a CRC-32 of everything before it.
///
/// ```
/// magic "MURMODEL" · u16 version (2)
/// u16 name length · architecture name in UTF-8 ("softmax", "mlp:128")
/// u32 inputs · u32 classes · u16 hidden layer count · u32 per hidden layer
/// u8 normaliser kind (0 none, 1 minmax, 2 standardize)
/// u8 storage: 0 fp32, 1 fp16, 2 int8; 16 more when sparse (16, 17, 18)
/// u64 parameter count
/// per layer, input layer first, holding out × in weights (row-major) and out biases:
///   sparse: ⌈out·in / 8⌉ bitmap bytes; bit i % 8 of byte i / 8 is set when weight i is stored,
///           the others are zero (pruned); bits past out·in are 0; n = the number of set bits
///   dense:  n = out·in
///   fp32:   f32 × n weights · f32 × out biases
///   fp16:   f16 × n weights · f16 × out biases
///   int8:   f32 × out row scales · i8 × n weights (−127…127) · f32 × out biases,
///           a weight being its value × its row's scale
/// if normaliser kind ≠ 0: f32 × inputs offsets · f32 × inputs scales
/// u32 CRC-32 (zlib) of all the bytes above
/// ```
///
/// A sparse file stores nonzero weights only (a stored zero is refused), so a model has one
/// encoding per storage. Version 1 files have no storage byte and hold fp32; they are read as
/// before. A dense fp32 file of version 2 is a version 1 file with the version changed and the
/// storage byte 0 added.
public enum ModelFile {
    static let magic = Array("MURMODEL".utf8)
    /// The version this code writes.
    public static let version: UInt16 = 2
    /// The oldest version this code reads: version 1 stored fp32 and had no storage byte.
    public static let oldestReadableVersion: UInt16 = 1
    /// Longest architecture name accepted; real names are a few dozen bytes.
    static let maxNameBytes = 1024

    /// What a model file holds: the model, the normalisation to apply to its inputs, and how
    /// the parameters are (or are to be) stored.
    public struct Contents: Sendable, Equatable {
        /// The parameters as dense fp32, whatever the storage: widened from fp16, dequantized
        /// from int8, zeros where a sparse file leaves weights out. Training, fine-tuning and
        /// evaluation use it as any model. Replacing it drops ``int8Weights``.
        public var model: Model {
            didSet { int8Weights = nil }
        }
        public var normalizer: Normalizer
        /// How ``ModelFile/encode(_:)`` stores the parameters; for decoded contents, how the
        /// file stored them.
        public var storage: Storage
        /// The int8 weights and row scales that `model`'s weights are the dequantized form of:
        /// set by ``ModelFile/decode(_:path:expecting:)`` for an int8 file and by
        /// ``Compression/converted(_:to:)``; nil otherwise.
        public private(set) var int8Weights: Int8Weights?

        public init(model: Model, normalizer: Normalizer, storage: Storage = .fp32) {
            self.model = model
            self.normalizer = normalizer
            self.storage = storage
        }

        init(model: Model, normalizer: Normalizer, storage: Storage, int8Weights: Int8Weights?) {
            self.model = model
            self.normalizer = normalizer
            self.storage = storage
            self.int8Weights = int8Weights
        }

        /// The int8 weights an int8 file holds: ``int8Weights``, or `model`'s weights quantized now.
        public var quantizedWeights: Int8Weights { int8Weights ?? Int8Weights(quantizing: model) }

        /// For sparse storage, which weights are stored (all others are zero); nil when dense.
        public var mask: WeightMask? { storage.isSparse ? WeightMask(keepingNonzeroWeightsOf: model) : nil }
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
        w.u8(contents.storage.code)
        w.u64(UInt64(arch.parameterCount))
        encodeParameters(contents, into: &w)
        if contents.normalizer.kind != .none {
            w.floats(contents.normalizer.offsets)
            w.floats(contents.normalizer.scales)
        }
        w.u32(crc(w.bytes[...]))
        return w.bytes
    }

    /// Every layer's parameters in the contents' storage (see the layout above).
    static func encodeParameters(_ contents: Contents, into w: inout ByteWriter) {
        let p = contents.model.parameters
        // Dense fp32 is the flat vector as it lies in memory.
        guard contents.storage != .fp32 else { return w.floats(p) }
        let arch = contents.model.architecture
        let sparse = contents.storage.isSparse
        lazy var int8 = contents.quantizedWeights
        for (l, layer) in arch.layers.enumerated() {
            let weights = p[layer.weightOffset..<layer.biasOffset]
            let biases = Array(p[layer.biasOffset..<(layer.biasOffset + layer.outputs)])
            switch contents.storage.precision {
            case .fp32:
                if sparse { w.bitmap(weights) { $0 != 0 } }
                for x in weights where !sparse || x != 0 { w.f32(x) }
                w.floats(biases)
            case .fp16:
                let halves = weights.map(Self.half)
                if sparse { w.bitmap(halves) { $0 & 0x7FFF != 0 } }
                for h in halves where !sparse || h & 0x7FFF != 0 { w.u16(h) }
                for b in biases { w.u16(Self.half(b)) }
            case .int8:
                let values = int8.values[layer.valueOffset..<(layer.valueOffset + layer.weightCount)]
                if sparse { w.bitmap(values) { $0 != 0 } }
                let unit = arch.firstUnit(ofLayer: l)
                w.floats(Array(int8.scales[unit..<(unit + layer.outputs)]))
                for q in values where !sparse || q != 0 { w.u8(UInt8(bitPattern: q)) }
                w.floats(biases)
            }
        }
    }

    /// The IEEE half-precision bits of `x`, its magnitude clamped to 65504.
    static func half(_ x: Float) -> UInt16 {
        let limit = Float(Float16.greatestFiniteMagnitude)
        return Float16(min(max(x, -limit), limit)).bitPattern
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
        guard (oldestReadableVersion...version).contains(v) else {
            throw bad("format version \(v); this build reads versions \(oldestReadableVersion) to \(version)")
        }
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
        var storage = Storage.fp32
        if v >= 2 {
            let code = try r.u8("storage")
            guard let named = Storage(code: code) else {
                throw bad("unknown parameter storage \(code) (0 fp32, 1 fp16, 2 int8, each plus \(Storage.sparseFlag) when sparse)")
            }
            storage = named
        }
        let count = try r.u64("parameter count")
        guard count == UInt64(arch.parameterCount) else {
            throw bad("header says \(count) parameters, \(arch) has \(arch.parameterCount)")
        }
        // Walk the sections without allocating, so the file's length is known to be exactly
        // what its header implies, and its checksum right, before anything is allocated.
        var values = r
        try skipParameters(&r, arch, storage, bad)
        if kind != .none { _ = try r.raw(8 * inputs, "normaliser") }
        guard r.remaining == 4 else {
            throw bad(r.remaining < 4 ? "truncated: \(bytes.count) bytes, \(4 - r.remaining) short of the checksum"
                                      : "\(r.remaining - 4) unexpected bytes after the checksum")
        }
        let stored = UInt32(bytes[bytes.count - 4]) | UInt32(bytes[bytes.count - 3]) << 8
            | UInt32(bytes[bytes.count - 2]) << 16 | UInt32(bytes[bytes.count - 1]) << 24
        guard crc(bytes[0..<(bytes.count - 4)]) == stored else { throw bad("checksum mismatch: the file is corrupt") }
        if let expecting, expecting != arch {
            throw bad("it holds \(arch), expected \(expecting)")
        }
        let (parameters, int8) = try decodeParameters(&values, arch, storage, bad)
        let normalizer: Normalizer
        if kind == .none {
            normalizer = .identity(featureCount: inputs)
        } else {
            let offsets = try values.floats(inputs, "normaliser offsets")
            let scales = try values.floats(inputs, "normaliser scales")
            do { normalizer = try Normalizer(kind: kind, offsets: offsets, scales: scales) } catch { throw bad("\(error)") }
        }
        do {
            return Contents(model: try Model(architecture: arch, parameters: parameters), normalizer: normalizer,
                            storage: storage, int8Weights: int8)
        } catch {
            throw bad("\(error)")
        }
    }

    /// Bytes one stored value takes.
    static func valueSize(_ precision: Storage.Precision) -> Int {
        switch precision {
        case .fp32: return 4
        case .fp16: return 2
        case .int8: return 1
        }
    }

    /// Steps over every layer's parameters, checking that each section is there and each bitmap
    /// marks no weight past its layer's.
    static func skipParameters(_ r: inout ByteReader, _ arch: Architecture, _ storage: Storage, _ bad: (String) -> LearnerError) throws {
        let size = valueSize(storage.precision)
        for (l, layer) in arch.layers.enumerated() {
            var stored = layer.weightCount
            if storage.isSparse { stored = try bitmap(&r, layer: l, weights: layer.weightCount, bad).count }
            if storage.precision == .int8 { _ = try r.raw(4 * layer.outputs, "layer \(l + 1) row scales") }
            _ = try r.raw(size * stored, "layer \(l + 1) weights")
            _ = try r.raw((storage.precision == .fp16 ? 2 : 4) * layer.outputs, "layer \(l + 1) biases")
        }
    }

    /// A layer's bitmap and how many weights it marks stored.
    static func bitmap(_ r: inout ByteReader, layer l: Int, weights: Int, _ bad: (String) -> LearnerError) throws -> (bits: ArraySlice<UInt8>, count: Int) {
        let bits = try r.raw((weights + 7) / 8, "layer \(l + 1) bitmap")
        if weights % 8 != 0, let last = bits.last, last >> (weights % 8) != 0 {
            throw bad("the bitmap of layer \(l + 1) marks weights past its \(weights)")
        }
        return (bits, bits.reduce(0) { $0 + $1.nonzeroBitCount })
    }

    /// The flat fp32 parameter vector, and for int8 storage the int8 weights it was dequantized
    /// from. The caller has checked the length and the checksum.
    static func decodeParameters(_ r: inout ByteReader, _ arch: Architecture, _ storage: Storage,
                                 _ bad: (String) -> LearnerError) throws -> ([Float], Int8Weights?) {
        var parameters = [Float](repeating: 0, count: arch.parameterCount)
        let int8 = storage.precision == .int8
        var quantized = [Int8](repeating: 0, count: int8 ? arch.weightCount : 0)
        var scales = [Float](repeating: 0, count: int8 ? arch.unitCount : 0)
        for (l, layer) in arch.layers.enumerated() {
            let bits = storage.isSparse ? try bitmap(&r, layer: l, weights: layer.weightCount, bad) : nil
            let stored = bits?.count ?? layer.weightCount
            /// The index within the layer of every stored weight, in order.
            func storedIndices() -> [Int] {
                guard let bits else { return Array(0..<layer.weightCount) }
                var indices: [Int] = []
                indices.reserveCapacity(stored)
                for (byte, value) in bits.bits.enumerated() where value != 0 {
                    for bit in 0..<8 where value >> bit & 1 == 1 { indices.append(8 * byte + bit) }
                }
                return indices
            }
            func storedZero(_ i: Int) -> LearnerError {
                bad("layer \(l + 1) stores weight \(i) as zero, but a sparse file stores nonzero weights only")
            }
            switch storage.precision {
            case .fp32:
                let values = try r.floats(stored, "layer \(l + 1) weights")
                for (v, i) in zip(values, storedIndices()) {
                    if bits != nil, v == 0 { throw storedZero(i) }
                    parameters[layer.weightOffset + i] = v
                }
                parameters.replaceSubrange(layer.biasOffset..<(layer.biasOffset + layer.outputs),
                                           with: try r.floats(layer.outputs, "layer \(l + 1) biases"))
            case .fp16:
                let values = try r.raw(2 * stored, "layer \(l + 1) weights")
                for (j, i) in storedIndices().enumerated() {
                    let h = halfBits(values, at: j)
                    if bits != nil, h & 0x7FFF == 0 { throw storedZero(i) }
                    parameters[layer.weightOffset + i] = Float(Float16(bitPattern: h))
                }
                let biases = try r.raw(2 * layer.outputs, "layer \(l + 1) biases")
                for o in 0..<layer.outputs { parameters[layer.biasOffset + o] = Float(Float16(bitPattern: halfBits(biases, at: o))) }
            case .int8:
                let unit = arch.firstUnit(ofLayer: l)
                let rowScales = try r.floats(layer.outputs, "layer \(l + 1) row scales")
                if let o = rowScales.firstIndex(where: { !$0.isFinite || $0 < 0 }) {
                    throw bad("layer \(l + 1) row \(o) has scale \(rowScales[o]); scales are finite and not negative")
                }
                scales.replaceSubrange(unit..<(unit + layer.outputs), with: rowScales)
                let values = try r.raw(stored, "layer \(l + 1) weights")
                for (j, i) in storedIndices().enumerated() {
                    let q = Int8(bitPattern: values[values.startIndex + j])
                    if bits != nil, q == 0 { throw storedZero(i) }
                    guard q != .min else { throw bad("layer \(l + 1) weight \(i) is -128; int8 weights lie in -127...127") }
                    guard rowScales[i / layer.inputs] > 0 else {
                        throw bad("layer \(l + 1) row \(i / layer.inputs) has scale 0 but nonzero weights")
                    }
                    quantized[layer.valueOffset + i] = q
                }
                parameters.replaceSubrange(layer.biasOffset..<(layer.biasOffset + layer.outputs),
                                           with: try r.floats(layer.outputs, "layer \(l + 1) biases"))
            }
        }
        guard int8 else { return (parameters, nil) }
        let weights = Int8Weights(unchecked: arch, values: quantized, scales: scales)
        parameters.withUnsafeMutableBufferPointer { weights.dequantize(into: $0) }
        return (parameters, weights)
    }

    /// The little-endian u16 at value index `j` of `bytes`.
    static func halfBits(_ bytes: ArraySlice<UInt8>, at j: Int) -> UInt16 {
        let at = bytes.startIndex + 2 * j
        return UInt16(bytes[at]) | UInt16(bytes[at + 1]) << 8
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
