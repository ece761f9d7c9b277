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
    public static let version: UInt8 = 2
    /// Bytes of an HMAC-SHA-512-256 tag (`crypto_auth`).
    public static let macLength = Int(crypto_auth_BYTES)
    /// Bytes of an X25519 public key, secret scalar or shared secret.
    public static let curveKeyLength = Int(crypto_scalarmult_BYTES)
    /// Bytes of the client hello's timestamp: whole seconds since the Unix epoch (u64 BE).
    public static let timestampLength = 8
    /// Bytes of the client hello body: HMAC-SHA-512-256 (32) ‖ timestamp (8) ‖ ephemeral key (32).
    public static let clientHelloBodyLength = macLength + timestampLength + curveKeyLength
    /// Bytes of the server hello body: HMAC-SHA-512-256 (32) ‖ ephemeral Curve25519 public key (32).
    public static let serverHelloBodyLength = macLength + curveKeyLength
    /// Bytes of the client-authenticate body: secretbox(signature 64 ‖ client key 32) = 112.
    public static let clientAuthBodyLength = 112
    /// Bytes of the server-accept body: secretbox(signature 64) = 80.
    public static let serverAcceptBodyLength = 80
    /// Bytes before every body: version and frame type.
    public static let frameHeaderLength = 2
}

/// One handshake message on the wire: `version(1) ‖ type(1) ‖ body(fixed length)`.
public enum HandshakeFrame: Equatable, Sendable {
    /// Message 1, initiator → responder; `timestamp` in whole seconds since the Unix epoch.
    case clientHello(mac: [UInt8], timestamp: UInt64, ephemeral: [UInt8])
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
                case .clientHello: return SecretHandshake.clientHelloBodyLength
                case .serverHello: return SecretHandshake.serverHelloBodyLength
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
        case let .clientHello(mac, timestamp, e):
            w.write(bytes: mac)
            w.writeUInt64(timestamp)
            w.write(bytes: e)
        case let .serverHello(mac, e):
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
                                 timestamp: try r.readUInt64("hello timestamp"),
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
    /// This client hello was accepted before, or its timestamp is outside the freshness window.
    case replayed(ReplayGuard.Refusal)
    /// An ephemeral key is not the canonical encoding of a Curve25519 point.
    case nonCanonicalKey
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
        case let .replayed(why): return "handshake: client hello refused: \(why)"
        case .nonCanonicalKey: return "handshake: ephemeral key is not canonically encoded"
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

    /// A key pair from a fixed secret (test vectors only; tests reach it with `@testable import`).
    init(secret: SecureBytes) throws {
        try Sodium.require()
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

    /// Prefix of every hello MAC input: names the protocol so the MAC never verifies as another use of K.
    static let helloLabel = Array("murmuration/shs/hello/v2".utf8)

    /// What message 1's HMAC covers: `label ‖ version ‖ 1 ‖ B ‖ timestamp(u64 BE) ‖ a_e`.
    /// Binding the responder B means a recorded hello opens no handshake at any other member;
    /// the timestamp bounds how long it can be replayed at B itself.
    static func clientHelloMACInput(responder: PeerID, timestamp: UInt64, ephemeral: [UInt8]) -> [UInt8] {
        var w = ByteWriter(capacity: helloLabel.count + 2 + PeerID.length + 8 + ephemeral.count)
        w.write(bytes: helloLabel)
        w.write(SecretHandshake.version)
        w.write(HandshakeFrame.Kind.clientHello.rawValue)
        w.write(bytes: responder.bytes)
        w.writeUInt64(timestamp)
        w.write(bytes: ephemeral)
        return w.bytes
    }

    /// What message 2's HMAC covers: `label ‖ version ‖ 2 ‖ B ‖ b_e ‖ a_e`. Binding version and
    /// type stops a client hello being reflected as a server hello; binding a_e stops a server
    /// hello being replayed into another handshake.
    static func serverHelloMACInput(responder: PeerID, ephemeral: [UInt8], clientEphemeral: [UInt8]) -> [UInt8] {
        helloLabel + [SecretHandshake.version, HandshakeFrame.Kind.serverHello.rawValue] + responder.bytes + ephemeral + clientEphemeral
    }

    /// True if `key` is the canonical encoding of a Curve25519 u-coordinate: below 2^255 − 19.
    /// X25519 ignores bit 255 and reduces larger values, so a non-canonical twin of a key
    /// would otherwise pass a replay guard that compares bytes.
    static func isCanonicalCurveKey(_ key: [UInt8]) -> Bool {
        guard key.count == SecretHandshake.curveKeyLength else { return false }
        if key[31] < 0x7f { return true }
        if key[31] > 0x7f { return false }
        if key[1..<31].contains(where: { $0 != 0xff }) { return true }
        return key[0] < 0xed
    }

    static func hmac(_ key: SecureBytes, _ message: [UInt8]) -> [UInt8] {
        var out = [UInt8](repeating: 0, count: Int(crypto_auth_BYTES))
        key.withUnsafeBytes { k in _ = crypto_auth(&out, message, UInt64(message.count), k.u8) }
        return out
    }

    static func verifyHMAC(_ key: SecureBytes, mac: [UInt8], message: [UInt8]) -> Bool {
        guard mac.count == Int(crypto_auth_BYTES) else { return false }
        return key.withUnsafeBytes { k in crypto_auth_verify(mac, message, UInt64(message.count), k.u8) == 0 }
    }

    /// The message the initiator signs, `K ‖ B ‖ sha256(ab)`, built in one secure buffer.
    static func clientProof(K: SecureBytes, B: PeerID, ab: SecureBytes) throws(HandshakeError) -> SecureBytes {
        try proof(K: K, middle: B.bytes, ab: ab)
    }

    /// The message the responder signs, `K ‖ H ‖ A ‖ sha256(ab)` (H = the initiator's signature),
    /// built in one secure buffer.
    static func serverProof(K: SecureBytes, H: [UInt8], A: PeerID, ab: SecureBytes) throws(HandshakeError) -> SecureBytes {
        try proof(K: K, middle: H + A.bytes, ab: ab)
    }

    private static func proof(K: SecureBytes, middle: [UInt8], ab: SecureBytes) throws(HandshakeError) -> SecureBytes {
        let hashLength = Int(crypto_hash_sha256_BYTES)
        do {
            return try SecureBytes(count: K.count + middle.count + hashLength) { out in
                K.withUnsafeBytes { out.copyMemory(from: $0) }
                middle.withUnsafeBytes { UnsafeMutableRawBufferPointer(rebasing: out[K.count...]).copyMemory(from: $0) }
                ab.withUnsafeBytes { a in _ = crypto_hash_sha256(out.u8 + K.count + middle.count, a.u8, UInt64(a.count)) }
            }
        } catch {
            throw .crypto(.outOfMemory)
        }
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
                try SecureBytes(count: SecretHandshake.curveKeyLength) { out in
                    guard crypto_sign_ed25519_sk_to_curve25519(out.u8, sk.u8) == 0 else {
                        throw CryptoError.primitiveFailed("crypto_sign_ed25519_sk_to_curve25519")
                    }
                }
            }
        } catch let e as CryptoError {
            throw .crypto(e)
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
///
/// Non-copyable, so its ephemeral secret has one owner: the key pair is drawn in ``start(now:)``
/// and dropped (and so wiped) as soon as the handshake completes or fails; no copy can keep
/// it alive or send the same ephemeral key again.
public struct HandshakeInitiator: ~Copyable, Sendable {
    private enum State: Sendable { case ready, awaitingServerHello, awaitingServerAccept, done, failed }

    private let identity: Identity
    private let networkKey: NetworkKey
    /// The responder this initiator insists on: the handshake fails unless it is this peer.
    public let expectedResponder: PeerID
    private var fixedEphemeral: EphemeralKey?
    private var ephemeral: EphemeralKey?
    private var ephemeralPublic: [UInt8] = []
    private var state: State = .ready
    private var serverEphemeral: [UInt8] = []
    private var ab: SecureBytes?
    private var aB: SecureBytes?
    private var signatureA: [UInt8] = []

    /// An initiator that will only complete with `expectedResponder`.
    public init(identity: Identity, networkKey: NetworkKey, expectedResponder: PeerID) {
        self.identity = identity
        self.networkKey = networkKey
        self.expectedResponder = expectedResponder
    }

    /// An initiator whose ``start(now:)`` uses a fixed ephemeral key (test vectors only).
    init(identity: Identity, networkKey: NetworkKey, expectedResponder: PeerID, ephemeral: EphemeralKey) {
        self.init(identity: identity, networkKey: networkKey, expectedResponder: expectedResponder)
        self.fixedEphemeral = ephemeral
    }

    /// The ephemeral secret while the handshake holds it (tests check it is released).
    var ephemeralSecret: SecureBytes? { ephemeral?.secret }

    /// The frame the driver should read next, or nil if none is expected.
    public var expectedFrame: HandshakeFrame.Kind? {
        switch state {
        case .awaitingServerHello: return .serverHello
        case .awaitingServerAccept: return .serverAccept
        default: return nil
        }
    }

    /// Message 1: `hmac_K(label ‖ version ‖ 1 ‖ B ‖ timestamp ‖ a_e) ‖ timestamp ‖ a_e`, with a
    /// fresh ephemeral key a_e and `now` (ms since the Unix epoch) in whole seconds. Only once:
    /// a second call throws ``HandshakeError/unexpectedFrame``.
    public mutating func start(now: UInt64) throws(HandshakeError) -> [UInt8] {
        guard state == .ready else { throw .unexpectedFrame }
        state = .failed
        let eph: EphemeralKey
        if let fixed = fixedEphemeral.take() { eph = fixed } else {
            do { eph = try EphemeralKey.generate() } catch { throw .crypto(.outOfMemory) }
        }
        ephemeral = eph
        ephemeralPublic = eph.publicKey
        state = .awaitingServerHello
        let timestamp = now / 1_000
        let mac = SHS.hmac(networkKey.secret, SHS.clientHelloMACInput(responder: expectedResponder, timestamp: timestamp, ephemeral: ephemeralPublic))
        return HandshakeFrame.clientHello(mac: mac, timestamp: timestamp, ephemeral: ephemeralPublic).encode()
    }

    /// Consumes message 2 (returns message 3) or message 4 (returns the session).
    public mutating func receive(_ bytes: [UInt8]) throws(HandshakeError) -> HandshakeOutput {
        let previous = state
        state = .failed
        defer { if state == .failed || state == .done { dropSecrets() } }
        switch previous {
        case .awaitingServerHello:
            guard let ephemeral else { throw .unexpectedFrame }
            let frame: HandshakeFrame
            do { frame = try HandshakeFrame.decode(bytes, expecting: .serverHello) } catch { throw .malformed(error) }
            guard case let .serverHello(mac, be) = frame else { throw .unexpectedFrame }
            let macInput = SHS.serverHelloMACInput(responder: expectedResponder, ephemeral: be, clientEphemeral: ephemeralPublic)
            guard SHS.verifyHMAC(networkKey.secret, mac: mac, message: macInput) else { throw .notInNetwork }
            guard SHS.isCanonicalCurveKey(be) else { throw .nonCanonicalKey }
            let ab = try SHS.dh(ephemeral.secret, be)
            let aB = try SHS.dh(ephemeral.secret, try SHS.edToCurvePublic(expectedResponder))
            // H = sign_A(K ‖ B ‖ sha256(ab))
            let sigA = try SHS.clientProof(K: networkKey.secret, B: expectedResponder, ab: ab).withUnsafeBytes { identity.sign(raw: $0) }
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
            let proof = try SHS.serverProof(K: networkKey.secret, H: signatureA, A: identity.peerID, ab: ab)
            guard proof.withUnsafeBytes({ expectedResponder.verify(signature: sigB, message: $0) }) else { throw .authenticationFailed }
            let keys = try SHS.sessionKeys(K: networkKey.secret, ab: ab, aB: aB, Ab: Ab,
                                           towardsRemote: expectedResponder, towardsLocal: identity.peerID)
            state = .done
            return HandshakeOutput(reply: nil, result: HandshakeResult(remote: expectedResponder, sendKey: keys.send,
                                                                       receiveKey: keys.receive, networkID: networkKey.id))
        default:
            throw .unexpectedFrame
        }
    }

    private mutating func dropSecrets() {
        fixedEphemeral = nil
        ephemeral = nil
        ab = nil
        aB = nil
    }
}

extension ReplayGuard {
    /// The guard a node's responders share for client hellos, made when the node starts at
    /// `now` (ms): hellos stamped before the start second are refused, so a restart does not
    /// reopen what the previous run accepted.
    public static func forHandshakes(startedAt now: UInt64) -> ReplayGuard {
        ReplayGuard(settings: .handshake, floor: now >= 1_001 ? now - 1_001 : 0)
    }
}

/// The responder (server) side of the secret handshake. Like the initiator, it drops its
/// ephemeral and intermediate secrets as soon as the handshake completes or fails.
public struct HandshakeResponder: Sendable {
    private enum State: Sendable { case awaitingClientHello, awaitingClientAuth, done, failed }

    private let identity: Identity
    private let keyring: NetworkKeyring
    private var ephemeralSource: EphemeralKey?
    private var ephemeral: EphemeralKey?
    private var networkKey: NetworkKey?
    private var ab: SecureBytes?
    private var aB: SecureBytes?
    private var state: State = .awaitingClientHello

    /// A responder accepting any key of `keyring`. A fresh ephemeral key is drawn only once a
    /// hello has proved network membership.
    public init(identity: Identity, keyring: NetworkKeyring) {
        self.identity = identity
        self.keyring = keyring
    }

    /// A responder with a fixed ephemeral key (test vectors only).
    init(identity: Identity, keyring: NetworkKeyring, ephemeral: EphemeralKey) {
        self.init(identity: identity, keyring: keyring)
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
    /// `now` is the local time in ms since the Unix epoch; `replayGuard` is shared by every
    /// responder of the node (see ``ReplayGuard/forHandshakes(startedAt:)``).
    public mutating func receive(_ bytes: [UInt8], replayGuard: ReplayGuard, now: UInt64) throws(HandshakeError) -> HandshakeOutput {
        let previous = state
        state = .failed
        defer { if state == .failed || state == .done { dropSecrets() } }
        switch previous {
        case .awaitingClientHello:
            let frame: HandshakeFrame
            do { frame = try HandshakeFrame.decode(bytes, expecting: .clientHello) } catch { throw .malformed(error) }
            guard case let .clientHello(mac, timestamp, ae) = frame else { throw .unexpectedFrame }
            // Only an HMAC check per accepted key before anything costly.
            let macInput = SHS.clientHelloMACInput(responder: identity.peerID, timestamp: timestamp, ephemeral: ae)
            guard let key = keyring.accepted.first(where: { SHS.verifyHMAC($0.secret, mac: mac, message: macInput) }) else {
                throw .notInNetwork
            }
            guard SHS.isCanonicalCurveKey(ae) else { throw .nonCanonicalKey }
            let (stamp, overflow) = timestamp.multipliedReportingOverflow(by: 1_000)
            do throws(ReplayGuard.Refusal) {
                try replayGuard.record(key: ae, timestamp: overflow ? .max : stamp, now: now)
            } catch {
                throw .replayed(error)
            }
            let eph: EphemeralKey
            if let fixed = ephemeralSource { eph = fixed } else {
                do { eph = try EphemeralKey.generate() } catch { throw .crypto(.outOfMemory) }
            }
            ephemeralSource = nil
            let ab = try SHS.dh(eph.secret, ae)
            let aB = try SHS.dh(try SHS.edToCurveSecret(identity), ae)
            self.ephemeral = eph
            self.networkKey = key
            self.ab = ab
            self.aB = aB
            state = .awaitingClientAuth
            let replyMAC = SHS.hmac(key.secret, SHS.serverHelloMACInput(responder: identity.peerID, ephemeral: eph.publicKey, clientEphemeral: ae))
            return HandshakeOutput(reply: HandshakeFrame.serverHello(mac: replyMAC, ephemeral: eph.publicKey).encode(), result: nil)
        case .awaitingClientAuth:
            guard let ab, let aB, let key = networkKey, let eph = ephemeral else { throw .unexpectedFrame }
            let frame: HandshakeFrame
            do { frame = try HandshakeFrame.decode(bytes, expecting: .clientAuth) } catch { throw .malformed(error) }
            guard case let .clientAuth(box) = frame else { throw .unexpectedFrame }
            let plain = try SHS.open(box, key: try SHS.sha256([key.secret, ab, aB]))
            guard plain.count == Identity.signatureLength + PeerID.length,
                  let clientID = PeerID(bytes: plain.suffix(PeerID.length)) else { throw .authenticationFailed }
            let sigA = Array(plain.prefix(Identity.signatureLength))
            guard clientID.isValidPublicKey else { throw .invalidPeerKey }
            let clientProof = try SHS.clientProof(K: key.secret, B: identity.peerID, ab: ab)
            guard clientProof.withUnsafeBytes({ clientID.verify(signature: sigA, message: $0) }) else { throw .authenticationFailed }
            let Ab = try SHS.dh(eph.secret, try SHS.edToCurvePublic(clientID))
            let sigB = try SHS.serverProof(K: key.secret, H: sigA, A: clientID, ab: ab).withUnsafeBytes { identity.sign(raw: $0) }
            let box4 = SHS.seal(sigB, key: try SHS.sha256([key.secret, ab, aB, Ab]))
            let keys = try SHS.sessionKeys(K: key.secret, ab: ab, aB: aB, Ab: Ab,
                                           towardsRemote: clientID, towardsLocal: identity.peerID)
            state = .done
            return HandshakeOutput(reply: HandshakeFrame.serverAccept(box: box4).encode(),
                                   result: HandshakeResult(remote: clientID, sendKey: keys.send, receiveKey: keys.receive, networkID: key.id))
        default:
            throw .unexpectedFrame
        }
    }

    private mutating func dropSecrets() {
        ephemeralSource = nil
        ephemeral = nil
        networkKey = nil
        ab = nil
        aB = nil
    }
}
