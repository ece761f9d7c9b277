import Crypto
import Gossip

/// Fuzzes `ReleaseMessage(decoding:)`, what a peer's session delivers to model distribution:
/// summaries, manifests, chunk requests and chunks. The encoding is canonical, so anything that
/// decodes must re-encode to exactly its input; decoded manifests and rollback notices are run
/// through signature verification, which sees the same untrusted bytes, and every delta the
/// input could carry through `ReleasePatch.apply` against a small base.
let base = [UInt8](repeating: 7, count: 4_096)

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = fuzzInput(data, size)
    _ = ReleasePatch.apply(bytes, to: base)
    guard let message = try? ReleaseMessage(decoding: bytes) else { return 0 }
    precondition(message.encoded == bytes, "release message does not re-encode to its input")
    switch message {
    case .manifest(let m): _ = m.isSigned
    case .summary(_, let rollbacks, _): for r in rollbacks { _ = r.isSigned }
    case .manifestRequest, .chunkRequest, .chunk: break
    }
    return 0
}

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: FuzzArgc, _ argv: FuzzArgv) -> Int32 {
    writeSeeds(releaseSeeds()) { (try? ReleaseMessage(decoding: $0)) != nil }
    return 0
}

func releaseSeeds() -> [[UInt8]] {
    guard let publisher = try? Identity(seed: [UInt8](repeating: 3, count: 32)) else { return [] }
    let file = (0..<20_000).map { UInt8(truncatingIfNeeded: $0 &* 31) }
    let next = file.enumerated().map { $0.offset % 97 == 0 ? $0.element ^ 1 : $0.element }
    let key = ReleaseKey(name: "fashion", version: 2)
    guard let patch = ReleasePatch.make(from: file, to: next),
          let manifest = try? ReleaseManifest(key: key, description: "mlp:128", file: next, chunkSize: 4_096, canaryPercent: 10,
                                              canaryDelaySeconds: 60, publishedAt: 1, delta: (1, Blake2b.hash256(file), patch), publisher: publisher) else { return [] }
    let notice = RollbackNotice(key: key, issuedAt: 5, publisher: publisher)
    let messages: [ReleaseMessage] = [
        .summary(held: [.init(key: key, complete: true), .init(key: ReleaseKey(name: "other", version: 9), complete: false)], rollbacks: [notice], reply: false),
        .manifestRequest(key), .manifest(manifest), .chunkRequest(key, .delta, index: 1), .chunk(key, .file, index: 0, bytes: Array(next[0..<4_096])),
    ]
    return messages.map(\.encoded)
}
