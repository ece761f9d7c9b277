import Testing
@testable import Crypto

/// The numbers docs/wire.md and docs/security.md promise, written here as the documents say
/// them: a change in the code that the documents do not follow fails here.
@Suite struct DocumentedConstantsTests {
    @Test func limits_matchTheDocuments() {
        #expect(DeltaLimits().maxPayloadLength == 134_217_728)  // 128 MiB
        #expect(DeltaLimits().maxRank == 8)
        #expect(DeltaLimits().maxMetadataLength == 1_024)
        #expect(DeltaChunk.maxLength == 262_144)  // 256 KiB
        #expect(SecureChannelSettings().maxPlaintextLength == 1_048_576)  // 1 MiB
        #expect(SecureChannelSettings().rekeyAfterMessages == 4_096)
        #expect(SealedDatagram.maxLength == 65_507)
    }

    @Test func replayDefences_matchTheDocuments() {
        #expect(ReplayGuard.Settings.handshake == ReplayGuard.Settings(maxAge: 60_000, maxLead: 60_000, capacity: 16_384))
        #expect(ReplayGuard.Settings.datagram == ReplayGuard.Settings(maxAge: 30_000, maxLead: 30_000, capacity: 65_536))
        #expect(SequenceWindow.width == 64)
        #expect(DeltaSequenceLedger.defaultMaxStreams == 65_536)
        #expect(DeltaSequenceLedger.recordLength == 41)
        // The guards' memory when full: about 0.9 MiB for hellos, 3.5 MiB for datagrams.
        #expect(ReplayGuard.Settings.handshake.memoryBound == 32_768 * 16 + 16_384 * 24)
        #expect(ReplayGuard.Settings.datagram.memoryBound == 131_072 * 16 + 65_536 * 24)
    }

    @Test func frameLengths_matchTheDocuments() {
        #expect(HandshakeFrame.Kind.allCases.map(\.frameLength) == [74, 66, 114, 82])
        #expect(SealedDatagram.headerLength == 34)
        #expect(DeltaHeader.fixedLength == 158)
        #expect(SecretHandshake.version == 2)
        #expect(SealedDatagram.version == 2)
        #expect(DeltaHeader.version == 2)
    }
}
