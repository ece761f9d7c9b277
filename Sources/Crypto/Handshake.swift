import CSodium

// Secret Handshake (Tarr, "Designing a Secret Handshake", ACNS 2015), as used by Secure
// Scuttlebutt, with libsodium primitives. Chosen over Noise XX because the network key is
// built into the very first message: a responder checks one HMAC before doing any
// Diffie-Hellman, so a peer without the key gets no reply and costs no key-exchange work,
// and the initiator's identity is revealed only to the responder it meant to reach.
// The price is that the initiator must know the responder's PeerID in advance; peers learn
// IDs from sealed beacons, peer exchange and the peer cache. See docs/wire.md and docs/security.md.

/// Fixed sizes and the version of the handshake.
public enum SecretHandshake {
    /// Wire version carried in every handshake frame.
    public static let version: UInt8 = 1
    /// Bytes of an HMAC-SHA-512-256 tag (`crypto_auth`).
    public static let macLength = Int(crypto_auth_BYTES)
    /// Bytes of an X25519 public key, secret scalar or shared secret.
    public static let curveKeyLength = Int(crypto_scalarmult_BYTES)
    /// Bytes of a hello body: HMAC-SHA-512-256 (32) ‖ ephemeral Curve25519 public key (32).
    public static let helloBodyLength = macLength + curveKeyLength
    /// Bytes of the client-authenticate body: secretbox(signature 64 ‖ client key 32) = 112.
    public static let clientAuthBodyLength = 112
    /// Bytes of the server-accept body: secretbox(signature 64) = 80.
    public static let serverAcceptBodyLength = 80
    /// Bytes before every body: version and frame type.
    public static let frameHeaderLength = 2
}

/// One handshake message on the wire: `version(1) ‖ type(1) ‖ body(fixed length)`.
public enum HandshakeFrame: Equatable, Sendable {
    /// Message 1, initiator → responder.
    case clientHello(mac: [UInt8], ephemeral: [UInt8])
    /// Message 2, responder → initiator.
    case serverHello(mac: [UInt8], ephemeral: [UInt8])
    /// Message 3, initiator → responder.
    case clientAuth(box: [UInt8])
    /// Message 4, responder → initiator.
    case serverAccept(box: [UInt8])

    /// Frame type bytes.
    public enum Kind: UInt8, Sendable, CaseIterable {
        case clientHello = 1, serverHello = 2, clientAuth = 3, serverAccept = 4

        /// Total frame length, header included.
        public var frameLength: Int {
            SecretHandshake.frameHeaderLength + {
                switch self {
                case .clientHello, .serverHello: return SecretHandshake.helloBodyLength
                case .clientAuth: return SecretHandshake.clientAuthBodyLength
                case .serverAccept: return SecretHandshake.serverAcceptBodyLength
                }
            }()
        }
    }

    public var kind: Kind {
        switch self {
        case .clientHello: return .clientHello
        case .serverHello: return .serverHello
        case .clientAuth: return .clientAuth
        case .serverAccept: return .serverAccept
        }
    }

    /// The frame's bytes.
    public func encode() -> [UInt8] {
        var w = ByteWriter(capacity: kind.frameLength)
        w.write(SecretHandshake.version)
        w.write(kind.rawValue)
        switch self {
        case let .clientHello(mac, e), let .serverHello(mac, e):
            w.write(bytes: mac)
            w.write(bytes: e)
        case let .clientAuth(box), let .serverAccept(box):
            w.write(bytes: box)
        }
        return w.bytes
    }

    /// Decodes exactly one frame of the expected kind. Total: any input yields a frame or a `WireError`.
    public static func decode(_ bytes: [UInt8], expecting kind: Kind) throws(WireError) -> HandshakeFrame {
        var r = ByteReader(bytes)
        let version = try r.readUInt8("handshake version")
        guard version == SecretHandshake.version else { throw .unsupportedVersion(version) }
        let type = try r.readUInt8("handshake type")
        guard type == kind.rawValue else { throw .unexpectedType(expected: kind.rawValue, actual: type) }
        let frame: HandshakeFrame
        switch kind {
        case .clientHello:
            frame = .clientHello(mac: try r.readBytes(SecretHandshake.macLength, "hello mac"),
                                 ephemeral: try r.readBytes(SecretHandshake.curveKeyLength, "hello ephemeral key"))
        case .serverHello:
            frame = .serverHello(mac: try r.readBytes(SecretHandshake.macLength, "hello mac"),
                                 ephemeral: try r.readBytes(SecretHandshake.curveKeyLength, "hello ephemeral key"))
        case .clientAuth:
            frame = .clientAuth(box: try r.readBytes(SecretHandshake.clientAuthBodyLength, "client auth box"))
        case .serverAccept:
            frame = .serverAccept(box: try r.readBytes(SecretHandshake.serverAcceptBodyLength, "server accept box"))
        }
        try r.expectEnd()
        return frame
    }
}

/// Why a handshake stopped. On every error the driver closes the connection without replying.
public enum HandshakeError: Error, Equatable, Sendable, CustomStringConvertible {
    /// The hello's HMAC does not verify under any accepted network key: not a member.
    case notInNetwork
    /// This client hello was seen before.
    case replayed
    /// A box did not open or a signature did not verify (tampering, or the initiator
    /// addressed a different responder than the one it reached).
    case authenticationFailed
    /// The peer's long-term key is not a valid Ed25519 point.
    case invalidPeerKey
    /// A Diffie-Hellman result was all zeros (small-order point).
    case weakKeyExchange
    /// The frame was malformed.
    case malformed(WireError)
    /// A frame arrived in a state that does not expect it.
    case unexpectedFrame
    /// Secure memory or a primitive failed.
    case crypto(CryptoError)

    public var description: String {
        switch self {
        case .notInNetwork: return "handshake: peer does not hold the network key"
        case .replayed: return "handshake: replayed client hello"
        case .authenticationFailed: return "handshake: authentication failed (tampered, or not the expected peer)"
        case .invalidPeerKey: return "handshake: peer key is not a valid Ed25519 key"
        case .weakKeyExchange: return "handshake: key exchange produced a weak shared secret"
        case let .malformed(e): return "handshake: \(e)"
        case .unexpectedFrame: return "handshake: unexpected message"
        case let .crypto(e): return "handshake: \(e)"
        }
    }
}

/// The outcome of a completed handshake: who the peer is and one stream key per direction.
public struct HandshakeResult: Sendable {
    /// The authenticated remote peer.
    public let remote: PeerID
    /// Key for `crypto_secretstream` from this side to the peer.
    public let sendKey: SecureBytes
    /// Key for `crypto_secretstream` from the peer to this side.
    public let receiveKey: SecureBytes
    /// ID of the network key the handshake ran under (matters during key rotation).
    public let networkID: [UInt8]
}

/// What a handshake step produced: a frame to send, and/or the finished session.
public struct HandshakeOutput: Sendable {
    public var reply: [UInt8]?
    public var result: HandshakeResult?
}

/// An ephemeral Curve25519 key pair for one handshake.
public struct EphemeralKey: Sendable {
    let secret: SecureBytes
    /// The public half.
    public let publicKey: [UInt8]

    /// A fresh random key pair.
    public static func generate() throws -> EphemeralKey {
        try EphemeralKey(secret: SecureBytes.random(count: Int(crypto_scalarmult_BYTES)))
    }

    /// A key pair from a fixed secret (test vectors only).
    public init(secret: SecureBytes) throws {
        Sodium.ensureInitialized()
        guard secret.count == Int(crypto_scalarmult_SCALARBYTES) else {
            throw CryptoError.invalidLength(what: "ephemeral secret", expected: SecretHandshake.curveKeyLength, actual: secret.count)
        }
        var pk = [UInt8](repeating: 0, count: Int(crypto_scalarmult_BYTES))
        let rc = secret.withUnsafeBytes { crypto_scalarmult_base(&pk, $0.u8) }
        guard rc == 0 else { throw CryptoError.primitiveFailed("crypto_scalarmult_base") }
        self.secret = secret
        self.publicKey = pk
    }
}

/// Primitive helpers shared by both sides.
enum SHS {
    static let zeroNonce = [UInt8](repeating: 0, count: Int(crypto_secretbox_NONCEBYTES))

    static func hmac(_ key: SecureBytes, _ message: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(crypto_auth_BYTES))
        key.withUnsafeBytes { k in _ = crypto_auth(&out, message, UInt64(message.count), k.u8) }
        return out
    }

    static func verifyHMAC(_ key: SecureBytes, mac: [UInt8], message: [UInt8]) -> Bool {
        guard mac.count == Int(crypto_auth_BYTES) else { return false }
        return key.withUnsafeBytes { k in crypto_auth_verify(mac, message, UInt64(message.count), k.u8) == 0 }
    }

    /// X25519; fails on an all-zero result (small-order input).
    static func dh(_ secret: some ByteSource, _ publicKey: [UInt8]) throws(HandshakeError) -> SecureBytes {
        guard publicKey.count == SecretHandshake.curveKeyLength else { throw .malformed(.invalidValue(field: "public key", reason: "length")) }
        let out: SecureBytes
        do {
            out = try SecureBytes(count: SecretHandshake.curveKeyLength) { q in
                let rc = secret.withBytes { n in crypto_scalarmult(q.u8, n.u8, publicKey) }
                guard rc == 0 else { throw HandshakeError.weakKeyExchange }
            }
        } catch let e as HandshakeError {
            throw e
        } catch {
            throw .crypto(.outOfMemory)
        }
        return out
    }

    /// SHA-256 over the concatenation of `parts`, into secure memory.
    static func sha256(_ parts: [any ByteSource]) throws(HandshakeError) -> SecureBytes {
        do {
            return try SecureBytes(count: Int(crypto_hash_sha256_BYTES)) { out in
                var state = crypto_hash_sha256_state()
                crypto_hash_sha256_init(&state)
                for part in parts { part.withBytes { _ = crypto_hash_sha256_update(&state, $0.u8, UInt64($0.count)) } }
                crypto_hash_sha256_final(&state, out.u8)
                sodium_memzero(&state, MemoryLayout<crypto_hash_sha256_state>.size)
            }
        } catch {
            throw .crypto(.outOfMemory)
        }
    }

    static func publicSHA256(_ source: some ByteSource) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(crypto_hash_sha256_BYTES))
        source.withBytes { _ = crypto_hash_sha256(&out, $0.u8, UInt64($0.count)) }
        return out
    }

    static func seal(_ plaintext: [UInt8], key: SecureBytes) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: plaintext.count + Int(crypto_secretbox_MACBYTES))
        key.withUnsafeBytes { k in _ = crypto_secretbox_easy(&out, plaintext, UInt64(plaintext.count), zeroNonce, k.u8) }
        return out
    }

    static func open(_ box: [UInt8], key: SecureBytes) throws(HandshakeError) -> [UInt8] {
        guard box.count >= Int(crypto_secretbox_MACBYTES) else { throw .authenticationFailed }
        var out = [UInt8](repeating: 0, count: box.count - Int(crypto_secretbox_MACBYTES))
        let rc = key.withUnsafeBytes { k in
            out.withUnsafeMutableBytes { o in crypto_secretbox_open_easy(o.u8, box, UInt64(box.count), zeroNonce, k.u8) }
        }
        guard rc == 0 else { throw .authenticationFailed }
        return out
    }

    static func edToCurvePublic(_ id: PeerID) throws(HandshakeError) -> [UInt8] {
        guard id.isValidPublicKey else { throw .invalidPeerKey }
        var out = [UInt8](repeating: 0, count: SecretHandshake.curveKeyLength)
        guard crypto_sign_ed25519_pk_to_curve25519(&out, id.bytes) == 0 else { throw .invalidPeerKey }
        return out
    }

    static func edToCurveSecret(_ identity: Identity) throws(HandshakeError) -> SecureBytes {
        do {
            return try identity.secretKey.withUnsafeBytes { sk in
                try SecureBytes(count: SecretHandshake.curveKeyLength) { out in _ = crypto_sign_ed25519_sk_to_curve25519(out.u8, sk.u8) }
            }
        } catch {
            throw .crypto(.outOfMemory)
        }
    }

    /// Stream keys: shared = sha256(sha256(K ‖ ab ‖ aB ‖ Ab)); key towards X = sha256(shared ‖ X).
    static func sessionKeys(K: SecureBytes, ab: SecureBytes, aB: SecureBytes, Ab: SecureBytes,
                            towardsRemote remote: PeerID, towardsLocal local: PeerID) throws(HandshakeError) -> (send: SecureBytes, receive: SecureBytes) {
        let inner = try sha256([K, ab, aB, Ab])
        let shared = try sha256([inner])
        return (try sha256([shared, remote.bytes]), try sha256([shared, local.bytes]))
    }
}

/// The initiator (client) side of the secret handshake. Sans-IO: feed it frames, send what it returns.
public struct HandshakeInitiator: Sendable {
    private enum State: Sendable { case ready, awaitingServerHello, awaitingServerAccept, done, failed }

    private let identity: Identity
    private let networkKey: NetworkKey
    /// The responder this initiator insists on: the handshake fails unless it is this peer.
    public let expectedResponder: PeerID
    private let ephemeral: EphemeralKey
    private var state: State = .ready
    private var serverEphemeral: [UInt8] = []
    private var ab: SecureBytes?
    private var aB: SecureBytes?
    private var signatureA: [UInt8] = []

    /// An initiator that will only complete with `expectedResponder`.
    public init(identity: Identity, networkKey: NetworkKey, expectedResponder: PeerID, ephemeral: EphemeralKey? = nil) throws {
        self.identity = identity
        self.networkKey = networkKey
        self.expectedResponder = expectedResponder
        self.ephemeral = try ephemeral ?? EphemeralKey.generate()
    }

    /// The frame the driver should read next, or nil if none is expected.
    public var expectedFrame: HandshakeFrame.Kind? {
        switch state {
        case .awaitingServerHello: return .serverHello
        case .awaitingServerAccept: return .serverAccept
        default: return nil
        }
    }

    /// Message 1: `hmac_K(a_e) ‖ a_e`.
    public mutating func start() -> [UInt8] {
        state = .awaitingServerHello
        return HandshakeFrame.clientHello(mac: SHS.hmac(networkKey.secret, ephemeral.publicKey), ephemeral: ephemeral.publicKey).encode()
    }

    /// Consumes message 2 (returns message 3) or message 4 (returns the session).
    public mutating func receive(_ bytes: [UInt8]) throws(HandshakeError) -> HandshakeOutput {
        let previous = state
        state = .failed
        switch previous {
        case .awaitingServerHello:
            let frame: HandshakeFrame
            do { frame = try HandshakeFrame.decode(bytes, expecting: .serverHello) } catch { throw .malformed(error) }
            guard case let .serverHello(mac, be) = frame else { throw .unexpectedFrame }
            guard SHS.verifyHMAC(networkKey.secret, mac: mac, message: be) else { throw .notInNetwork }
            let ab = try SHS.dh(ephemeral.secret, be)
            let aB = try SHS.dh(ephemeral.secret, try SHS.edToCurvePublic(expectedResponder))
            // H = sign_A(K ‖ B ‖ sha256(ab))
            var signed = networkKey.secret.withUnsafeBytes { Array($0) }
            defer { wipe(&signed) }
            signed += expectedResponder.bytes
            signed += SHS.publicSHA256(ab)
            let sigA = identity.sign(signed)
            let boxKey = try SHS.sha256([networkKey.secret, ab, aB])
            let box = SHS.seal(sigA + identity.peerID.bytes, key: boxKey)
            self.serverEphemeral = be
            self.ab = ab
            self.aB = aB
            self.signatureA = sigA
            state = .awaitingServerAccept
            return HandshakeOutput(reply: HandshakeFrame.clientAuth(box: box).encode(), result: nil)
        case .awaitingServerAccept:
            guard let ab, let aB else { throw .unexpectedFrame }
            let frame: HandshakeFrame
            do { frame = try HandshakeFrame.decode(bytes, expecting: .serverAccept) } catch { throw .malformed(error) }
            guard case let .serverAccept(box) = frame else { throw .unexpectedFrame }
            let Ab = try SHS.dh(try SHS.edToCurveSecret(identity), serverEphemeral)
            let boxKey = try SHS.sha256([networkKey.secret, ab, aB, Ab])
            let sigB = try SHS.open(box, key: boxKey)
            // sign_B(K ‖ H ‖ A ‖ sha256(ab))
            var signed = networkKey.secret.withUnsafeBytes { Array($0) }
            defer { wipe(&signed) }
            signed += signatureA + identity.peerID.bytes + SHS.publicSHA256(ab)
            guard expectedResponder.verify(signature: sigB, message: signed) else { throw .authenticationFailed }
            let keys = try SHS.sessionKeys(K: networkKey.secret, ab: ab, aB: aB, Ab: Ab,
                                           towardsRemote: expectedResponder, towardsLocal: identity.peerID)
            self.ab = nil
            self.aB = nil
            state = .done
            return HandshakeOutput(reply: nil, result: HandshakeResult(remote: expectedResponder, sendKey: keys.send,
                                                                       receiveKey: keys.receive, networkID: networkKey.id))
        default:
            throw .unexpectedFrame
        }
    }
}

/// Remembers recent client hellos so a replayed message 1 is refused before any key exchange.
/// Entries are added only after the HMAC verified, so outsiders cannot fill it.
public struct HandshakeReplayGuard: Sendable {
    /// How many recent hellos are remembered. Ephemeral keys are random, so a legitimate
    /// repeat never happens; 16,384 × 32 bytes = 512 KiB covers hours of handshakes on a busy node.
    public static let defaultCapacity = 16_384

    private var seen: Set<[UInt8]> = []
    private var order: [[UInt8]] = []
    private var next = 0
    public let capacity: Int

    public init(capacity: Int = HandshakeReplayGuard.defaultCapacity) { self.capacity = max(1, capacity) }

    /// Records `ephemeral`; false if it was already recorded.
    public mutating func insert(_ ephemeral: [UInt8]) -> Bool {
        guard !seen.contains(ephemeral) else { return false }
        if order.count < capacity {
            order.append(ephemeral)
        } else {
            seen.remove(order[next])
            order[next] = ephemeral
            next = (next + 1) % capacity
        }
        seen.insert(ephemeral)
        return true
    }
}

/// The responder (server) side of the secret handshake.
public struct HandshakeResponder: Sendable {
    private enum State: Sendable { case awaitingClientHello, awaitingClientAuth, done, failed }

    private let identity: Identity
    private let keyring: NetworkKeyring
    private let ephemeralSource: EphemeralKey?
    private var ephemeral: EphemeralKey?
    private var networkKey: NetworkKey?
    private var clientEphemeral: [UInt8] = []
    private var ab: SecureBytes?
    private var aB: SecureBytes?
    private var state: State = .awaitingClientHello

    /// A responder accepting any key of `keyring`. `ephemeral` is for test vectors; by default
    /// a fresh key is drawn only once a hello has proved network membership.
    public init(identity: Identity, keyring: NetworkKeyring, ephemeral: EphemeralKey? = nil) {
        self.identity = identity
        self.keyring = keyring
        self.ephemeralSource = ephemeral
    }

    /// The frame the driver should read next, or nil if none is expected.
    public var expectedFrame: HandshakeFrame.Kind? {
        switch state {
        case .awaitingClientHello: return .clientHello
        case .awaitingClientAuth: return .clientAuth
        default: return nil
        }
    }

    /// Consumes message 1 (returns message 2) or message 3 (returns message 4 and the session).
    public mutating func receive(_ bytes: [UInt8], replayGuard: inout HandshakeReplayGuard) throws(HandshakeError) -> HandshakeOutput {
        let previous = state
        state = .failed
        switch previous {
        case .awaitingClientHello:
            let frame: HandshakeFrame
            do { frame = try HandshakeFrame.decode(bytes, expecting: .clientHello) } catch { throw .malformed(error) }
            guard case let .clientHello(mac, ae) = frame else { throw .unexpectedFrame }
            // Only an HMAC check per accepted key before anything costly.
            guard let key = keyring.accepted.first(where: { SHS.verifyHMAC($0.secret, mac: mac, message: ae) }) else {
                throw .notInNetwork
            }
            guard replayGuard.insert(ae) else { throw .replayed }
            let eph: EphemeralKey
            if let fixed = ephemeralSource { eph = fixed } else {
                do { eph = try EphemeralKey.generate() } catch { throw .crypto(.outOfMemory) }
            }
            let ab = try SHS.dh(eph.secret, ae)
            let aB = try SHS.dh(try SHS.edToCurveSecret(identity), ae)
            self.ephemeral = eph
            self.networkKey = key
            self.clientEphemeral = ae
            self.ab = ab
            self.aB = aB
            state = .awaitingClientAuth
            return HandshakeOutput(reply: HandshakeFrame.serverHello(mac: SHS.hmac(key.secret, eph.publicKey), ephemeral: eph.publicKey).encode(), result: nil)
        case .awaitingClientAuth:
            guard let ab, let aB, let key = networkKey, let eph = ephemeral else { throw .unexpectedFrame }
            let frame: HandshakeFrame
            do { frame = try HandshakeFrame.decode(bytes, expecting: .clientAuth) } catch { throw .malformed(error) }
            guard case let .clientAuth(box) = frame else { throw .unexpectedFrame }
            let plain = try SHS.open(box, key: try SHS.sha256([key.secret, ab, aB]))
            guard plain.count == Identity.signatureLength + PeerID.length,
                  let clientID = PeerID(bytes: plain.suffix(PeerID.length)) else { throw .authenticationFailed }
            let sigA = Array(plain.prefix(Identity.signatureLength))
            var signedA = key.secret.withUnsafeBytes { Array($0) }
            defer { wipe(&signedA) }
            signedA += identity.peerID.bytes + SHS.publicSHA256(ab)
            guard clientID.isValidPublicKey else { throw .invalidPeerKey }
            guard clientID.verify(signature: sigA, message: signedA) else { throw .authenticationFailed }
            let Ab = try SHS.dh(eph.secret, try SHS.edToCurvePublic(clientID))
            var signedB = key.secret.withUnsafeBytes { Array($0) }
            defer { wipe(&signedB) }
            signedB += sigA + clientID.bytes + SHS.publicSHA256(ab)
            let sigB = identity.sign(signedB)
            let box4 = SHS.seal(sigB, key: try SHS.sha256([key.secret, ab, aB, Ab]))
            let keys = try SHS.sessionKeys(K: key.secret, ab: ab, aB: aB, Ab: Ab,
                                           towardsRemote: clientID, towardsLocal: identity.peerID)
            self.ab = nil
            self.aB = nil
            state = .done
            return HandshakeOutput(reply: HandshakeFrame.serverAccept(box: box4).encode(),
                                   result: HandshakeResult(remote: clientID, sendKey: keys.send, receiveKey: keys.receive, networkID: key.id))
        default:
            throw .unexpectedFrame
        }
    }
}
