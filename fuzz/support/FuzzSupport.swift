import Glibc

// Helpers compiled into every fuzz target (see scripts/fuzz.sh).

/// The fixed state a target fuzzes against (a key, an identity, an opener), made once. A
/// setup that fails traps at once with a message: a target that silently returned early
/// would fuzz nothing and still pass.
func fuzzSetup<T>(_ what: String, _ make: () throws -> T) -> T {
    do { return try make() } catch { fatalError("fuzz: setting up \(what) failed: \(error)") }
}

/// The fuzzer's input as an array.
func fuzzInput(_ data: UnsafePointer<UInt8>?, _ size: Int) -> [UInt8] {
    guard let data else { return [] }
    return Array(UnsafeBufferPointer(start: data, count: size))
}

/// Writes `seeds` (round-trip encodings made by the target's own encoders) as files `rt-N` into
/// the directory named by `FUZZ_SEED_DIR`; scripts/fuzz.sh sets it to the target's corpus
/// directory, so seeds always match the current encoders and no binary is committed.
/// Every seed must be accepted by `decodes`: an encoding its own decoder refuses is a bug, and a
/// target whose seeds never decode would fuzz nothing but the error paths.
func writeSeeds(_ seeds: [[UInt8]], decodes: ([UInt8]) -> Bool) {
    guard let raw = getenv("FUZZ_SEED_DIR") else { return }
    let dir = String(cString: raw)
    precondition(!seeds.isEmpty, "fuzz: no seeds were built")
    for (i, seed) in seeds.enumerated() {
        precondition(decodes(seed), "fuzz: seed \(i) (an encoder's output) does not decode: \(hex(seed))")
        writeFile("\(dir)/rt-\(i)", seed)
    }
}

/// Writes `bytes` to `path`, replacing it; traps on failure (a broken fuzzing setup, not a finding).
func writeFile(_ path: String, _ bytes: [UInt8]) {
    guard let f = fopen(path, "wb") else { preconditionFailure("fuzz: cannot write \(path)") }
    let written = bytes.withUnsafeBytes { fwrite($0.baseAddress, 1, $0.count, f) }
    precondition(fclose(f) == 0 && written == bytes.count, "fuzz: short write to \(path)")
}

/// The whole content of `path` (seed generation only).
func readFile(_ path: String) -> [UInt8] {
    guard let f = fopen(path, "rb") else { preconditionFailure("fuzz: cannot read \(path)") }
    defer { fclose(f) }
    var out: [UInt8] = []
    var buf = [UInt8](repeating: 0, count: 4096)
    while true {
        let n = buf.withUnsafeMutableBytes { fread($0.baseAddress, 1, $0.count, f) }
        if n == 0 { break }
        out.append(contentsOf: buf[0..<n])
    }
    return out
}

/// A scratch file path private to this process, for decoders that only read paths.
func scratchPath(_ suffix: String) -> String {
    let dir = getenv("TMPDIR").map { String(cString: $0) } ?? "/tmp"
    return "\(dir)/murmur-fuzz-\(getpid())\(suffix)"
}

/// The signature libFuzzer gives `LLVMFuzzerInitialize`'s arguments.
public typealias FuzzArgc = UnsafeMutablePointer<Int32>?
public typealias FuzzArgv = UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?

/// The little-endian bytes of `v`.
func littleEndian<T: FixedWidthInteger>(_ v: T) -> [UInt8] {
    withUnsafeBytes(of: v.littleEndian) { Array($0) }
}

/// `v`'s bytes in network order, as `ByteWriter` writes integers.
func bigEndian<T: FixedWidthInteger>(_ v: T) -> [UInt8] {
    withUnsafeBytes(of: v.bigEndian) { Array($0) }
}

/// A push-sum transfer in `AveragingWire`'s layout (docs in Sources/Gossip/Averaging/AveragingWire.swift).
func averagingTransfer(epoch: UInt64, sequence: UInt64, weight: Double, count: UInt32, codec: UInt8, payload: [UInt8]) -> [UInt8] {
    [1] + bigEndian(epoch) + bigEndian(sequence) + bigEndian(weight.bitPattern) + bigEndian(count)
        + [codec] + bigEndian(UInt32(payload.count)) + payload
}

/// A push-sum acknowledgement in `AveragingWire`'s layout.
func averagingAck(epoch: UInt64, sequence: UInt64) -> [UInt8] {
    [2] + bigEndian(epoch) + bigEndian(sequence)
}

/// `bytes` in lowercase hex, for failure messages.
func hex(_ bytes: [UInt8]) -> String {
    bytes.map { ($0 < 16 ? "0" : "") + String($0, radix: 16) }.joined()
}
