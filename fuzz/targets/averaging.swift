import Crypto
import Gossip

/// Fuzzes the push-sum share decoders: `AveragingWire.decode` (unsigned encoding; canonical, so
/// a decoded message must re-encode to its input), `AveragingEnvelope.decode` (signed
/// transfers from a fixed author to a fixed recipient, plain acknowledgements) under a fixed
/// network key, a transfer's payload read as a `SparseShare` (canonical too), and the whole
/// session decoder, which also opens model copies (`ModelCopyEnvelope`: a copy's size must be
/// the one its sender counted).
let keyring = fuzzSetup("network key") { NetworkKeyring(current: try NetworkKey(bytes: (0..<32).map { UInt8(0x40 + $0) })) }
let author = fuzzSetup("author identity") { try Identity(seed: [UInt8](repeating: 3, count: 32)) }
let recipient = fuzzSetup("recipient identity") { try Identity(seed: [UInt8](repeating: 4, count: 32)) }

let sessions = fuzzSetup("session codec") {
    try SecureWire(identity: recipient, keyring: keyring, replayGuard: .forDatagrams(startedAt: 0)).sessionCodec
}

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
    if case .model(let copy)? = try? sessions.decode(bytes, from: author.peerID) {
        precondition(copy.wireSize == bytes.count, "model copy of \(bytes.count) bytes has a wireSize of \(copy.wireSize)")
        if case .floats(let floats) = copy.payload { precondition(floats.count == copy.count, "model copy of \(copy.count) parameters decoded to \(floats.count)") }
    }
    return 0
}

/// An identity-codec transfer must hold exactly `count` floats; a payload that reads as a
/// sparse share must carry ascending coordinates below `count` and re-encode to itself.
func checkShape(_ message: PushSumAverager.Message) {
    guard case .transfer(let t) = message else { return }
    switch t.payload {
    case .floats(let floats):
        precondition(floats.count == t.count, "transfer of \(t.count) elements decoded to \(floats.count) floats")
    case .bytes(let bytes):
        guard let share = try? SparseShare(decoding: bytes, dimension: t.count) else { return }
        precondition(share.indices == share.indices.sorted() && share.indices.allSatisfy { $0 < t.count }, "sparse share coordinates out of order or range")
        precondition(share.values.count == share.indices.count && share.weights.count == share.indices.count, "sparse share lengths disagree")
        precondition(share.encoded(dimension: t.count) == bytes, "sparse share does not re-encode to its payload")
    }
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
        averagingTransfer(epoch: 2, sequence: 9, weight: 0.125, count: 12, codec: 0x13,
                          payload: SparseShare(indices: [1, 9], values: [0.5, -2], weights: [3, 1.5]).encoded(dimension: 12)),
    ].compactMap { try? AveragingWire.decode($0) }
    precondition(messages.count == 4, "fuzz: a hand-written averaging seed does not decode")
    writeSeeds(messages.map(AveragingWire.encode)
        + messages.compactMap { try? AveragingEnvelope.encode($0, identity: author, networkID: keyring.current.id, to: recipient.peerID) }
        + [ModelCopy(age: 4, sequence: 1, degree: 3, count: 4, codec: identity, payload: .floats(floats)),
           ModelCopy(age: 5, sequence: 2, degree: 2, count: 6, codec: 0x12, payload: .bytes([9, 8, 7, 6, 5]))]
            .compactMap { try? ModelCopyEnvelope.encode($0, identity: author, networkID: keyring.current.id, to: recipient.peerID) }) {
        (try? AveragingWire.decode($0)) != nil || openSigned($0) != nil || (try? sessions.decode($0, from: author.peerID)) != nil
    }
    return 0
}
