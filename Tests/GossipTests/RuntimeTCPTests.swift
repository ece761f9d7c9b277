import Crypto
import Gossip
import Testing

/// The libuv TCP driver end to end on loopback: a listener and a client in one event loop run
/// the secret handshake over real sockets and exchange one secure-channel frame each way.
@Suite struct RuntimeTCPTests {
    /// One side: feeds socket bytes to its SecureConnection and acts on the events.
    final class Side {
        let name: String
        let secure: SecureConnection
        var tcp: StreamConnection?
        var received: [[UInt8]] = []
        var peerFinished = false
        var established: PeerID?
        var failure: String?
        var onProgress: () -> Void = {}

        init(name: String, secure: SecureConnection) {
            self.name = name
            self.secure = secure
        }

        func attach(_ connection: StreamConnection) {
            tcp = connection
            connection.onRead = { [unowned self] bytes in
                do { handle(try secure.receive(bytes)) } catch { fail("\(error)") }
            }
            connection.onEnd = { [unowned self] error in
                if let error { fail("\(error)") }
            }
            connection.onClose = { [unowned self] in tcp = nil }
            do {
                try connection.startReading()
                handle(try secure.start())
            } catch { fail("\(error)") }
        }

        func handle(_ events: [SecureConnection.Event]) {
            for event in events {
                switch event {
                case let .send(bytes): tcp?.write(bytes)
                case let .established(peer):
                    established = peer
                    do {
                        handle([try secure.send(Array("hello from \(name)".utf8)), try secure.finish()])
                    } catch { fail("\(error)") }
                case let .message(bytes): received.append(bytes)
                case .peerFinished: peerFinished = true
                }
            }
            onProgress()
        }

        func fail(_ message: String) {
            if failure == nil { failure = message }
            onProgress()
        }

        var isDone: Bool { failure != nil || (peerFinished && !received.isEmpty) }
    }

    @Test func tcpDriver_loopbackListenerAndClient_completeHandshakeAndOneFrameEachWay() throws {
        let alice = try Identity(seed: (0..<32).map { UInt8($0) })
        let bob = try Identity(seed: (0..<32).map { UInt8(0x20 + $0) })
        let key = try NetworkKey(bytes: (0..<32).map { UInt8(0x40 + $0) })
        let loop = try EventLoop()

        let server = Side(name: "bob", secure: SecureConnection(
            responder: HandshakeResponder(identity: bob, keyring: NetworkKeyring(current: key)), replayGuard: .forHandshakes(startedAt: WallClock.milliseconds())))
        let client = Side(name: "alice", secure: SecureConnection(
            initiator: HandshakeInitiator(identity: alice, networkKey: key, expectedResponder: bob.peerID)))

        var listener: StreamListener?
        var connectError: String?
        func closeAllIfDone() {
            guard server.isDone && client.isDone else { return }
            listener?.close()
            listener = nil
            server.tcp?.close()
            client.tcp?.close()
        }
        server.onProgress = closeAllIfDone
        client.onProgress = closeAllIfDone

        listener = try StreamListener(loop: loop, host: "127.0.0.1", port: 0) { connection in server.attach(connection) }
        let port = try #require(listener?.port)
        #expect(port != 0)
        try StreamConnection.connect(loop: loop, host: "127.0.0.1", port: port) { result in
            switch result {
            case let .success(connection): client.attach(connection)
            case let .failure(error):
                connectError = "\(error)"
                listener?.close()
                listener = nil
            }
        }
        // A guard against a hung test only (not a timing assertion): tear everything down.
        try loop.after(milliseconds: 30_000, keepsLoopAlive: false) {
            client.fail("no progress")
            listener?.close()
            listener = nil
            server.tcp?.close()
            client.tcp?.close()
        }
        loop.run()

        #expect(connectError == nil)
        #expect(server.failure == nil)
        #expect(client.failure == nil)
        #expect(client.established == bob.peerID)
        #expect(server.established == alice.peerID)
        #expect(server.received == [Array("hello from alice".utf8)])
        #expect(client.received == [Array("hello from bob".utf8)])
        #expect(server.peerFinished && client.peerFinished)
    }

    @Test func tcpConnection_closedWhileDataArrives_deliversNoMoreReads() throws {
        let loop = try EventLoop()
        var reads = 0
        var listener: StreamListener?
        var client: StreamConnection?
        listener = try StreamListener(loop: loop, host: "127.0.0.1", port: 0) { connection in
            listener?.close()
            listener = nil
            connection.onRead = { _ in
                reads += 1
                connection.close()  // after this, nothing more may be delivered
                client?.close()
            }
            do { try connection.startReading() } catch { connection.close() }
        }
        let port = try #require(listener?.port)
        try StreamConnection.connect(loop: loop, host: "127.0.0.1", port: port) { result in
            guard case let .success(connection) = result else { return }
            client = connection
            // Many writes queued at once, so more data is pending when the receiver closes.
            for _ in 0..<64 { connection.write([UInt8](repeating: 1, count: 64 << 10)) }
        }
        try loop.after(milliseconds: 30_000, keepsLoopAlive: false) {
            listener?.close()
            client?.close()
        }
        loop.run()
        #expect(reads == 1)
    }
}
