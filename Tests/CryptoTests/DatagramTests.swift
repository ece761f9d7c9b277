import Testing
import CSodium
@testable import Crypto

@Suite struct SequenceWindowTests {
    @Test func sequenceWindow_duplicate_isRefused() {
        var w = SequenceWindow()
        #expect(!w.contains(5))
        w.insert(5)
        #expect(w.contains(5))
        #expect(!w.contains(0))
        w.insert(0)
        #expect(w.contains(0))
    }

    @Test func sequenceWindow_outOfOrderInsideWindow_isAcceptedOnce() {
        var w = SequenceWindow()
        w.insert(100)
        #expect(!w.contains(50))
        w.insert(50)
        #expect(w.contains(50))
        #expect(!w.contains(99))
        #expect(w.highest == 100)
    }

    @Test func sequenceWindow_olderThanWidth_countsAsSeen() {
        var w = SequenceWindow()
        w.insert(1_000)
        #expect(!w.contains(1_000 - SequenceWindow.width + 1))
        #expect(w.contains(1_000 - SequenceWindow.width))
    }

    @Test func sequenceWindow_restartState_refusesEverythingUpToHighest() {
        var w = SequenceWindow(acceptedThrough: 500)
        #expect(w.contains(500) && w.contains(499) && w.contains(1))
        #expect(!w.contains(501))
        w.insert(503)
        #expect(!w.contains(502) && !w.contains(501))
        #expect(w.contains(500))
    }

    @Test func sequenceWindow_randomWorkload_matchesASetModel() {
        var rng = SplitMix64Local(seed: 7)
        var w = SequenceWindow()
        var seen = Set<UInt64>()
        var highest: UInt64 = 0
        for _ in 0..<50_000 {
            let base = highest > 40 ? highest - 40 : 0
            let c = base + rng.next() % 100 + (rng.next() % 64 == 0 ? 900 : 0)
            let expected = seen.contains(c) || (c < highest && highest - c >= SequenceWindow.width)
            #expect(w.contains(c) == expected)
            if !expected {
                w.insert(c)
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

@Suite struct ReplayGuardTests {
    private let settings = ReplayGuard.Settings(maxAge: 1_000, maxLead: 500, capacity: 4)
    private func key(_ i: UInt8) -> [UInt8] { [UInt8](repeating: i, count: 24) }

    @Test func replayGuard_seenKey_isRefusedUntilItExpires() throws {
        let g = ReplayGuard(settings: settings, floor: 0)
        try g.record(key: key(1), timestamp: 10_000, now: 10_000)
        #expect(throws: ReplayGuard.Refusal.replayed) { try g.record(key: key(1), timestamp: 10_000, now: 10_100) }
        // Once forgotten by age, it is refused by the freshness bound and the floor instead.
        try g.record(key: key(2), timestamp: 11_500, now: 11_500)
        #expect(g.count == 1)
        #expect(g.floor == 10_000)
        #expect(throws: ReplayGuard.Refusal.self) { try g.record(key: key(1), timestamp: 10_000, now: 11_500) }
    }

    @Test func replayGuard_outsideFreshnessWindow_isRefused() {
        let g = ReplayGuard(settings: settings, floor: 0)
        #expect(throws: ReplayGuard.Refusal.stale(timestamp: 8_999, oldestAccepted: 9_000)) {
            try g.record(key: key(1), timestamp: 8_999, now: 10_000)
        }
        #expect(throws: ReplayGuard.Refusal.ahead(timestamp: 10_501, latestAccepted: 10_500)) {
            try g.record(key: key(1), timestamp: 10_501, now: 10_000)
        }
        #expect(g.count == 0)
    }

    @Test func replayGuard_full_evictsOldestAndRaisesFloorOverIt() throws {
        let g = ReplayGuard(settings: settings, floor: 0)
        for i in 0..<4 { try g.record(key: key(UInt8(i)), timestamp: 10_000 + UInt64(i), now: 10_000) }
        try g.record(key: key(9), timestamp: 10_004, now: 10_004)
        #expect(g.count == 4)
        #expect(g.floor == 10_000)
        // The evicted key is still refused: its timestamp is at the floor.
        #expect(throws: ReplayGuard.Refusal.self) { try g.record(key: key(0), timestamp: 10_000, now: 10_004) }
        #expect(throws: ReplayGuard.Refusal.replayed) { try g.record(key: key(1), timestamp: 10_001, now: 10_004) }
    }

    @Test func replayGuard_madeAtStart_refusesWhatCameBefore() {
        // A restarted node: whatever it accepted before has a timestamp before its start.
        let g = ReplayGuard(settings: settings, floor: 20_000)
        #expect(throws: ReplayGuard.Refusal.self) { try g.record(key: key(1), timestamp: 19_990, now: 20_010) }
    }

    @Test func replayGuard_randomWorkload_neverAcceptsAKeyTwice() throws {
        // Messages are sent once with the sender's clock and replayed later, byte for byte
        // (same key, same timestamp), under a guard too small to remember them all.
        var rng = SplitMix64Local(seed: 11)
        let g = ReplayGuard(settings: .init(maxAge: 200, maxLead: 100, capacity: 64), floor: 0)
        var stamps: [UInt64: UInt64] = [:]
        var accepted = Set<UInt64>()
        var acceptedTwice: [UInt64] = []
        var now: UInt64 = 1_000
        for _ in 0..<20_000 {
            now += rng.next() % 3
            let id = rng.next() % 2_000
            let timestamp = stamps[id] ?? (now - 150 + rng.next() % 200)
            stamps[id] = timestamp
            var bytes = [UInt8](repeating: 0, count: 24)
            withUnsafeBytes(of: id.bigEndian) { bytes.replaceSubrange(0..<8, with: $0) }
            if (try? g.record(key: bytes, timestamp: timestamp, now: now)) != nil {
                if accepted.contains(id) { acceptedTwice.append(id) }
                accepted.insert(id)
            }
        }
        #expect(acceptedTwice.isEmpty)
        #expect(accepted.count > 500)
    }
}

@Suite struct DatagramTests {
    private let now = Fixture.now
    private func sealer(key: NetworkKey = Fixture.networkKey) throws -> DatagramSealer { try DatagramSealer(networkKey: key) }
    private func opener(for peer: PeerID = Fixture.bob.peerID, startedAt start: UInt64 = Fixture.now - 60_000,
                        keyring: NetworkKeyring = NetworkKeyring(current: Fixture.networkKey)) throws -> DatagramOpener {
        try DatagramOpener(keyring: keyring, localPeer: peer, replayGuard: .forDatagrams(startedAt: start))
    }

    @Test func datagram_roundTrip_carriesTimestampRecipientAndPlaintext() throws {
        let o = try opener()
        let d = try sealer().seal(Array("probe".utf8), to: .peer(Fixture.bob.peerID), now: now)
        let opened = try o.open(d, now: now + 5)
        #expect(opened.plaintext == Array("probe".utf8))
        #expect(opened.header.timestamp == now)
        #expect(opened.recipient == .peer(Fixture.bob.peerID))
        #expect(d.count == SealedDatagram.headerLength + 5 + SealedDatagram.tagLength)
        let beacon = try o.open(try sealer().seal([1], to: .broadcast, now: now), now: now)
        #expect(beacon.recipient == .broadcast)
    }

    @Test func datagram_replayed_isRefusedAndCounted() throws {
        let o = try opener()
        let d = try sealer().seal([1], to: .peer(Fixture.bob.peerID), now: now)
        _ = try o.open(d, now: now)
        #expect(throws: DatagramError.replayed(.replayed)) { try o.open(d, now: now + 1) }
        #expect(o.refusals.replayed == 1)
    }

    @Test func datagram_replayedToAnotherRecipient_isRefusedAndCounted() throws {
        // v1: a datagram S sent to X opened once at Y. Now the recipient is in the associated data.
        let toBob = try sealer().seal(Array("ack".utf8), to: .peer(Fixture.bob.peerID), now: now)
        let atCarol = try opener(for: Fixture.carol.peerID)
        #expect(throws: DatagramError.authenticationFailed) { try atCarol.open(toBob, now: now) }
        #expect(atCarol.refusals.authentication == 1)
        // Flipping the addressing byte to broadcast does not help either.
        var asBroadcast = toBob
        asBroadcast[1] = 2
        #expect(throws: DatagramError.authenticationFailed) { try atCarol.open(asBroadcast, now: now) }
    }

    @Test func datagram_replayedAfterRestart_isRefusedAndCounted() throws {
        let d = try sealer().seal([1], to: .peer(Fixture.bob.peerID), now: now)
        _ = try opener().open(d, now: now)
        // Bob restarts a second later: a fresh guard, made at start, still refuses the old datagram.
        let restarted = try opener(startedAt: now + 1_000)
        #expect(throws: DatagramError.replayed(.stale(timestamp: now, oldestAccepted: now + 1_001))) { try restarted.open(d, now: now + 1_200) }
        #expect(restarted.refusals.stale == 1)
    }

    @Test func datagram_timestampFarAhead_isRefusedAndBlocksNothing() throws {
        // v1: a member sending S's tag with counter 2^63 blackholed S. Now a far-future
        // timestamp is refused before it is recorded, and the next datagram opens.
        let o = try opener()
        let far = try sealer().seal([6], to: .peer(Fixture.bob.peerID), now: UInt64(1) << 62)
        #expect(throws: DatagramError.self) { try o.open(far, now: now) }
        #expect(o.refusals.ahead == 1)
        _ = try o.open(try sealer().seal([7], to: .peer(Fixture.bob.peerID), now: now), now: now)
    }

    @Test func datagram_tooOld_isRefused() throws {
        let o = try opener()
        let old = try sealer().seal([1], to: .peer(Fixture.bob.peerID), now: now - 31_000)
        #expect(throws: DatagramError.self) { try o.open(old, now: now) }
        #expect(o.refusals.stale == 1)
    }

    @Test(arguments: ["version", "addressing", "nonce", "timestamp", "ciphertext", "tag"])
    func datagram_tampered_isRefusedAndLeavesGuardUnchanged(part: String) throws {
        let o = try opener()
        let d = try sealer().seal(Array("membership update".utf8), to: .peer(Fixture.bob.peerID), now: now)
        var bad = d
        switch part {
        case "version": bad[0] ^= 1
        case "addressing": bad[1] ^= 3
        case "nonce": bad[3] ^= 1
        case "timestamp": bad[2 + SealedDatagram.nonceLength + 7] ^= 1
        case "ciphertext": bad[SealedDatagram.headerLength] ^= 1
        default: bad[d.count - 1] ^= 1
        }
        #expect(throws: DatagramError.self) { try o.open(bad, now: now) }
        #expect(o.refusals.total == 1)
        // Nothing was recorded: the genuine datagram still opens.
        #expect(try o.open(d, now: now).plaintext == Array("membership update".utf8))
    }

    @Test func datagram_wrongNetworkKey_isRefused_previousKeyAccepted() throws {
        let d = try sealer(key: Fixture.otherNetworkKey).seal([1], to: .peer(Fixture.bob.peerID), now: now)
        let o = try opener()
        #expect(throws: DatagramError.authenticationFailed) { try o.open(d, now: now) }
        var ring = NetworkKeyring(current: Fixture.otherNetworkKey)
        ring.rotate(to: Fixture.networkKey)
        try o.update(keyring: ring)
        #expect(try o.open(d, now: now).plaintext == [1])
    }

    @Test func datagram_malformedInputs_areTypedErrors() throws {
        let o = try opener()
        for input in [[], [2], [UInt8](repeating: 2, count: SealedDatagram.headerLength + 15),
                      [UInt8](repeating: 2, count: SealedDatagram.maxLength + 1)] {
            #expect(throws: DatagramError.self) { try o.open(input, now: now) }
        }
        #expect(o.refusals.malformed == 4)
        #expect(throws: DatagramError.self) {
            try sealer().seal([UInt8](repeating: 0, count: SealedDatagram.maxPlaintextLength + 1), to: .broadcast, now: now)
        }
    }

    @Test func datagramSealer_copies_neverRepeatANonce() throws {
        // Nonces are random, so a copied sealer (or a cloned process) cannot reuse one.
        let a = try sealer()
        let b = a
        let first = try SealedDatagram.decodeHeader(a.seal([1], to: .broadcast, now: now))
        let second = try SealedDatagram.decodeHeader(b.seal([1], to: .broadcast, now: now))
        #expect(first.nonce != second.nonce)
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
