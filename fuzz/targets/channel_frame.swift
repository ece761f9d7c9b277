import Crypto

/// Fuzzes stream reassembly and secure-channel frame opening: the input is split into
/// a 24-byte stream header and a byte stream fed to the frame assembler. The key is the
/// A→B key of docs/wire.md, so the documented stream vector is a valid seed.
nonisolated(unsafe) let key: SecureBytes = fuzzSetup("stream key") {
    guard let bytes = Hex.decode("60d4ea55e4526f45c992b5703222f0056b3954d4a552a5704bd936733eb7412e") else { throw CryptoError.invalidLength(what: "stream key", expected: 32, actual: 0) }
    return try bytes.withUnsafeBytes { try SecureBytes(copying: $0) }
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    guard let data, size >= SecureChannel.headerLength else { return 0 }
    let bytes = Array(UnsafeBufferPointer(start: data, count: size))
    guard let receiver = try? SecureChannelReceiver(key: key, header: Array(bytes.prefix(SecureChannel.headerLength))) else { return 0 }
    var assembler = FrameAssembler()
    assembler.append(bytes.dropFirst(SecureChannel.headerLength))
    while let frame = try? assembler.nextFrame() {
        _ = try? receiver.open(frame: frame)
    }
    _ = try? receiver.streamClosed()
    return 0
}
