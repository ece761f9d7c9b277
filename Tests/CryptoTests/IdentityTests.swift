import Testing
@testable import Crypto

/// RFC 8032 section 7.1, TEST 1 (empty message).
private let rfc8032Test1Seed = "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60"
private let rfc8032Test1PublicKey = "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
private let rfc8032Test1Signature =
    "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b"

@Test func identity_rfc8032Test1_matchesPublicKeyAndSignature() throws {
    let identity = try Identity(seed: try #require(Hex.decode(rfc8032Test1Seed)))
    #expect(identity.peerID.description == rfc8032Test1PublicKey)
    let signature = identity.sign([])
    #expect(Hex.encode(signature) == rfc8032Test1Signature)
    #expect(identity.peerID.verify(signature: signature, message: [UInt8]()))
    #expect(!identity.peerID.verify(signature: signature, message: [UInt8(0)]))
}

@Test func identity_sameSeed_sameKeyAndDistinctSeeds_distinctKeys() throws {
    let a = try Identity(seed: [UInt8](repeating: 1, count: 32))
    let b = try Identity(seed: [UInt8](repeating: 1, count: 32))
    let c = try Identity(seed: [UInt8](repeating: 2, count: 32))
    #expect(a.peerID == b.peerID)
    #expect(a.peerID != c.peerID)
    #expect(throws: CryptoError.self) { try Identity(seed: [1, 2, 3]) }
}

@Test func peerID_wrongLength_isNilAndHexRoundTrips() throws {
    #expect(PeerID(bytes: [UInt8](repeating: 0, count: 31)) == nil)
    let id = try Identity.generate().peerID
    #expect(PeerID(hex: id.description) == id)
    #expect(id.fingerprint.count == 8)
    #expect(id.isValidPublicKey)
}

@Test func signatureDomain_signatureInOneDomain_neverVerifiesInAnother() throws {
    let a = try #require(SignatureDomain("murmuration/membership/v1"))
    let body: [UInt8] = [1, 2, 3]
    let signature = Fixture.alice.sign(body, domain: a)
    #expect(Fixture.alice.peerID.verify(signature: signature, message: body, domain: a))
    #expect(!Fixture.alice.peerID.verify(signature: signature, message: body, domain: .delta))
    #expect(!Fixture.alice.peerID.verify(signature: signature, message: body))
    #expect(!Fixture.bob.peerID.verify(signature: signature, message: body, domain: a))
    #expect(SignatureDomain("") == nil)
    #expect(SignatureDomain("a\u{0}b") == nil)
    // Layout: label, zero byte, u32 length, body.
    #expect(a.message(body) == Array("murmuration/membership/v1".utf8) + [0, 0, 0, 0, 3, 1, 2, 3])
}

@Test func blake2bKeyedHasher_keyOutside16To64Bytes_throwsInsteadOfUsingUninitialisedState() throws {
    for length in [1, 15, 65, 200] {
        let key = [UInt8](repeating: 7, count: length)
        #expect(throws: CryptoError.self) { try key.withUnsafeBytes { try Blake2b.keyedHash256(key: $0, parts: [[1]]) } }
    }
    // RFC 7693-style sanity: a valid key gives a 32-byte digest that depends on the key.
    let a = try [UInt8](repeating: 1, count: 32).withUnsafeBytes { try Blake2b.keyedHash256(key: $0, parts: [[1]]) }
    let b = try [UInt8](repeating: 2, count: 64).withUnsafeBytes { try Blake2b.keyedHash256(key: $0, parts: [[1]]) }
    #expect(a.count == 32 && a != b)
}

@Test func blake2bHasher_finalizedTwice_throws() throws {
    var h = Blake2b.Hasher()
    h.update([1, 2, 3])
    #expect(try h.finalize() == Blake2b.hash256([1, 2, 3]))
    #expect(throws: CryptoError.self) { try h.finalize() }
}

/// A simulated node's identity (key in ordinary memory) is the same key as the guarded one,
/// and far more of them fit in one process than guarded allocations allow.
@Test func identity_simulated_sameKeyAsGuardedAndManyFit() throws {
    let seed = [UInt8](repeating: 7, count: Identity.seedLength)
    let guarded = try Identity(seed: seed), simulated = try Identity.simulated(seed: seed)
    #expect(guarded.peerID == simulated.peerID)
    #expect(guarded.sign([1, 2, 3]) == simulated.sign([1, 2, 3]))
    #expect(throws: CryptoError.self) { try Identity.simulated(seed: [1, 2]) }
    // Guarded allocations take several memory mappings each and fail after some tens of thousands.
    let many = try (0..<40_000).map { i -> Identity in
        var s = seed
        s[0] = UInt8(i & 0xFF)
        s[1] = UInt8(i >> 8 & 0xFF)
        s[2] = UInt8(i >> 16)
        return try Identity.simulated(seed: s)
    }
    #expect(Set(many.map(\.peerID)).count == 40_000)
}
