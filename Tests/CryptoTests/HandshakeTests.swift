import Testing
@testable import Crypto

@Suite struct HandshakeTests {
    /// The fields of an encoded client hello.
    private func helloFields(_ hello: [UInt8]) throws -> (mac: [UInt8], timestamp: UInt64, ephemeral: [UInt8]) {
        guard case let .clientHello(mac, timestamp, ephemeral) = try HandshakeFrame.decode(hello, expecting: .clientHello) else {
            throw HandshakeError.unexpectedFrame
        }
        return (mac, timestamp, ephemeral)
    }

    @Test func handshake_matchingKeys_bothSidesAgreeOnPeersAndStreamKeys() throws {
        let t = try Fixture.transcript()
        #expect(t.initiatorResult.remote == Fixture.bob.peerID)
        #expect(t.responderResult.remote == Fixture.alice.peerID)
        #expect(t.initiatorResult.sendKey.testCopy == t.responderResult.receiveKey.testCopy)
        #expect(t.initiatorResult.receiveKey.testCopy == t.responderResult.sendKey.testCopy)
        #expect(t.initiatorResult.sendKey.testCopy != t.initiatorResult.receiveKey.testCopy)
        #expect(t.frames.map(\.count) == [74, 66, 114, 82])
    }

    @Test func handshake_randomEphemerals_giveFreshKeysEachTime() throws {
        func run() throws -> [UInt8] {
            var i = HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.networkKey, expectedResponder: Fixture.bob.peerID)
            var r = HandshakeResponder(identity: Fixture.bob, keyring: NetworkKeyring(current: Fixture.networkKey))
            let g = Fixture.handshakeGuard()
            let m2 = try #require(try r.receive(try i.start(now: Fixture.now), replayGuard: g, now: Fixture.now).reply)
            let m3 = try #require(try i.receive(m2).reply)
            let m4 = try #require(try r.receive(m3, replayGuard: g, now: Fixture.now).reply)
            return try #require(try i.receive(m4).result).sendKey.testCopy
        }
        #expect(try run() != run())
    }

    /// Runs the handshake, flipping bit `bit` of message `index` (0...3) in transit.
    /// Returns the errors each side saw (nil if the side did not fail by itself).
    private func runWithFlip(message index: Int, bit: Int) throws -> (initiator: HandshakeError?, responder: HandshakeError?, completed: Bool) {
        var i = HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.networkKey, expectedResponder: Fixture.bob.peerID)
        var r = HandshakeResponder(identity: Fixture.bob, keyring: NetworkKeyring(current: Fixture.networkKey))
        let g = Fixture.handshakeGuard()
        func flip(_ m: [UInt8], _ k: Int) -> [UInt8] {
            guard k == index else { return m }
            var m = m
            m[bit / 8 % m.count] ^= UInt8(1 << (bit % 8))
            return m
        }
        var m = flip(try i.start(now: Fixture.now), 0)
        do {
            m = flip(try #require(try r.receive(m, replayGuard: g, now: Fixture.now).reply), 1)
        } catch let e as HandshakeError { return (nil, e, false) }
        do {
            m = flip(try #require(try i.receive(m).reply), 2)
        } catch let e as HandshakeError { return (e, nil, false) }
        let out: HandshakeOutput
        do {
            out = try r.receive(m, replayGuard: g, now: Fixture.now)
        } catch { return (nil, error, false) }
        m = flip(try #require(out.reply), 3)
        do {
            _ = try i.receive(m)
        } catch { return (error, nil, false) }
        return (nil, nil, true)
    }

    @Test(arguments: 0..<4)
    func handshake_oneBitFlippedInMessage_failsCleanlyWithoutCompleting(message: Int) throws {
        let lengths = [74, 66, 114, 82]
        // Flip a bit in the header, in the middle and in the last byte.
        for bit in [0, 8 * 2 + 3, 8 * (lengths[message] / 2) + 5, 8 * (lengths[message] - 1) + 7] {
            let outcome = try runWithFlip(message: message, bit: bit)
            #expect(!outcome.completed, "message \(message) bit \(bit) was not detected")
            // The side that received the altered message is the one that fails; the other never
            // receives its next message, so its connection closes without a session.
            if message % 2 == 0 { #expect(outcome.responder != nil) } else { #expect(outcome.initiator != nil) }
        }
    }

    @Test func handshake_initiatorExpectingXReachesY_abortsAtTheFirstMessage() throws {
        // Alice wants Carol but reaches Bob: Carol is under the hello's MAC, so Bob refuses it at
        // the HMAC, before any X25519 on either side (v1 got as far as message 3).
        var i = HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.networkKey, expectedResponder: Fixture.carol.peerID)
        var r = HandshakeResponder(identity: Fixture.bob, keyring: NetworkKeyring(current: Fixture.networkKey))
        let g = Fixture.handshakeGuard()
        #expect(throws: HandshakeError.notInNetwork) { try r.receive(try i.start(now: Fixture.now), replayGuard: g, now: Fixture.now) }
        // Even if a malicious Bob answered with a server hello of his own, Alice would refuse it.
        var bob = HandshakeResponder(identity: Fixture.bob, keyring: NetworkKeyring(current: Fixture.networkKey))
        var toBob = HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.networkKey, expectedResponder: Fixture.bob.peerID)
        let bobsHello = try #require(try bob.receive(try toBob.start(now: Fixture.now), replayGuard: g, now: Fixture.now).reply)
        #expect(throws: HandshakeError.notInNetwork) { try i.receive(bobsHello) }
    }

    @Test func handshake_wrongNetworkKey_getsNoReplyAndNoKeyExchange() throws {
        var i = HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.otherNetworkKey, expectedResponder: Fixture.bob.peerID)
        var r = HandshakeResponder(identity: Fixture.bob, keyring: NetworkKeyring(current: Fixture.networkKey))
        let g = Fixture.handshakeGuard()
        #expect(throws: HandshakeError.notInNetwork) { try r.receive(try i.start(now: Fixture.now), replayGuard: g, now: Fixture.now) }
        // Nothing was remembered either: a genuine member's hello still works afterwards.
        var member = HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.networkKey, expectedResponder: Fixture.bob.peerID)
        var r2 = HandshakeResponder(identity: Fixture.bob, keyring: NetworkKeyring(current: Fixture.networkKey))
        let reply = try r2.receive(try member.start(now: Fixture.now), replayGuard: g, now: Fixture.now).reply
        #expect(reply != nil)
    }

    @Test func handshake_previousKeyDuringRotation_isAccepted() throws {
        var i = HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.otherNetworkKey, expectedResponder: Fixture.bob.peerID)
        var ring = NetworkKeyring(current: Fixture.otherNetworkKey)
        ring.rotate(to: Fixture.networkKey)
        var r = HandshakeResponder(identity: Fixture.bob, keyring: ring)
        let g = Fixture.handshakeGuard()
        let m2 = try #require(try r.receive(try i.start(now: Fixture.now), replayGuard: g, now: Fixture.now).reply)
        let m3 = try #require(try i.receive(m2).reply)
        let out = try r.receive(m3, replayGuard: g, now: Fixture.now)
        #expect(out.result?.networkID == Fixture.otherNetworkKey.id)
        let done = try i.receive(try #require(out.reply))
        #expect(done.result?.remote == Fixture.bob.peerID)
    }

    @Test func handshake_replayedClientHello_isRejectedBeforeKeyExchange() throws {
        var i = HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.networkKey, expectedResponder: Fixture.bob.peerID)
        let hello = try i.start(now: Fixture.now)
        let g = Fixture.handshakeGuard()
        var first = HandshakeResponder(identity: Fixture.bob, keyring: NetworkKeyring(current: Fixture.networkKey))
        _ = try first.receive(hello, replayGuard: g, now: Fixture.now)
        var second = HandshakeResponder(identity: Fixture.bob, keyring: NetworkKeyring(current: Fixture.networkKey))
        #expect(throws: HandshakeError.replayed(.replayed)) { try second.receive(hello, replayGuard: g, now: Fixture.now) }
    }

    @Test func handshake_replayedTranscriptToFreshResponder_failsAtClientAuth() throws {
        // An eavesdropper replays messages 1 and 3 to a responder that has forgotten message 1:
        // the responder's new ephemeral key makes message 3 unopenable.
        let t = try Fixture.transcript()
        var r = HandshakeResponder(identity: Fixture.bob, keyring: NetworkKeyring(current: Fixture.networkKey))
        let fresh = Fixture.handshakeGuard()
        _ = try r.receive(t.frames[0], replayGuard: fresh, now: Fixture.now)
        #expect(throws: HandshakeError.authenticationFailed) { try r.receive(t.frames[2], replayGuard: fresh, now: Fixture.now) }
    }

    @Test func handshake_clientHelloReflectedAsServerHello_rejectedBeforeKeyExchange() throws {
        // An outsider bounces the initiator's own hello back as a server hello (type byte changed,
        // timestamp dropped). The MAC binds version and type, so the initiator refuses it at the
        // HMAC, before any X25519.
        var i = HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.networkKey, expectedResponder: Fixture.bob.peerID)
        let (mac, _, ephemeral) = try helloFields(try i.start(now: Fixture.now))
        let reflected = HandshakeFrame.serverHello(mac: mac, ephemeral: ephemeral).encode()
        #expect(throws: HandshakeError.notInNetwork) { try i.receive(reflected) }
    }

    @Test func handshake_serverHelloReplayedToAnotherInitiator_isRejected() throws {
        // Message 2 of a recorded session names that session's a_e, so it does not verify for a new initiator.
        let t = try Fixture.transcript()
        var i = HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.networkKey, expectedResponder: Fixture.bob.peerID)
        _ = try i.start(now: Fixture.now)
        #expect(throws: HandshakeError.notInNetwork) { try i.receive(t.frames[1]) }
    }

    @Test func handshakeInitiator_startedTwice_throwsInsteadOfResending() throws {
        var i = HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.networkKey, expectedResponder: Fixture.bob.peerID)
        _ = try i.start(now: Fixture.now)
        #expect(throws: HandshakeError.unexpectedFrame) { try i.start(now: Fixture.now) }
    }

    @Test func handshake_completedOrFailed_releasesEphemeralSecrets() throws {
        var i = HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.networkKey, expectedResponder: Fixture.bob.peerID)
        #expect(i.ephemeralSecret == nil)  // drawn by start, not by init
        var r = HandshakeResponder(identity: Fixture.bob, keyring: NetworkKeyring(current: Fixture.networkKey))
        let g = Fixture.handshakeGuard()
        let m1 = try i.start(now: Fixture.now)
        weak let completedSecret = i.ephemeralSecret
        #expect(completedSecret != nil)
        let m2 = try #require(try r.receive(m1, replayGuard: g, now: Fixture.now).reply)
        let m3 = try #require(try i.receive(m2).reply)
        #expect(completedSecret != nil)  // still needed for message 4
        _ = try i.receive(try #require(try r.receive(m3, replayGuard: g, now: Fixture.now).reply))
        // The only owner dropped it: the secure memory is wiped and freed.
        #expect(completedSecret == nil)

        var failing = HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.networkKey, expectedResponder: Fixture.bob.peerID)
        _ = try failing.start(now: Fixture.now)
        weak let failedSecret = failing.ephemeralSecret
        #expect(failedSecret != nil)
        #expect(throws: HandshakeError.self) { try failing.receive([UInt8](repeating: 0, count: HandshakeFrame.Kind.serverHello.frameLength)) }
        #expect(failedSecret == nil)
    }

    @Test func secureConnection_unsolicitedBytes_failsOnceAndStaysFailed() throws {
        var settings = SecureChannelSettings()
        settings.maxPlaintextLength = 64
        // Not started: the initiator expects nothing, so bytes pile up until the cap.
        let client = SecureConnection(initiator: HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.networkKey,
                                                                    expectedResponder: Fixture.bob.peerID), settings: settings)
        let flood = [UInt8](repeating: 0, count: client.maxBuffered + 1)
        #expect(throws: SecureConnection.Failure.self) { try client.receive(flood) }
        let later = Result { () throws(SecureConnection.Failure) in try client.receive([1]) }
        guard case .failure(.alreadyFailed) = later else {
            Issue.record("expected alreadyFailed, got \(later)")
            return
        }
    }

    @Test func handshake_helloReplayedToAnotherResponder_getsNoReplyAndNoKeyExchange() throws {
        // v1: a hello recorded on its way to bob opened a handshake at carol. Now bob is under
        // its MAC, so carol refuses it at the HMAC, before any X25519 and without recording it.
        var i = HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.networkKey, expectedResponder: Fixture.bob.peerID)
        let hello = try i.start(now: Fixture.now)
        var carol = HandshakeResponder(identity: Fixture.carol, keyring: NetworkKeyring(current: Fixture.networkKey))
        let g = Fixture.handshakeGuard()
        #expect(throws: HandshakeError.notInNetwork) { try carol.receive(hello, replayGuard: g, now: Fixture.now) }
        #expect(g.count == 0)
        #expect(carol.expectedFrame == nil)
    }

    @Test func handshake_helloReplayedToRestartedResponder_getsNoReply() throws {
        var i = HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.networkKey, expectedResponder: Fixture.bob.peerID)
        let hello = try i.start(now: Fixture.now)
        var before = HandshakeResponder(identity: Fixture.bob, keyring: NetworkKeyring(current: Fixture.networkKey))
        _ = try before.receive(hello, replayGuard: Fixture.handshakeGuard(), now: Fixture.now)
        // Bob restarts two seconds later with a new guard: the recorded hello predates it.
        let restartedGuard = ReplayGuard.forHandshakes(startedAt: Fixture.now + 2_000)
        var after = HandshakeResponder(identity: Fixture.bob, keyring: NetworkKeyring(current: Fixture.networkKey))
        #expect(throws: HandshakeError.self) { try after.receive(hello, replayGuard: restartedGuard, now: Fixture.now + 2_500) }
        #expect(after.expectedFrame == nil)
        // And without a restart, an hour later, it is stale.
        var later = HandshakeResponder(identity: Fixture.bob, keyring: NetworkKeyring(current: Fixture.networkKey))
        #expect(throws: HandshakeError.replayed(.stale(timestamp: Fixture.now, oldestAccepted: Fixture.now + 3_540_000))) {
            try later.receive(hello, replayGuard: Fixture.handshakeGuard(), now: Fixture.now + 3_600_000)
        }
    }

    @Test func handshake_helloFromAClockFarAhead_isRefused() throws {
        var i = HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.networkKey, expectedResponder: Fixture.bob.peerID)
        let hello = try i.start(now: Fixture.now + 120_000)
        var r = HandshakeResponder(identity: Fixture.bob, keyring: NetworkKeyring(current: Fixture.networkKey))
        #expect(throws: HandshakeError.replayed(.ahead(timestamp: Fixture.now + 120_000, latestAccepted: Fixture.now + 60_000))) {
            try r.receive(hello, replayGuard: Fixture.handshakeGuard(), now: Fixture.now)
        }
    }

    @Test func handshake_nonCanonicalTwinOfAnEphemeral_isRefused() throws {
        // X25519 ignores bit 255: a member could resend a recorded a_e with that bit set to slip
        // past a guard that compares bytes. Such keys are refused outright.
        var i = HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.networkKey, expectedResponder: Fixture.bob.peerID)
        let (_, timestamp, ephemeral) = try helloFields(try i.start(now: Fixture.now))
        var twin = ephemeral
        twin[31] |= 0x80
        let mac = SHS.hmac(Fixture.networkKey.secret, SHS.clientHelloMACInput(responder: Fixture.bob.peerID, timestamp: timestamp, ephemeral: twin))
        let forged = HandshakeFrame.clientHello(mac: mac, timestamp: timestamp, ephemeral: twin).encode()
        var r = HandshakeResponder(identity: Fixture.bob, keyring: NetworkKeyring(current: Fixture.networkKey))
        #expect(throws: HandshakeError.nonCanonicalKey) { try r.receive(forged, replayGuard: Fixture.handshakeGuard(), now: Fixture.now) }
        #expect(SHS.isCanonicalCurveKey(ephemeral))
        #expect(!SHS.isCanonicalCurveKey([0xed] + [UInt8](repeating: 0xff, count: 30) + [0x7f]))  // p itself
        #expect(SHS.isCanonicalCurveKey([0xec] + [UInt8](repeating: 0xff, count: 30) + [0x7f]))   // p - 1
    }

    @Test func handshakeFrame_wrongTypeVersionOrLength_isTypedError() throws {
        let hello = HandshakeFrame.clientHello(mac: [UInt8](repeating: 1, count: 32), timestamp: 5, ephemeral: [UInt8](repeating: 2, count: 32)).encode()
        #expect(throws: WireError.unexpectedType(expected: 2, actual: 1)) { try HandshakeFrame.decode(hello, expecting: .serverHello) }
        var v = hello
        v[0] = 9
        #expect(throws: WireError.unsupportedVersion(9)) { try HandshakeFrame.decode(v, expecting: .clientHello) }
        #expect(throws: WireError.self) { try HandshakeFrame.decode(Array(hello.dropLast()), expecting: .clientHello) }
        #expect(throws: WireError.trailingBytes(count: 1)) { try HandshakeFrame.decode(hello + [0], expecting: .clientHello) }
        #expect(throws: WireError.self) { try HandshakeFrame.decode([], expecting: .clientHello) }
        for kind in HandshakeFrame.Kind.allCases {
            let body = [UInt8](repeating: 7, count: kind.frameLength - 2)
            let frame: HandshakeFrame
            switch kind {
            case .clientHello: frame = .clientHello(mac: Array(body.prefix(32)), timestamp: 0x0707_0707_0707_0707, ephemeral: Array(body.suffix(32)))
            case .serverHello: frame = .serverHello(mac: Array(body.prefix(32)), ephemeral: Array(body.suffix(32)))
            case .clientAuth: frame = .clientAuth(box: body)
            case .serverAccept: frame = .serverAccept(box: body)
            }
            #expect(try HandshakeFrame.decode(frame.encode(), expecting: kind) == frame)
        }
    }

    @Test func secureConnection_overAByteStreamInOddPieces_deliversMessagesAndEnd() throws {
        let guardBox = Fixture.handshakeGuard()
        let client = SecureConnection(initiator: HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.networkKey, expectedResponder: Fixture.bob.peerID),
                                      clock: Fixture.clock)
        let server = SecureConnection(responder: HandshakeResponder(identity: Fixture.bob, keyring: NetworkKeyring(current: Fixture.networkKey)),
                                      replayGuard: guardBox, clock: Fixture.clock)
        var toServer: [UInt8] = []
        var toClient: [UInt8] = []
        var serverGot: [[UInt8]] = []
        var clientGot: [[UInt8]] = []
        var serverFinished = false
        func apply(_ events: [SecureConnection.Event], out: inout [UInt8], got: inout [[UInt8]], finished: inout Bool) {
            for e in events {
                switch e {
                case let .send(b): out += b
                case let .message(m): got.append(m)
                case .peerFinished: finished = true
                case .established: break
                }
            }
        }
        var unused = false
        apply(try client.start(), out: &toServer, got: &clientGot, finished: &unused)
        var established = false
        for _ in 0..<20 {
            // Deliver in 7-byte pieces to exercise reassembly.
            while !toServer.isEmpty {
                let piece = Array(toServer.prefix(7)); toServer.removeFirst(piece.count)
                apply(try server.receive(piece), out: &toClient, got: &serverGot, finished: &serverFinished)
            }
            while !toClient.isEmpty {
                let piece = Array(toClient.prefix(7)); toClient.removeFirst(piece.count)
                apply(try client.receive(piece), out: &toServer, got: &clientGot, finished: &unused)
            }
            if !established, client.remote != nil {
                established = true
                apply([try client.send(Array("hello bob".utf8)), try client.finish()], out: &toServer, got: &clientGot, finished: &unused)
            }
        }
        #expect(client.remote == Fixture.bob.peerID)
        #expect(server.remote == Fixture.alice.peerID)
        #expect(serverGot == [Array("hello bob".utf8)])
        #expect(serverFinished)
        #expect(throws: SecureConnection.Failure.self) { try client.streamClosed() }  // bob never sent FINAL
        try server.streamClosed()
    }
}
