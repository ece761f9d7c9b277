import Crypto

/// Fuzzes the handshake frame decoder: the first byte picks the expected kind.
@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data, size > 0 else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    let kinds = HandshakeFrame.Kind.allCases
    let kind = kinds[Int(bytes[0]) % kinds.count]
    if let frame = try? HandshakeFrame.decode(Array(bytes.dropFirst()), expecting: kind) {
        precondition(frame.encode() == Array(bytes.dropFirst()), "handshake frame does not re-encode to its input")
    }
    return 0
}
