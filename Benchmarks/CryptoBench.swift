import CSodium
import Crypto
import Foundation

/// `murmur-bench crypto`: a 4 MiB model delta sealed and opened end to end through the
/// project's API (BLAKE2b-256, Ed25519 header signature, payload chunks over a secretstream
/// channel, decryption, header verification, payload hash check), beside raw libsodium calls
/// doing the same primitives on the same buffer with no framing or copies. Target: ≥ 0.9 of raw.
/// Then sealed datagrams sealed and opened per second (random nonce, recipient-bound associated
/// data, replay guard) beside raw XChaCha20-Poly1305 encryption and decryption of the same sizes.
func runCryptoBench() throws {
    /// Bytes of the benchmark delta: 1 M float32 parameters, a typical small model.
    let payloadBytes = 4 << 20
    /// Best of this many runs, to damp noise from the other processes sharing the machine.
    let repeats = 7
    let chunkLength = DeltaChunk.maxLength

    var rng = SystemRandomNumberGenerator()
    let floats = (0..<(payloadBytes / 4)).map { _ in Float.random(in: -1...1, using: &rng) }
    let identity = try Identity.generate()
    let networkKey = try NetworkKey.generate()
    let ring = NetworkKeyring(current: networkKey)
    let shape: [UInt32] = [1024, UInt32(payloadBytes / 4 / 1024)]
    let streamKey = try SecureBytes.random(count: 32)
    let receiverID = try Identity.generate().peerID

    // Project API, end to end.
    var sealSeconds = 0.0, openSeconds = 0.0
    var verified = 0
    for _ in 0..<repeats {
        let sender = try SecureChannelSender(key: streamKey)
        let receiver = try SecureChannelReceiver(key: streamKey, header: sender.header)
        var frames: [[UInt8]] = []
        let t0 = DispatchTime.now().uptimeNanoseconds
        try floats.withUnsafeBytes { raw in
            let header = SignedDelta.makeHeader(kind: .modelDelta, networkID: networkKey.id, recipient: receiverID, round: 1, sequence: 1,
                                                encoding: .float32, shape: shape, payload: raw, identity: identity)
            frames.append(try sender.seal(SignedDelta.sealHead(header, identity: identity)))
            var offset = 0
            while offset < raw.count {
                let end = min(raw.count, offset + chunkLength)
                let piece = UnsafeRawBufferPointer(rebasing: raw[offset..<end])
                frames.append(try sender.seal(length: DeltaChunk.headerLength + piece.count) {
                    try DeltaChunk.encode(offset: UInt64(offset), bytes: piece, into: $0)
                })
                offset = end
            }
        }
        let t1 = DispatchTime.now().uptimeNanoseconds
        let head = try SignedDelta.openHead(receiver.open(frame: frames[0]), keyring: ring,
                                            expecting: DeltaExpectation(kind: .modelDelta, author: .peer(identity.peerID), localPeer: receiverID))
        let assembler = DeltaAssembler(head: head)
        for frame in frames.dropFirst() {
            try receiver.open(frame: frame) { plain in
                try DeltaChunk.withDecoded(plain) { offset, bytes in try assembler.add(offset: offset, bytes: bytes) }
            }
        }
        let (_, payload) = try assembler.finish()
        let t2 = DispatchTime.now().uptimeNanoseconds
        if payload.count == payloadBytes { verified += 1 }
        let s = Double(t1 - t0) / 1e9, o = Double(t2 - t1) / 1e9
        sealSeconds = sealSeconds == 0 ? s : min(sealSeconds, s)
        openSeconds = openSeconds == 0 ? o : min(openSeconds, o)
    }
    guard verified == repeats else { throw CryptoError.authenticationFailed }

    // Raw libsodium: the same primitives on the same buffer, preallocated output, no framing.
    var rawSeal = 0.0, rawOpen = 0.0
    var pk = [UInt8](repeating: 0, count: 32), sk = [UInt8](repeating: 0, count: 64)
    crypto_sign_keypair(&pk, &sk)
    let headerStandIn = [UInt8](repeating: 7, count: DeltaHeader.fixedLength + 8 + SignatureDomain.delta.label.utf8.count + 1 + 4)
    let chunkCount = (payloadBytes + chunkLength - 1) / chunkLength
    let overhead = Int(crypto_secretstream_xchacha20poly1305_ABYTES)
    var cipher = [UInt8](repeating: 0, count: payloadBytes + chunkCount * overhead)
    var plain = [UInt8](repeating: 0, count: payloadBytes)
    var key = [UInt8](repeating: 0, count: 32)
    randombytes_buf(&key, 32)
    for _ in 0..<repeats {
        var push = crypto_secretstream_xchacha20poly1305_state()
        var pull = crypto_secretstream_xchacha20poly1305_state()
        var header = [UInt8](repeating: 0, count: SecureChannel.headerLength)
        var hash = [UInt8](repeating: 0, count: 32)
        var signature = [UInt8](repeating: 0, count: 64)
        let t0 = DispatchTime.now().uptimeNanoseconds
        floats.withUnsafeBytes { raw in
            let p = raw.baseAddress!.assumingMemoryBound(to: UInt8.self)
            crypto_generichash(&hash, 32, p, UInt64(payloadBytes), nil, 0)
            var signed = headerStandIn
            signed.replaceSubrange(0..<32, with: hash)
            crypto_sign_detached(&signature, nil, signed, UInt64(signed.count), sk)
            crypto_secretstream_xchacha20poly1305_init_push(&push, &header, key)
            cipher.withUnsafeMutableBufferPointer { c in
                for i in 0..<chunkCount {
                    let start = i * chunkLength, n = min(chunkLength, payloadBytes - start)
                    crypto_secretstream_xchacha20poly1305_push(&push, c.baseAddress! + start + i * overhead, nil, p + start, UInt64(n), nil, 0, 0)
                }
            }
        }
        let t1 = DispatchTime.now().uptimeNanoseconds
        crypto_secretstream_xchacha20poly1305_init_pull(&pull, header, key)
        var ok = true
        cipher.withUnsafeBufferPointer { c in
            plain.withUnsafeMutableBufferPointer { m in
                for i in 0..<chunkCount {
                    let start = i * chunkLength, n = min(chunkLength, payloadBytes - start)
                    var tag: UInt8 = 0
                    ok = ok && crypto_secretstream_xchacha20poly1305_pull(&pull, m.baseAddress! + start, nil, &tag,
                                                                          c.baseAddress! + start + i * overhead, UInt64(n + overhead), nil, 0) == 0
                }
            }
        }
        var signed = headerStandIn
        signed.replaceSubrange(0..<32, with: hash)
        ok = ok && crypto_sign_verify_detached(signature, signed, UInt64(signed.count), pk) == 0
        var check = [UInt8](repeating: 0, count: 32)
        crypto_generichash(&check, 32, plain, UInt64(payloadBytes), nil, 0)
        ok = ok && check == hash
        let t2 = DispatchTime.now().uptimeNanoseconds
        guard ok else { throw CryptoError.authenticationFailed }
        let s = Double(t1 - t0) / 1e9, o = Double(t2 - t1) / 1e9
        rawSeal = rawSeal == 0 ? s : min(rawSeal, s)
        rawOpen = rawOpen == 0 ? o : min(rawOpen, o)
    }

    let mb = Double(payloadBytes) / 1e6
    var report = BenchReport(suite: "crypto")
    func add(_ name: String, _ seconds: Double, _ rawSeconds: Double, _ note: String) {
        let value = mb / seconds, baseline = mb / rawSeconds
        report.add(BenchFigure(name: name, value: value, unit: "MB/s", baseline: baseline, ratio: value / baseline, note: note))
    }
    add("seal 4 MiB delta", sealSeconds, rawSeal, "hash+sign+chunk+encrypt vs raw libsodium; target ratio ≥ 0.9")
    add("open 4 MiB delta", openSeconds, rawOpen, "decrypt+verify+hash vs raw libsodium; target ratio ≥ 0.9")
    add("seal+open 4 MiB delta", sealSeconds + openSeconds, rawSeal + rawOpen, "round trip; best of \(repeats)")
    for size in [64, 512, 1_400] {
        let (project, raw) = try datagramRates(plaintextLength: size)
        report.add(BenchFigure(name: "datagram \(size) B seal+open", value: project, unit: "datagrams/s", baseline: raw, ratio: project / raw,
                               note: "random nonce, recipient AD, replay guard vs raw XChaCha20-Poly1305 encrypt+decrypt"))
    }
    report.finish()
}

/// Datagrams of `plaintextLength` bytes sealed and opened per second through ``DatagramSealer``
/// and ``DatagramOpener``, and the same sizes through raw `crypto_aead_xchacha20poly1305_ietf`
/// encrypt and decrypt (preallocated buffers, a fixed nonce): best of five runs each.
func datagramRates(plaintextLength: Int) throws -> (project: Double, raw: Double) {
    let count = 100_000
    let key = try NetworkKey.generate()
    let recipient = try Identity.generate().peerID
    let plaintext = [UInt8](repeating: 0x5a, count: plaintextLength)
    let start: UInt64 = 1_800_000_000_000
    var best = 0.0, bestRaw = 0.0
    for _ in 0..<5 {
        let sealer = try DatagramSealer(networkKey: key)
        let opener = try DatagramOpener(keyring: NetworkKeyring(current: key), localPeer: recipient,
                                        replayGuard: .forDatagrams(startedAt: start - 1))
        let t0 = DispatchTime.now().uptimeNanoseconds
        for i in 0..<count {
            // One datagram per virtual millisecond: the guard expires entries as a node's would.
            let now = start + UInt64(i)
            let sealed = try sealer.seal(plaintext, to: .peer(recipient), now: now)
            guard try opener.open(sealed, now: now).plaintext.count == plaintextLength else { throw CryptoError.authenticationFailed }
        }
        best = max(best, Double(count) / (Double(DispatchTime.now().uptimeNanoseconds - t0) / 1e9))

        var rawKey = [UInt8](repeating: 0, count: 32)
        randombytes_buf(&rawKey, 32)
        let nonce = [UInt8](repeating: 1, count: SealedDatagram.nonceLength)
        let ad = [UInt8](repeating: 2, count: SealedDatagram.headerLength + PeerID.length)
        var cipher = [UInt8](repeating: 0, count: plaintextLength + SealedDatagram.tagLength)
        var opened = [UInt8](repeating: 0, count: plaintextLength)
        var ok = true
        let t1 = DispatchTime.now().uptimeNanoseconds
        for _ in 0..<count {
            _ = crypto_aead_xchacha20poly1305_ietf_encrypt(&cipher, nil, plaintext, UInt64(plaintextLength), ad, UInt64(ad.count), nil, nonce, rawKey)
            ok = ok && crypto_aead_xchacha20poly1305_ietf_decrypt(&opened, nil, nil, cipher, UInt64(cipher.count), ad, UInt64(ad.count), nonce, rawKey) == 0
        }
        bestRaw = max(bestRaw, Double(count) / (Double(DispatchTime.now().uptimeNanoseconds - t1) / 1e9))
        guard ok, opened == plaintext else { throw CryptoError.authenticationFailed }
    }
    return (best, bestRaw)
}
