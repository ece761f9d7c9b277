import Testing
import CSodium
@testable import Crypto

@Suite struct ReplayWindowTests {
    @Test func replayWindow_duplicate_isRejected() {
        var w = ReplayWindow()
        check(w.accept(5))
        check(!w.accept(5))
        check(w.accept(0))
        check(!w.accept(0))
    }

    @Test func replayWindow_outOfOrderInsideWindow_isAcceptedOnce() {
        var w = ReplayWindow()
        check(w.accept(100))
        check(w.accept(50))
        check(w.accept(99))
        check(!w.accept(50))
        #expect(w.highest == 100)
    }

    @Test func replayWindow_boundary_acceptsExactlyWindowSizeBehind() {
        var w = ReplayWindow()
        let top = UInt64(ReplayWindow.size) + 1_000
        check(w.accept(top))
        #expect(w.wouldAccept(top - UInt64(ReplayWindow.size)))
        #expect(!w.wouldAccept(top - UInt64(ReplayWindow.size) - 1))
        check(w.accept(top - UInt64(ReplayWindow.size)))
        check(!w.accept(top - UInt64(ReplayWindow.size) - 1))
    }

    @Test func replayWindow_tooOld_isRejectedAndBigJumpClearsRing() {
        var w = ReplayWindow()
        for c in UInt64(0)..<200 { check(w.accept(c)) }
        let far = UInt64(1) << 40
        check(w.accept(far))
        check(!w.accept(199))
        // Counters just below the new top were never seen and must be accepted (ring was cleared).
        check(w.accept(far - 64))
        check(w.accept(far - 1))
    }

    @Test func replayWindow_randomWorkload_matchesASetModel() {
        var rng = SplitMix64Local(seed: 7)
        var w = ReplayWindow()
        var seen = Set<UInt64>()
        var highest: UInt64 = 0
        for _ in 0..<50_000 {
            let base = highest > 150 ? highest - 150 : 0
            let c = base + rng.next() % 300 + (rng.next() % 64 == 0 ? 9_000 : 0)
            let expected = !seen.contains(c) && (c > highest || highest - c <= UInt64(ReplayWindow.size))
            check(w.accept(c) == expected)
            if expected {
                seen.insert(c)
                highest = max(highest, c)
            }
        }
    }
}

/// A tiny deterministic generator for tests (Crypto does not depend on Gossip's SplitMix64).
struct SplitMix64Local {
    var state: UInt64
    init(seed: UInt64) { state = seed }
    mutating func next() -> UInt64 {
        state &+= 0x9E37_79B9_7F4A_7C15
        var z = state
        z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
        z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
        return z ^ (z >> 31)
    }
}

@Suite struct DatagramTests {
    private func sealer(key: NetworkKey = Fixture.networkKey, counter: UInt64 = 0) throws -> DatagramSealer {
        try DatagramSealer(networkKey: key, sender: Fixture.datagramSender, firstCounter: counter)
    }

    @Test func datagram_roundTrip_carriesSenderCounterAndPlaintext() throws {
        var s = try sealer()
        var o = try DatagramOpener(keyring: NetworkKeyring(current: Fixture.networkKey))
        let d = try s.seal(Array("probe".utf8))
        let (h, p) = try o.open(d)
        #expect(p == Array("probe".utf8))
        #expect(h.sender == Fixture.datagramSender)
        #expect(h.counter == 0)
        #expect(d.count == SealedDatagram.headerLength + 5 + SealedDatagram.tagLength)
    }

    @Test func datagram_replayed_isRejected() throws {
        var s = try sealer()
        var o = try DatagramOpener(keyring: NetworkKeyring(current: Fixture.networkKey))
        let d = try s.seal([1])
        _ = try o.open(d)
        #expect(throws: DatagramError.replayed(counter: 0)) { try o.open(d) }
    }

    @Test(arguments: ["version", "sender", "counter", "ciphertext", "tag"])
    func datagram_tampered_isRejectedAndLeavesWindowUnchanged(part: String) throws {
        var s = try sealer()
        var o = try DatagramOpener(keyring: NetworkKeyring(current: Fixture.networkKey))
        let d = try s.seal(Array("membership update".utf8))
        var bad = d
        switch part {
        case "version": bad[0] ^= 1
        case "sender": bad[3] ^= 1
        case "counter": bad[24] ^= 1  // counter 0 → 1
        case "ciphertext": bad[SealedDatagram.headerLength] ^= 1
        default: bad[d.count - 1] ^= 1
        }
        #expect(throws: DatagramError.self) { try o.open(bad) }
        // Authentication failure must not have advanced or marked the window.
        try check(o.open(d).plaintext == Array("membership update".utf8))
        var next = try sealer(counter: 1)
        try check(o.open(next.seal([2])).header.counter == 1)
    }

    @Test func datagram_wrongNetworkKey_isRejected_previousKeyAccepted() throws {
        var old = try sealer(key: Fixture.otherNetworkKey)
        var o = try DatagramOpener(keyring: NetworkKeyring(current: Fixture.networkKey))
        let d = try old.seal([1])
        #expect(throws: DatagramError.authenticationFailed) { try o.open(d) }
        var ring = NetworkKeyring(current: Fixture.otherNetworkKey)
        ring.rotate(to: Fixture.networkKey)
        try o.update(keyring: ring)
        try check(o.open(d).plaintext == [1])
    }

    @Test func datagram_malformedInputs_areTypedErrors() throws {
        var o = try DatagramOpener(keyring: NetworkKeyring(current: Fixture.networkKey))
        for input in [[], [1], [UInt8](repeating: 1, count: SealedDatagram.headerLength + 15),
                      [UInt8](repeating: 1, count: SealedDatagram.maxLength + 1)] {
            #expect(throws: DatagramError.self) { try o.open(input) }
        }
        var s = try sealer()
        #expect(throws: DatagramError.self) { try s.seal([UInt8](repeating: 0, count: SealedDatagram.maxPlaintextLength + 1)) }
    }

    @Test func datagramOpener_manySenders_boundsWindows() throws {
        var o = try DatagramOpener(keyring: NetworkKeyring(current: Fixture.networkKey), maxSenders: 2)
        for i in 0..<5 {
            var s = try DatagramSealer(networkKey: Fixture.networkKey, sender: [UInt8](repeating: UInt8(i), count: 16), firstCounter: 0)
            _ = try o.open(s.seal([UInt8(i)]))
        }
        // The most recent sender is still tracked: its replay is caught.
        var last = try DatagramSealer(networkKey: Fixture.networkKey, sender: [UInt8](repeating: 4, count: 16), firstCounter: 0)
        #expect(throws: DatagramError.replayed(counter: 0)) { try o.open(last.seal([4])) }
    }

    @Test func xchacha20poly1305_draftIrtfCfrgXchachaVectorA31_matches() throws {
        // draft-irtf-cfrg-xchacha-03, appendix A.3.1.
        let plaintext = Array("Ladies and Gentlemen of the class of '99: If I could offer you only one tip for the future, sunscreen would be it.".utf8)
        let aad = try #require(Hex.decode("50515253c0c1c2c3c4c5c6c7"))
        let key = try #require(Hex.decode("808182838485868788898a8b8c8d8e8f909192939495969798999a9b9c9d9e9f"))
        let nonce = try #require(Hex.decode("404142434445464748494a4b4c4d4e4f5051525354555657"))
        let expected = try #require(Hex.decode("""
            bd6d179d3e83d43b9576579493c0e939572a1700252bfaccbed2902c21396cbb
            731c7f1b0b4aa6440bf3a82f4eda7e39ae64c6708c54c216cb96b72e1213b452
            2f8c9ba40db5d945b11b69b982c1bb9e3f3fac2bc369488f76b2383565d3fff9
            21f9664c97637da9768812f615c68b13b52e
            c0875924c1c7987947deafd8780acf49
            """))
        var out = [UInt8](repeating: 0, count: plaintext.count + 16)
        var outLength: UInt64 = 0
        _ = crypto_aead_xchacha20poly1305_ietf_encrypt(&out, &outLength, plaintext, UInt64(plaintext.count), aad, UInt64(aad.count), nil, nonce, key)
        #expect(out == expected)
    }
}
