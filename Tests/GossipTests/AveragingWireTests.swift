import Crypto
import Testing
@testable import Gossip

private func sampleTransfer() -> PushSumAverager.Transfer {
    .init(epoch: 0xDEAD_BEEF, sequence: 42, weight: 12.5, count: 3, codec: 0, payload: .floats([1.5, -2.25, 3]))
}

private func testIdentity() throws -> Identity {
    try Identity(seed: [UInt8](repeating: 5, count: Identity.seedLength))
}

@Test func averagingWire_transferAndAck_roundTripExactly() throws {
    for message in [PushSumAverager.Message.transfer(sampleTransfer()), .ack(epoch: 7, sequence: 9)] {
        let bytes = AveragingWire.encode(message)
        #expect(bytes.count == message.wireSize)
        #expect(try AveragingWire.decode(bytes) == message)
    }
}

@Test func averagingWire_truncatedOrTrailingInput_isRefusedWithTypedError() {
    let bytes = AveragingWire.encode(.transfer(sampleTransfer()))
    for cut in [0, 1, 10, bytes.count - 1] {
        #expect(throws: AveragingError.self) { try AveragingWire.decode(Array(bytes.prefix(cut))) }
    }
    #expect(throws: AveragingError.wire(.trailingBytes(count: 1))) { try AveragingWire.decode(bytes + [0]) }
    #expect(throws: AveragingError.unknownMessageTag(9)) { try AveragingWire.decode([9]) }
}

@Test func averagingWire_oversizedDeclaredCount_isRefusedBeforeAllocating() {
    var bytes = AveragingWire.encode(.transfer(sampleTransfer()))
    // count field: after tag, epoch, sequence, weight.
    let countOffset = 1 + 8 + 8 + 8
    for i in 0..<4 { bytes[countOffset + i] = 0xFF }
    // Refused for its declared size, before the payload is read (not as a truncation).
    #expect(throws: AveragingError.tooLarge(elements: Int(UInt32.max), limit: 1 << 24)) { try AveragingWire.decode(bytes) }
}

private func recipientIdentity() throws -> Identity {
    try Identity(seed: [UInt8](repeating: 6, count: Identity.seedLength))
}

@Test func averagingEnvelope_signedTransfer_opensAtItsRecipientWithExactContent() throws {
    let key = try NetworkKey(bytes: [UInt8](repeating: 3, count: NetworkKey.length))
    let identity = try testIdentity(), recipient = try recipientIdentity()
    let message = PushSumAverager.Message.transfer(sampleTransfer())
    let bytes = try AveragingEnvelope.encode(message, identity: identity, networkID: key.id, to: recipient.peerID)
    let opened = try AveragingEnvelope.decode(bytes, keyring: NetworkKeyring(current: key), from: identity.peerID, localPeer: recipient.peerID)
    #expect(opened == message)
}

@Test func averagingEnvelope_tamperedShareOrUnsignedTransfer_isRefused() throws {
    let key = try NetworkKey(bytes: [UInt8](repeating: 3, count: NetworkKey.length))
    let identity = try testIdentity(), recipient = try recipientIdentity()
    var bytes = try AveragingEnvelope.encode(.transfer(sampleTransfer()), identity: identity, networkID: key.id, to: recipient.peerID)
    bytes[bytes.count - 1] ^= 1
    #expect(throws: AveragingEnvelope.Failure.envelope(.payloadMismatch)) {
        try AveragingEnvelope.decode(bytes, keyring: NetworkKeyring(current: key), from: identity.peerID, localPeer: recipient.peerID)
    }
    let unsigned = AveragingWire.encode(.transfer(sampleTransfer()))
    #expect(throws: AveragingEnvelope.Failure.unsignedTransfer) {
        try AveragingEnvelope.decode(unsigned, keyring: NetworkKeyring(current: key), from: identity.peerID, localPeer: recipient.peerID)
    }
}

@Test func averagingEnvelope_shareDeliveredToAnotherNode_isRefused() throws {
    let key = try NetworkKey(bytes: [UInt8](repeating: 3, count: NetworkKey.length))
    let sender = try testIdentity(), recipient = try recipientIdentity()
    let other = try Identity(seed: [UInt8](repeating: 7, count: Identity.seedLength))
    let bytes = try AveragingEnvelope.encode(.transfer(sampleTransfer()), identity: sender, networkID: key.id, to: recipient.peerID)
    // The recipient (or anyone who saw the share) relays it to a second node: no mass is added there.
    #expect(throws: AveragingEnvelope.Failure.envelope(.wrongRecipient(recipient.peerID))) {
        try AveragingEnvelope.decode(bytes, keyring: NetworkKeyring(current: key), from: sender.peerID, localPeer: other.peerID)
    }
}

@Test func averagingEnvelope_shareFromSomeoneOtherThanItsAuthor_isRefused() throws {
    let key = try NetworkKey(bytes: [UInt8](repeating: 3, count: NetworkKey.length))
    let author = try testIdentity(), recipient = try recipientIdentity()
    let relayer = try Identity(seed: [UInt8](repeating: 7, count: Identity.seedLength))
    let bytes = try AveragingEnvelope.encode(.transfer(sampleTransfer()), identity: author, networkID: key.id, to: recipient.peerID)
    // Arriving over the relayer's authenticated session, the author's share is not the relayer's to give.
    #expect(throws: AveragingEnvelope.Failure.envelope(.wrongAuthor(expected: relayer.peerID, actual: author.peerID))) {
        try AveragingEnvelope.decode(bytes, keyring: NetworkKeyring(current: key), from: relayer.peerID, localPeer: recipient.peerID)
    }
}
