import Foundation
import Testing
@testable import Crypto

@Suite struct SignedDeltaTests {
    private let ring = NetworkKeyring(current: Fixture.networkKey)

    private func header(_ edit: (inout DeltaHeader) -> Void = { _ in }) -> DeltaHeader {
        var h = Fixture.deltaPayload.withUnsafeBytes {
            SignedDelta.makeHeader(kind: .modelDelta, networkID: Fixture.networkKey.id, recipient: Fixture.bob.peerID,
                                   round: 7, sequence: 42, encoding: .float32,
                                   shape: [2, 3], metadata: Fixture.deltaMetadata, payload: $0, identity: Fixture.alice)
        }
        edit(&h)
        return h
    }

    /// An envelope signed by `identity` over `h` as it stands, unchecked: what a faulty or
    /// malicious sender could produce.
    private func signedUnchecked(_ h: DeltaHeader, by identity: Identity = Fixture.alice) -> [UInt8] {
        let encoded = h.uncheckedEncoding()
        var w = ByteWriter()
        w.write(SignedDelta.headType)
        w.writeLengthPrefixed(encoded)
        w.write(bytes: identity.sign(encoded, domain: .delta))
        return w.bytes
    }

    @Test func signedDelta_sealThenOpen_returnsHeaderAndPayload() throws {
        let (h, p) = try SignedDelta.open(Fixture.envelope(), keyring: ring, expecting: Fixture.expectation(kind: .modelDelta))
        #expect(p == Fixture.deltaPayload)
        #expect(h.author == Fixture.alice.peerID)
        #expect(h.round == 7 && h.sequence == 42 && h.shape == [2, 3] && h.encoding == .float32)
        #expect(h.metadata == Fixture.deltaMetadata)
        #expect(h.payloadHash == Blake2b.hash256(Fixture.deltaPayload))
        #expect(h.recipient == Fixture.bob.peerID)
        #expect(try DeltaHeader.decode(h.encode(), limits: .init()) == h)
    }

    @Test func signedDelta_headOnly_verifiesBeforePayloadArrives() throws {
        let env = try Fixture.envelope()
        let headLength = env.count - Fixture.deltaPayload.count
        let head = try SignedDelta.openHead(Array(env.prefix(headLength)), keyring: ring, expecting: Fixture.expectation())
        #expect(head.headLength == headLength)
        let assembler = DeltaAssembler(head: head)
        for chunk in Fixture.deltaPayload.withUnsafeBytes({ DeltaChunk.split($0, chunkLength: 5) }) {
            try assembler.add(try DeltaChunk.decode(chunk.encode()))
        }
        #expect(try assembler.finish().payload == Fixture.deltaPayload)
    }

    @Test func deltaAssembler_wrongOrderOrAlteredChunk_isRejected() throws {
        let env = try Fixture.envelope()
        let head = try SignedDelta.openHead(env, keyring: ring, expecting: Fixture.expectation())
        let a = DeltaAssembler(head: head)
        #expect(throws: DeltaError.chunkOutOfOrder(expectedOffset: 0, actual: 4)) { try a.add(DeltaChunk(offset: 4, bytes: [1])) }
        let b = DeltaAssembler(head: head)
        var altered = Fixture.deltaPayload
        altered[0] ^= 1
        try b.add(DeltaChunk(offset: 0, bytes: altered))
        #expect(throws: DeltaError.payloadMismatch) { try b.finish() }
        let c = DeltaAssembler(head: head)
        #expect(throws: DeltaError.self) { try c.add(DeltaChunk(offset: 0, bytes: Fixture.deltaPayload + [0])) }
        let d = DeltaAssembler(head: head)
        #expect(throws: DeltaError.self) { try d.finish() }
    }

    @Test func signedDelta_alteredPayload_isRejected() throws {
        var env = try Fixture.envelope()
        env[env.count - 1] ^= 1
        #expect(throws: DeltaError.payloadMismatch) { try SignedDelta.open(env, keyring: ring, expecting: Fixture.expectation()) }
    }

    @Test(arguments: [("round", 0), ("sequence", 1), ("author", 2), ("networkID", 3), ("shape", 4), ("metadata", 5), ("encoding", 6),
                      ("recipient", 7), ("kind", 8), ("none", 9)])
    func signedDelta_alteredSignedField_failsSignature(field: String, _: Int) throws {
        let forged = header {
            switch field {
            case "round": $0.round += 1
            case "sequence": $0.sequence += 1
            case "author": $0.author = Fixture.carol.peerID
            case "networkID": $0.networkID = Fixture.otherNetworkKey.id
            case "shape": $0.shape = [3, 2]
            case "metadata": $0.metadata[7] ^= 1
            case "encoding": $0.encoding = .topK  // variable length: the header stays valid
            case "recipient": $0.recipient = Fixture.carol.peerID
            case "kind": $0.kind = .modelSnapshot
            default: break
            }
        }
        // Splice the altered header in front of the original signature.
        let original = try SignedDelta.sealHead(header(), identity: Fixture.alice)
        let signature = Array(original.suffix(64))
        var w = ByteWriter()
        w.write(SignedDelta.headType)
        w.writeLengthPrefixed(try forged.encode())
        w.write(bytes: signature)
        w.write(bytes: Fixture.deltaPayload)
        // A node in both networks (mid-rotation), so the altered network ID passes the network check.
        var both = NetworkKeyring(current: Fixture.otherNetworkKey)
        both.rotate(to: Fixture.networkKey)
        let result = Result {
            try SignedDelta.open(w.bytes, keyring: both, expecting: Fixture.expectation(author: .anyMember, localPeer: forged.recipient ?? Fixture.bob.peerID))
        }
        if field == "none" {
            // Unchanged header: the control case must verify.
            #expect((try? result.get()) != nil)
        } else {
            #expect(throws: DeltaError.badSignature) { try result.get() }
        }
    }

    @Test func signedDelta_signedByAnotherKey_isRejected() {
        // Carol signs a header claiming Alice as author.
        #expect(throws: DeltaError.wrongAuthor(expected: Fixture.carol.peerID, actual: Fixture.alice.peerID)) {
            try SignedDelta.sealHead(header(), identity: Fixture.carol)
        }
        let env = signedUnchecked(header(), by: Fixture.carol) + Fixture.deltaPayload
        #expect(throws: DeltaError.badSignature) { try SignedDelta.open(env, keyring: ring, expecting: Fixture.expectation()) }
    }

    @Test func signedDelta_signatureOfAnotherKindReused_isRejected() throws {
        let snapshot = try Fixture.envelope(kind: .modelSnapshot)
        // Change only the kind byte (offset: type 1 + length 4 + version 1).
        var asDelta = snapshot
        asDelta[6] = DeltaKind.modelDelta.rawValue
        #expect(throws: DeltaError.badSignature) { try SignedDelta.open(asDelta, keyring: ring, expecting: Fixture.expectation()) }
        #expect(throws: DeltaError.unexpectedKind(.modelSnapshot)) {
            try SignedDelta.open(snapshot, keyring: ring, expecting: Fixture.expectation(kind: .modelDelta))
        }
    }

    @Test func signedDelta_otherNetwork_isRejected() {
        #expect(throws: DeltaError.wrongNetwork) {
            try SignedDelta.open(Fixture.envelope(), keyring: NetworkKeyring(current: Fixture.otherNetworkKey), expecting: Fixture.expectation())
        }
    }

    @Test(arguments: [
        "0100000000000000000000000000000000000000000000000000000000000000",  // identity point (small order)
        "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  // order 2 (y = -1)
        "0000000000000000000000000000000000000000000000000000000000000080",  // small order, sign bit set
        "eeffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",  // y = p + 1: non-canonical
    ])
    func signedDelta_smallOrderOrNonCanonicalAuthor_isRejected(hex: String) throws {
        let bad = try #require(PeerID(hex: hex))
        #expect(!bad.isValidPublicKey)
        let env = signedUnchecked(header { $0.author = bad }) + Fixture.deltaPayload
        #expect(throws: DeltaError.invalidAuthorKey) {
            try SignedDelta.open(env, keyring: ring, expecting: Fixture.expectation(author: .anyMember))
        }
    }

    @Test func signedDelta_missingFieldsOrTruncation_isMalformedNeverATrap() throws {
        let env = try Fixture.envelope()
        for cut in [0, 1, 3, 5, 20, 70, 150, env.count - Fixture.deltaPayload.count - 1] {
            #expect(throws: DeltaError.self) { try SignedDelta.open(Array(env.prefix(cut)), keyring: ring, expecting: Fixture.expectation()) }
        }
        #expect(throws: DeltaError.self) { try SignedDelta.open(env + [0], keyring: ring, expecting: Fixture.expectation()) }
        #expect(throws: DeltaError.self) { try SignedDelta.open(Array(env.dropLast()), keyring: ring, expecting: Fixture.expectation()) }
    }

    /// The sender refuses to sign `h`, and a receiver given it signed anyway refuses it too.
    private func expectMalformed(_ h: DeltaHeader, _ expected: WireError, sourceLocation: SourceLocation = #_sourceLocation) {
        #expect(throws: DeltaError.malformed(expected), sourceLocation: sourceLocation) { try SignedDelta.sealHead(h, identity: Fixture.alice) }
        let env = signedUnchecked(h)
        #expect(throws: DeltaError.malformed(expected), sourceLocation: sourceLocation) {
            try SignedDelta.openHead(env, keyring: ring, expecting: Fixture.expectation())
        }
    }

    @Test func signedDelta_badDeclaredLengths_areRejectedBeforeAllocation() {
        expectMalformed(header { $0.payloadLength = 1 << 32; $0.encoding = .topK },
                        .lengthTooLarge(field: "payload", declared: 1 << 32, maximum: DeltaLimits().maxPayloadLength))
        expectMalformed(header { $0.payloadLength = 0 }, .zeroLength(field: "payload"))
        expectMalformed(header { $0.shape = [] }, .zeroLength(field: "shape"))
        expectMalformed(header { $0.shape = [2, 0] }, .zeroLength(field: "dimension"))
        expectMalformed(header { $0.shape = Array(repeating: 1, count: 9) },
                        .lengthTooLarge(field: "shape rank", declared: 9, maximum: 8))
        expectMalformed(header { $0.shape = [2, 4] },
                        .invalidValue(field: "payload length", reason: "24 bytes do not match shape [2, 4] in f32 (32 bytes)"))
        expectMalformed(header { $0.shape = [UInt32.max, UInt32.max, UInt32.max] },
                        .invalidValue(field: "shape", reason: "element count overflows"))
        expectMalformed(header { $0.metadata = [UInt8](repeating: 0, count: 1_025) },
                        .lengthTooLarge(field: "metadata", declared: 1_025, maximum: 1_024))
        expectMalformed(header { $0.kind = .pushSumShare; $0.recipient = nil },
                        .invalidValue(field: "recipient", reason: "a push-sum-share must name the one peer it is for"))
        // A header length of 4 GiB - 1 in the envelope itself.
        var w = ByteWriter()
        w.write(SignedDelta.headType)
        w.writeUInt32(.max)
        #expect(throws: DeltaError.malformed(.lengthTooLarge(field: "header", declared: UInt64(UInt32.max), maximum: DeltaLimits().maxHeaderLength))) {
            try SignedDelta.openHead(w.bytes, keyring: ring, expecting: Fixture.expectation())
        }
        // A chunk declaring 4 GiB - 1 bytes.
        var c = ByteWriter()
        c.write(DeltaChunk.type)
        c.writeUInt64(0)
        c.writeUInt32(.max)
        #expect(throws: WireError.lengthTooLarge(field: "chunk", declared: UInt64(UInt32.max), maximum: DeltaChunk.maxLength)) {
            try DeltaChunk.decode(c.bytes)
        }
        #expect(throws: WireError.zeroLength(field: "chunk")) { try DeltaChunk.decode(DeltaChunk(offset: 0, bytes: []).encode()) }
    }

    @Test func signedDelta_variableEncodingWithAnyLength_isAccepted() throws {
        let payload: [UInt8] = [1, 2, 3, 4, 5]
        let env = try payload.withUnsafeBytes {
            try SignedDelta.seal(kind: .modelDelta, networkID: Fixture.networkKey.id, recipient: nil, round: 1, sequence: 1, encoding: .topK,
                                 shape: [1000], payload: $0, identity: Fixture.bob)
        }
        #expect(try SignedDelta.open(env, keyring: ring, expecting: Fixture.expectation(author: .peer(Fixture.bob.peerID))).payload == payload)
    }

    @Test func signedDelta_addressedToAnotherPeer_isRefused() throws {
        // Bob relays the delta alice addressed to him on to carol.
        let env = try Fixture.envelope()
        #expect(throws: DeltaError.wrongRecipient(Fixture.bob.peerID)) {
            try SignedDelta.open(env, keyring: ring, expecting: Fixture.expectation(localPeer: Fixture.carol.peerID))
        }
        // A delta for any member opens everywhere.
        let broadcast = try Fixture.envelope(recipient: nil)
        #expect(try SignedDelta.open(broadcast, keyring: ring, expecting: Fixture.expectation(localPeer: Fixture.carol.peerID)).header.recipient == nil)
    }

    @Test func signedDelta_fromSomeoneOtherThanTheSessionPeer_isRefused() throws {
        // Arriving over carol's session, alice's delta is refused, checked before the signature.
        #expect(throws: DeltaError.wrongAuthor(expected: Fixture.carol.peerID, actual: Fixture.alice.peerID)) {
            try SignedDelta.open(Fixture.envelope(), keyring: ring, expecting: Fixture.expectation(author: .peer(Fixture.carol.peerID)))
        }
        // As relayed content from any member it opens.
        #expect(try SignedDelta.open(Fixture.envelope(), keyring: ring, expecting: Fixture.expectation(author: .anyMember)).payload == Fixture.deltaPayload)
    }

    @Test func signedDelta_unsignableHeader_isRefusedBeforeSigning() {
        // v1 truncated a rank of 256 to 0 and metadata of 65,536 bytes to 0 and signed the result.
        var limits = DeltaLimits()
        limits.maxRank = 1_000
        limits.maxMetadataLength = 100_000
        #expect(throws: DeltaError.malformed(.lengthTooLarge(field: "shape rank", declared: 256, maximum: 255))) {
            try SignedDelta.sealHead(header { $0.shape = Array(repeating: 1, count: 256); $0.encoding = .topK }, identity: Fixture.alice, limits: limits)
        }
        #expect(throws: DeltaError.malformed(.lengthTooLarge(field: "metadata", declared: 65_536, maximum: 65_535))) {
            try SignedDelta.sealHead(header { $0.metadata = [UInt8](repeating: 1, count: 65_536) }, identity: Fixture.alice, limits: limits)
        }
    }
}

@Suite struct DeltaSequenceLedgerTests {
    private let ring = NetworkKeyring(current: Fixture.networkKey)

    private func temporaryPath() -> String {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("ledger-\(UUID().uuidString)").path
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
        return dir + "/delta-sequences"
    }

    @Test func ledger_replayedDelta_isRefusedAlsoAfterRestart() throws {
        let path = temporaryPath()
        do {
            let ledger = try DeltaSequenceLedger(path: path)
            _ = try SignedDelta.open(Fixture.envelope(sequence: 42), keyring: ring, expecting: Fixture.expectation(), ledger: ledger)
            #expect(throws: DeltaError.replayed(sequence: 42)) {
                try SignedDelta.open(Fixture.envelope(sequence: 42), keyring: ring, expecting: Fixture.expectation(), ledger: ledger)
            }
            // Out of order within the window is fine, once.
            _ = try SignedDelta.open(Fixture.envelope(sequence: 40), keyring: ring, expecting: Fixture.expectation(), ledger: ledger)
            #expect(throws: DeltaError.replayed(sequence: 40)) {
                try SignedDelta.open(Fixture.envelope(sequence: 40), keyring: ring, expecting: Fixture.expectation(), ledger: ledger)
            }
            // Another kind from the same author is another stream.
            _ = try SignedDelta.open(Fixture.envelope(kind: .modelSnapshot, sequence: 42), keyring: ring,
                                     expecting: Fixture.expectation(), ledger: ledger)
        }
        // A restarted node reads the ledger back: nothing up to the highest sequence opens again.
        let restarted = try DeltaSequenceLedger(path: path)
        #expect(restarted.streams == 2)
        for sequence: UInt64 in [42, 41, 1] {
            #expect(throws: DeltaError.replayed(sequence: sequence)) {
                try SignedDelta.open(Fixture.envelope(sequence: sequence), keyring: ring, expecting: Fixture.expectation(), ledger: restarted)
            }
        }
        _ = try SignedDelta.open(Fixture.envelope(sequence: 43), keyring: ring, expecting: Fixture.expectation(), ledger: restarted)
    }

    @Test func ledger_tamperedPayload_doesNotConsumeTheSequence() throws {
        let ledger = DeltaSequenceLedger()
        var env = try Fixture.envelope(sequence: 9)
        env[env.count - 1] ^= 1
        #expect(throws: DeltaError.payloadMismatch) {
            try SignedDelta.open(env, keyring: ring, expecting: Fixture.expectation(), ledger: ledger)
        }
        _ = try SignedDelta.open(Fixture.envelope(sequence: 9), keyring: ring, expecting: Fixture.expectation(), ledger: ledger)
    }

    @Test func ledger_full_refusesNewAuthorsButKeepsKnownOnes() throws {
        let ledger = DeltaSequenceLedger(maxStreams: 1)
        _ = try SignedDelta.open(Fixture.envelope(sequence: 1), keyring: ring, expecting: Fixture.expectation(), ledger: ledger)
        #expect(throws: DeltaError.ledgerFull(1)) {
            try SignedDelta.open(Fixture.envelope(sequence: 1, author: Fixture.carol), keyring: ring,
                                 expecting: Fixture.expectation(author: .anyMember), ledger: ledger)
        }
        _ = try SignedDelta.open(Fixture.envelope(sequence: 2), keyring: ring, expecting: Fixture.expectation(), ledger: ledger)
    }

    @Test func ledger_manyRecords_compactsToOnePerStreamAndKeepsTheHighest() throws {
        let path = temporaryPath()
        do {
            let ledger = try DeltaSequenceLedger(path: path)
            for sequence in 1...1_100 as ClosedRange<UInt64> {
                _ = try SignedDelta.open(Fixture.envelope(sequence: sequence), keyring: ring, expecting: Fixture.expectation(), ledger: ledger)
            }
        }
        let size = try #require(try FileManager.default.attributesOfItem(atPath: path)[.size] as? Int)
        #expect(size < 100 * DeltaSequenceLedger.recordLength)
        let restarted = try DeltaSequenceLedger(path: path)
        #expect(throws: DeltaError.replayed(sequence: 1_100)) {
            try SignedDelta.open(Fixture.envelope(sequence: 1_100), keyring: ring, expecting: Fixture.expectation(), ledger: restarted)
        }
    }
}

@Suite struct ChunkFastPathTests {
    @Test func chunkFastPath_sealInPlaceThenOpenView_matchesCopyingPath() throws {
        let t = try Fixture.transcript()
        let sender = try SecureChannelSender(key: t.initiatorResult.sendKey)
        let receiver = try SecureChannelReceiver(key: t.responderResult.receiveKey, header: sender.header)
        let env = try Fixture.envelope()
        let headLength = env.count - Fixture.deltaPayload.count
        let head = try SignedDelta.openHead(receiver.open(frame: sender.seal(env.prefix(headLength))), keyring: NetworkKeyring(current: Fixture.networkKey),
                                            expecting: Fixture.expectation())
        let assembler = DeltaAssembler(head: head)
        var frames: [[UInt8]] = []
        try Fixture.deltaPayload.withUnsafeBytes { raw in
            for start in stride(from: 0, to: raw.count, by: 10) {
                let piece = UnsafeRawBufferPointer(rebasing: raw[start..<min(raw.count, start + 10)])
                frames.append(try sender.seal(length: DeltaChunk.headerLength + piece.count) {
                    try DeltaChunk.encode(offset: UInt64(start), bytes: piece, into: $0)
                })
            }
        }
        // The in-place encoding is byte-for-byte the ordinary chunk encoding.
        let first = try receiver.open(frame: frames[0])
        #expect(first == DeltaChunk(offset: 0, bytes: Array(Fixture.deltaPayload.prefix(10))).encode())
        try first.withUnsafeBytes { raw in
            try DeltaChunk.withDecoded(raw) { offset, bytes in try assembler.add(offset: offset, bytes: bytes) }
        }
        for frame in frames.dropFirst() {
            try receiver.open(frame: frame) { plain in
                try DeltaChunk.withDecoded(plain) { offset, bytes in try assembler.add(offset: offset, bytes: bytes) }
            }
        }
        #expect(try assembler.finish().payload == Fixture.deltaPayload)
    }

    @Test func chunkEncode_bufferOfWrongLength_throwsInsteadOfOverrunning() throws {
        let piece: [UInt8] = [1, 2, 3]
        for length in [DeltaChunk.headerLength + 2, DeltaChunk.headerLength + 4] {
            var out = [UInt8](repeating: 0, count: length)
            #expect(throws: WireError.self) {
                try piece.withUnsafeBytes { p in try out.withUnsafeMutableBytes { try DeltaChunk.encode(offset: 0, bytes: p, into: $0) } }
            }
        }
    }

    @Test func chunkView_malformed_throwsLikeTheCopyingDecoder() throws {
        let valid = DeltaChunk(offset: 3, bytes: [1, 2, 3]).encode()
        let cases: [[UInt8]] = [[], Array(valid.prefix(12)), Array(valid.dropLast()), valid + [0], [0x44] + valid.dropFirst(),
                    [0x43, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff]]
        for bad in cases {
            #expect(throws: WireError.self) { try bad.withUnsafeBytes { try DeltaChunk.withDecoded($0) { _, _ in } } }
            #expect(throws: WireError.self) { try DeltaChunk.decode(bad) }
        }
        try valid.withUnsafeBytes { raw in
            try DeltaChunk.withDecoded(raw) { offset, bytes in
                #expect(offset == 3)
                #expect(Array(bytes) == [1, 2, 3])
            }
        }
    }
}
