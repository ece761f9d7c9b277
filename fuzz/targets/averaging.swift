import Crypto
import Gossip

/// Fuzzes the push-sum share decoders: `AveragingWire.decode` (unsigned encoding; canonical, so
/// a decoded message must re-encode to its input) and `AveragingEnvelope.decode` (signed
/// transfers from a fixed author to a fixed recipient, plain acknowledgements) under a fixed network key.
let keyring = fuzzSetup("network key") { NetworkKeyring(current: try NetworkKey(bytes: (0..<32).map { UInt8(0x40 + $0) })) }
let author = fuzzSetup("author identity") { try Identity(seed: [UInt8](repeating: 3, count: 32)) }
let recipient = fuzzSetup("recipient identity") { try Identity(seed: [UInt8](repeating: 4, count: 32)) }

/// Opens a signed averaging message as the fixed recipient would from the fixed author.
func openSigned(_ bytes: [UInt8]) -> PushSumAverager.Message? {
    try? AveragingEnvelope.decode(bytes, keyring: keyring, from: author.peerID, localPeer: recipient.peerID)
}

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    let bytes = fuzzInput(data, size)
    if let message = try? AveragingWire.decode(bytes) {
        precondition(AveragingWire.encode(message) == bytes, "averaging message does not re-encode to its input")
        precondition(message.wireSize == bytes.count, "averaging wireSize disagrees with the encoding")
        checkShape(message)
    }
    if let opened = openSigned(bytes) { checkShape(opened) }
    return 0
}

/// An identity-codec transfer must hold exactly `count` floats.
func checkShape(_ message: PushSumAverager.Message) {
    guard case .transfer(let t) = message, case .floats(let floats) = t.payload else { return }
    precondition(floats.count == t.count, "transfer of \(t.count) elements decoded to \(floats.count) floats")
}

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: FuzzArgc, _ argv: FuzzArgv) -> Int32 {

    // `Transfer` has no public initialiser: build messages by decoding hand-written encodings.
    let identity = IdentityShareCodec().identifier
    let floats: [Float] = [1, 2, -3, 0.5]
    let messages = [
        averagingAck(epoch: 2, sequence: 5),
        averagingTransfer(epoch: 2, sequence: 6, weight: 0.5, count: 4, codec: identity,
                          payload: floats.flatMap { littleEndian($0.bitPattern) }),
        averagingTransfer(epoch: 2, sequence: 8, weight: 0.25, count: 6, codec: 5, payload: [9, 8, 7, 6, 5]),
    ].compactMap { try? AveragingWire.decode($0) }
    precondition(messages.count == 3, "fuzz: a hand-written averaging seed does not decode")
    writeSeeds(messages.map(AveragingWire.encode)
        + messages.compactMap { try? AveragingEnvelope.encode($0, identity: author, networkID: keyring.current.id, to: recipient.peerID) }) {
        (try? AveragingWire.decode($0)) != nil || openSigned($0) != nil
    }
    return 0
}
