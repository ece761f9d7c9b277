import CSodium
@testable import Crypto

/// Fixed inputs shared by the tests and the docs/wire.md vectors.
enum Fixture {
    static func bytes(from start: UInt8, count: Int = 32) -> [UInt8] { (0..<count).map { start &+ UInt8($0) } }

    static let seedA = bytes(from: 0x00)
    static let seedB = bytes(from: 0x20)
    static let seedC = bytes(from: 0xc0)
    static let networkKeyBytes = bytes(from: 0x40)
    static let otherNetworkKeyBytes = bytes(from: 0xe0)
    static let clientEphemeralSecret = bytes(from: 0x60)
    static let serverEphemeralSecret = bytes(from: 0x80)
    static let datagramNonce = bytes(from: 0xa0, count: 24)
    /// The wall clock of the vectors and tests: 2027-01-15T08:00:00Z in ms since the Unix epoch.
    static let now: UInt64 = 1_800_000_000_000
    /// A clock stuck at ``now``, for secure connections.
    static let clock: @Sendable () -> UInt64 = { Fixture.now }

    /// A handshake replay guard of a node that started a minute before ``now``.
    static func handshakeGuard() -> ReplayGuard { .forHandshakes(startedAt: now - 60_000) }

    static func identity(_ seed: [UInt8]) -> Identity {
        do { return try Identity(seed: seed) } catch { preconditionFailure("fixture seed: \(error)") }
    }

    static var alice: Identity { identity(seedA) }
    static var bob: Identity { identity(seedB) }
    static var carol: Identity { identity(seedC) }
    static var networkKey: NetworkKey { key(networkKeyBytes) }
    static var otherNetworkKey: NetworkKey { key(otherNetworkKeyBytes) }

    static func key(_ bytes: [UInt8]) -> NetworkKey {
        do { return try NetworkKey(bytes: bytes) } catch { preconditionFailure("fixture key: \(error)") }
    }

    static func ephemeral(_ secret: [UInt8]) -> EphemeralKey {
        do { return try EphemeralKey(secret: secret.withUnsafeBytes { try SecureBytes(copying: $0) }) } catch {
            preconditionFailure("fixture ephemeral: \(error)")
        }
    }

    /// The four handshake messages between alice (initiator) and bob (responder) with fixed
    /// ephemerals, and both results.
    struct Transcript {
        var frames: [[UInt8]]
        var initiatorResult: HandshakeResult
        var responderResult: HandshakeResult
    }

    static func transcript() throws -> Transcript {
        var i = HandshakeInitiator(identity: alice, networkKey: networkKey, expectedResponder: bob.peerID,
                                   ephemeral: ephemeral(clientEphemeralSecret))
        var r = HandshakeResponder(identity: bob, keyring: NetworkKeyring(current: networkKey), ephemeral: ephemeral(serverEphemeralSecret))
        let replay = handshakeGuard()
        let m1 = try i.start(now: now)
        guard let m2 = try r.receive(m1, replayGuard: replay, now: now).reply,
              let m3 = try i.receive(m2).reply else { throw HandshakeError.unexpectedFrame }
        let out4 = try r.receive(m3, replayGuard: replay, now: now)
        guard let m4 = out4.reply, let rr = out4.result, let ir = try i.receive(m4).result else { throw HandshakeError.unexpectedFrame }
        return Transcript(frames: [m1, m2, m3, m4], initiatorResult: ir, responderResult: rr)
    }

    /// The delta payload of the vectors: six float32 values 0.0, 0.5, ... 2.5, little-endian.
    static let deltaFloats: [Float] = (0..<6).map { Float($0) * 0.5 }
    static var deltaPayload: [UInt8] { deltaFloats.withUnsafeBytes { Array($0) } }
    static let deltaMetadata: [UInt8] = [0, 0, 0, 0, 0, 0, 0x02, 0x58]  // u64 600 (push-sum weight)

    /// A signed envelope from `author` (alice) to `recipient` (bob).
    static func envelope(kind: DeltaKind = .modelDelta, round: UInt64 = 7, sequence: UInt64 = 42,
                         payload: [UInt8] = deltaPayload, shape: [UInt32] = [2, 3], author: Identity = alice,
                         recipient: PeerID? = bob.peerID) throws -> [UInt8] {
        let sealed = payload.withUnsafeBytes { raw in
            Result { () throws(DeltaError) in
                try SignedDelta.seal(kind: kind, networkID: networkKey.id, recipient: recipient, round: round, sequence: sequence,
                                     encoding: .float32, shape: shape, metadata: deltaMetadata, payload: raw, identity: author)
            }
        }
        return try sealed.get()
    }

    /// What bob requires of a delta from alice.
    static func expectation(kind: DeltaKind? = nil, author: DeltaExpectation.Author = .peer(alice.peerID),
                            localPeer: PeerID = bob.peerID) -> DeltaExpectation {
        DeltaExpectation(kind: kind, author: author, localPeer: localPeer)
    }
}

extension SecureBytes {
    /// Copy of the bytes, for comparing keys in tests.
    var testCopy: [UInt8] { withUnsafeBytes { Array($0) } }
}

import Testing

/// `#expect` for conditions that call mutating methods (the macro cannot capture them).
func check(_ condition: Bool, _ comment: Comment? = nil, sourceLocation: SourceLocation = #_sourceLocation) {
    #expect(condition, comment, sourceLocation: sourceLocation)
}
