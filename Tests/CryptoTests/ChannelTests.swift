import Testing
@testable import Crypto

@Suite struct ChannelTests {
    private func pair(settings: SecureChannelSettings = .init()) throws -> (SecureChannelSender, SecureChannelReceiver) {
        let t = try Fixture.transcript()
        let s = try SecureChannelSender(key: t.initiatorResult.sendKey, settings: settings)
        let r = try SecureChannelReceiver(key: t.responderResult.receiveKey, header: s.header, settings: settings)
        return (s, r)
    }

    @Test func channel_framesInOrder_roundTripIncludingEmptyAndFinal() throws {
        let (s, r) = try pair()
        let messages: [[UInt8]] = [[], [1], Array(repeating: 9, count: 70_000)]
        for m in messages { #expect(try r.open(frame: s.seal(m)) == m) }
        #expect(try r.open(frame: s.finish([42])) == [42])
        #expect(r.isFinished)
        try r.streamClosed()
        #expect(throws: SecureChannelError.afterEnd) { try s.seal([1]) }
    }

    @Test func channel_droppedFrame_isDetected() throws {
        let (s, r) = try pair()
        _ = try s.seal([1])
        let second = try s.seal([2])
        #expect(throws: SecureChannelError.authenticationFailed) { try r.open(frame: second) }
    }

    @Test func channel_duplicatedFrame_isDetected() throws {
        let (s, r) = try pair()
        let first = try s.seal([1])
        #expect(try r.open(frame: first) == [1])
        #expect(throws: SecureChannelError.authenticationFailed) { try r.open(frame: first) }
    }

    @Test func channel_reorderedFrames_areDetected() throws {
        let (s, r) = try pair()
        let a = try s.seal([1])
        let b = try s.seal([2])
        #expect(throws: SecureChannelError.authenticationFailed) { try r.open(frame: b) }
        // Fail closed: after a frame that did not authenticate, nothing more is accepted.
        #expect(throws: SecureChannelError.closedAfterFailure) { try r.open(frame: a) }
    }

    @Test func channel_truncatedWithoutEndMarker_isDetected() throws {
        let (s, r) = try pair()
        _ = try r.open(frame: s.seal([1, 2, 3]))
        #expect(throws: SecureChannelError.truncated) { try r.streamClosed() }
    }

    @Test(arguments: ["length", "ciphertext", "tag", "lastByte"])
    func channel_tamperedFrame_isRejectedAndClosesTheReceiver(part: String) throws {
        let (s, r) = try pair()
        let frame = try s.seal(Array("model delta chunk".utf8))
        var bad = frame
        switch part {
        case "length": bad[3] ^= 1           // the length is the associated data
        case "ciphertext": bad[4] ^= 0x80    // the encrypted tag byte / first ciphertext byte
        case "tag": bad[frame.count - 5] ^= 1
        default: bad[frame.count - 1] ^= 1
        }
        #expect(throws: SecureChannelError.self) { try r.open(frame: bad) }
        #expect(r.hasFailed)
        // Fail closed: the genuine frame is refused too, as everything after it would be.
        #expect(throws: SecureChannelError.closedAfterFailure) { try r.open(frame: frame) }
    }

    @Test func channel_wrongKeyOrHeader_failsToOpen() throws {
        let t = try Fixture.transcript()
        let s = try SecureChannelSender(key: t.initiatorResult.sendKey)
        let wrongKey = try SecureChannelReceiver(key: t.initiatorResult.receiveKey, header: s.header)
        #expect(throws: SecureChannelError.authenticationFailed) { try wrongKey.open(frame: s.seal([1])) }
        #expect(throws: SecureChannelError.badHeader) { try SecureChannelReceiver(key: t.responderResult.receiveKey, header: [1, 2]) }
    }

    @Test func channel_periodicRekey_staysInSync() throws {
        var settings = SecureChannelSettings()
        settings.rekeyAfterMessages = 3
        let (s, r) = try pair(settings: settings)
        for i in 0..<20 { #expect(try r.open(frame: s.seal([UInt8(i)])) == [UInt8(i)]) }
    }

    @Test func channel_declaredLengthTooLargeOrTooSmall_isRejectedBeforeBuffering() throws {
        let settings = SecureChannelSettings()
        var assembler = FrameAssembler(settings: settings)
        assembler.append([0xff, 0xff, 0xff, 0xff])  // 4 GiB
        #expect(throws: SecureChannelError.self) { try assembler.nextFrame() }
        var small = FrameAssembler(settings: settings)
        small.append([0, 0, 0, 3])
        #expect(throws: SecureChannelError.self) { try small.nextFrame() }
        let (s, _) = try pair()
        #expect(throws: SecureChannelError.messageTooLarge(settings.maxPlaintextLength + 1, maximum: settings.maxPlaintextLength)) {
            try s.seal([UInt8](repeating: 0, count: settings.maxPlaintextLength + 1))
        }
    }

    @Test func frameAssembler_partialInput_waitsThenYieldsWholeFrames() throws {
        let (s, r) = try pair()
        let stream = try s.seal([1, 2]) + s.seal([3])
        var a = FrameAssembler()
        a.append(stream.prefix(5))
        try check(a.nextFrame() == nil)
        a.append(stream.dropFirst(5))
        let f1 = try #require(try a.nextFrame())
        let f2 = try #require(try a.nextFrame())
        try check(a.nextFrame() == nil)
        #expect(try r.open(frame: f1) == [1, 2])
        #expect(try r.open(frame: f2) == [3])
    }
}
