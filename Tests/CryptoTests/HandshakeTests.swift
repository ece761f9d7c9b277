import Testing
@testable import Crypto

@Suite struct HandshakeTests {
    @Test func handshake_matchingKeys_bothSidesAgreeOnPeersAndStreamKeys() throws {
        let t = try Fixture.transcript()
        #expect(t.initiatorResult.remote == Fixture.bob.peerID)
        #expect(t.responderResult.remote == Fixture.alice.peerID)
        #expect(t.initiatorResult.sendKey.testCopy == t.responderResult.receiveKey.testCopy)
        #expect(t.initiatorResult.receiveKey.testCopy == t.responderResult.sendKey.testCopy)
        #expect(t.initiatorResult.sendKey.testCopy != t.initiatorResult.receiveKey.testCopy)
        #expect(t.frames.map(\.count) == [66, 66, 114, 82])
    }

    @Test func handshake_randomEphemerals_giveFreshKeysEachTime() throws {
        func run() throws -> [UInt8] {
            var i = try HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.networkKey, expectedResponder: Fixture.bob.peerID)
            var r = HandshakeResponder(identity: Fixture.bob, keyring: NetworkKeyring(current: Fixture.networkKey))
            let g = HandshakeReplayGuard()
            let m2 = try #require(try r.receive(try i.start(), replayGuard: g).reply)
            let m3 = try #require(try i.receive(m2).reply)
            let m4 = try #require(try r.receive(m3, replayGuard: g).reply)
            return try #require(try i.receive(m4).result).sendKey.testCopy
        }
        #expect(try run() != run())
    }

    /// Runs the handshake, flipping bit `bit` of message `index` (0...3) in transit.
    /// Returns the errors each side saw (nil if the side did not fail by itself).
    private func runWithFlip(message index: Int, bit: Int) throws -> (initiator: HandshakeError?, responder: HandshakeError?, completed: Bool) {
        var i = try HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.networkKey, expectedResponder: Fixture.bob.peerID)
        var r = HandshakeResponder(identity: Fixture.bob, keyring: NetworkKeyring(current: Fixture.networkKey))
        let g = HandshakeReplayGuard()
        func flip(_ m: [UInt8], _ k: Int) -> [UInt8] {
            guard k == index else { return m }
            var m = m
            m[bit / 8 % m.count] ^= UInt8(1 << (bit % 8))
            return m
        }
        var m = flip(try i.start(), 0)
        do {
            m = flip(try #require(try r.receive(m, replayGuard: g).reply), 1)
        } catch let e as HandshakeError { return (nil, e, false) }
        do {
            m = flip(try #require(try i.receive(m).reply), 2)
        } catch let e as HandshakeError { return (e, nil, false) }
        let out: HandshakeOutput
        do {
            out = try r.receive(m, replayGuard: g)
        } catch { return (nil, error, false) }
        m = flip(try #require(out.reply), 3)
        do {
            _ = try i.receive(m)
        } catch { return (error, nil, false) }
        return (nil, nil, true)
    }

    @Test(arguments: 0..<4)
    func handshake_oneBitFlippedInMessage_failsCleanlyWithoutCompleting(message: Int) throws {
        let lengths = [66, 66, 114, 82]
        // Flip a bit in the header, in the middle and in the last byte.
        for bit in [0, 8 * 2 + 3, 8 * (lengths[message] / 2) + 5, 8 * (lengths[message] - 1) + 7] {
            let outcome = try runWithFlip(message: message, bit: bit)
            #expect(!outcome.completed, "message \(message) bit \(bit) was not detected")
            // The side that received the altered message is the one that fails; the other never
            // receives its next message, so its connection closes without a session.
            if message % 2 == 0 { #expect(outcome.responder != nil) } else { #expect(outcome.initiator != nil) }
        }
    }

    @Test func handshake_initiatorExpectingXReachesY_aborts() throws {
        // Alice wants Carol but reaches Bob: Bob cannot open message 3 (it is keyed to Carol).
        var i = try HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.networkKey, expectedResponder: Fixture.carol.peerID)
        var r = HandshakeResponder(identity: Fixture.bob, keyring: NetworkKeyring(current: Fixture.networkKey))
        let g = HandshakeReplayGuard()
        let m2 = try #require(try r.receive(try i.start(), replayGuard: g).reply)
        let m3 = try #require(try i.receive(m2).reply)
        #expect(throws: HandshakeError.authenticationFailed) { try r.receive(m3, replayGuard: g) }
        // Even if a malicious Bob answered with a message 4 of his own, Alice would refuse it.
        #expect(throws: HandshakeError.self) { try i.receive(m3) }
    }

    @Test func handshake_wrongNetworkKey_getsNoReplyAndNoKeyExchange() throws {
        var i = try HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.otherNetworkKey, expectedResponder: Fixture.bob.peerID)
        var r = HandshakeResponder(identity: Fixture.bob, keyring: NetworkKeyring(current: Fixture.networkKey))
        let g = HandshakeReplayGuard()
        #expect(throws: HandshakeError.notInNetwork) { try r.receive(try i.start(), replayGuard: g) }
        // Nothing was remembered either: a genuine member's hello still works afterwards.
        var member = try HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.networkKey, expectedResponder: Fixture.bob.peerID)
        var r2 = HandshakeResponder(identity: Fixture.bob, keyring: NetworkKeyring(current: Fixture.networkKey))
        let reply = try r2.receive(try member.start(), replayGuard: g).reply
        #expect(reply != nil)
    }

    @Test func handshake_previousKeyDuringRotation_isAccepted() throws {
        var i = try HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.otherNetworkKey, expectedResponder: Fixture.bob.peerID)
        var ring = NetworkKeyring(current: Fixture.otherNetworkKey)
        ring.rotate(to: Fixture.networkKey)
        var r = HandshakeResponder(identity: Fixture.bob, keyring: ring)
        let g = HandshakeReplayGuard()
        let m2 = try #require(try r.receive(try i.start(), replayGuard: g).reply)
        let m3 = try #require(try i.receive(m2).reply)
        let out = try r.receive(m3, replayGuard: g)
        #expect(out.result?.networkID == Fixture.otherNetworkKey.id)
        let done = try i.receive(try #require(out.reply))
        #expect(done.result?.remote == Fixture.bob.peerID)
    }

    @Test func handshake_replayedClientHello_isRejectedBeforeKeyExchange() throws {
        var i = try HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.networkKey, expectedResponder: Fixture.bob.peerID)
        let hello = try i.start()
        let g = HandshakeReplayGuard()
        var first = HandshakeResponder(identity: Fixture.bob, keyring: NetworkKeyring(current: Fixture.networkKey))
        _ = try first.receive(hello, replayGuard: g)
        var second = HandshakeResponder(identity: Fixture.bob, keyring: NetworkKeyring(current: Fixture.networkKey))
        #expect(throws: HandshakeError.replayed) { try second.receive(hello, replayGuard: g) }
    }

    @Test func handshake_replayedTranscriptToFreshResponder_failsAtClientAuth() throws {
        // An eavesdropper replays messages 1 and 3 to a responder that has forgotten message 1:
        // the responder's new ephemeral key makes message 3 unopenable.
        let t = try Fixture.transcript()
        var r = HandshakeResponder(identity: Fixture.bob, keyring: NetworkKeyring(current: Fixture.networkKey))
        let fresh = HandshakeReplayGuard()
        _ = try r.receive(t.frames[0], replayGuard: fresh)
        #expect(throws: HandshakeError.authenticationFailed) { try r.receive(t.frames[2], replayGuard: fresh) }
    }

    @Test func handshake_clientHelloReflectedAsServerHello_rejectedBeforeKeyExchange() throws {
        // An outsider bounces the initiator's own hello back with the type byte changed. The MAC
        // binds version and type, so the initiator refuses it at the HMAC, before any X25519.
        var i = try HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.networkKey, expectedResponder: Fixture.bob.peerID)
        var reflected = try i.start()
        reflected[1] = HandshakeFrame.Kind.serverHello.rawValue
        #expect(throws: HandshakeError.notInNetwork) { try i.receive(reflected) }
    }

    @Test func handshake_serverHelloReplayedToAnotherInitiator_isRejected() throws {
        // Message 2 of a recorded session names that session's a_e, so it does not verify for a new initiator.
        let t = try Fixture.transcript()
        var i = try HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.networkKey, expectedResponder: Fixture.bob.peerID)
        _ = try i.start()
        #expect(throws: HandshakeError.notInNetwork) { try i.receive(t.frames[1]) }
    }

    @Test func handshakeInitiator_startedTwice_throwsInsteadOfResending() throws {
        var i = try HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.networkKey, expectedResponder: Fixture.bob.peerID)
        _ = try i.start()
        #expect(throws: HandshakeError.unexpectedFrame) { try i.start() }
    }

    @Test func handshake_completedOrFailed_releasesEphemeralSecrets() throws {
        weak var completedSecret: SecureBytes?
        weak var failedSecret: SecureBytes?
        var i: HandshakeInitiator
        var failing: HandshakeInitiator
        do {
            let e = Fixture.ephemeral(Fixture.clientEphemeralSecret)
            completedSecret = e.secret
            i = try HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.networkKey, expectedResponder: Fixture.bob.peerID, ephemeral: e)
            let f = Fixture.ephemeral(Fixture.serverEphemeralSecret)
            failedSecret = f.secret
            failing = try HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.networkKey, expectedResponder: Fixture.bob.peerID, ephemeral: f)
        }
        var r = HandshakeResponder(identity: Fixture.bob, keyring: NetworkKeyring(current: Fixture.networkKey))
        let g = HandshakeReplayGuard()
        let m2 = try #require(try r.receive(try i.start(), replayGuard: g).reply)
        let m3 = try #require(try i.receive(m2).reply)
        #expect(completedSecret != nil)  // still needed for message 4
        _ = try i.receive(try #require(try r.receive(m3, replayGuard: g).reply))
        #expect(completedSecret == nil)
        _ = try failing.start()
        #expect(throws: HandshakeError.self) { try failing.receive([UInt8](repeating: 0, count: HandshakeFrame.Kind.serverHello.frameLength)) }
        #expect(failedSecret == nil)
    }

    @Test func secureConnection_unsolicitedBytes_failsOnceAndStaysFailed() throws {
        var settings = SecureChannelSettings()
        settings.maxPlaintextLength = 64
        // Not started: the initiator expects nothing, so bytes pile up until the cap.
        let client = SecureConnection(initiator: try HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.networkKey,
                                                                        expectedResponder: Fixture.bob.peerID), settings: settings)
        let flood = [UInt8](repeating: 0, count: client.maxBuffered + 1)
        #expect(throws: SecureConnection.Failure.self) { try client.receive(flood) }
        let later = Result { () throws(SecureConnection.Failure) in try client.receive([1]) }
        guard case .failure(.alreadyFailed) = later else {
            Issue.record("expected alreadyFailed, got \(later)")
            return
        }
    }

    @Test func handshakeReplayGuard_full_forgetsOldestOnly() {
        let g = HandshakeReplayGuard(capacity: 2)
        let results = [g.insert([1]), g.insert([2]), g.insert([2]), g.insert([3]), g.insert([1]), g.insert([3])]
        // The third insert is a repeat; the fourth evicts [1], so [1] is new again; [3] is still known.
        #expect(results == [true, true, false, true, true, false])
    }

    @Test func handshakeFrame_wrongTypeVersionOrLength_isTypedError() throws {
        let hello = HandshakeFrame.clientHello(mac: [UInt8](repeating: 1, count: 32), ephemeral: [UInt8](repeating: 2, count: 32)).encode()
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
            case .clientHello: frame = .clientHello(mac: Array(body.prefix(32)), ephemeral: Array(body.suffix(32)))
            case .serverHello: frame = .serverHello(mac: Array(body.prefix(32)), ephemeral: Array(body.suffix(32)))
            case .clientAuth: frame = .clientAuth(box: body)
            case .serverAccept: frame = .serverAccept(box: body)
            }
            #expect(try HandshakeFrame.decode(frame.encode(), expecting: kind) == frame)
        }
    }

    @Test func secureConnection_overAByteStreamInOddPieces_deliversMessagesAndEnd() throws {
        let guardBox = HandshakeReplayGuard()
        let client = SecureConnection(initiator: try HandshakeInitiator(identity: Fixture.alice, networkKey: Fixture.networkKey, expectedResponder: Fixture.bob.peerID))
        let server = SecureConnection(responder: HandshakeResponder(identity: Fixture.bob, keyring: NetworkKeyring(current: Fixture.networkKey)), replayGuard: guardBox)
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
