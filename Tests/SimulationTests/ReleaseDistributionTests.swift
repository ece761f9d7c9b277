import Crypto
import DeterministicRandom
import Foundation
import Gossip
import Testing
@testable import Simulation

/// Model distribution over the whole overlay, in virtual time, through the real wire layer:
/// releases spread by anti-entropy under loss, reach a partitioned node after the heal and a
/// node started after the publication, travel as a delta when the previous version is held,
/// and roll back everywhere.
struct ReleaseDistributionTests {
    static let n = 24
    static let publisherIndex = 0

    /// Bytes shaped like a model file: a header, then fp32 weights.
    static func modelBytes(count: Int, seed: UInt64) -> [UInt8] {
        var rng = SplitMix64(seed: seed)
        var bytes = Array("MURMODEL-like header".utf8)
        for _ in 0..<count {
            let w = Float(Double(rng.next() >> 11) / Double(1 << 53) - 0.5) * 0.2
            withUnsafeBytes(of: w.bitPattern.littleEndian) { bytes += $0 }
        }
        return bytes
    }

    /// `base` with a small step on every weight (a fine-tuning), same size.
    static func fineTuned(_ base: [UInt8], seed: UInt64) -> [UInt8] {
        var rng = SplitMix64(seed: seed)
        var out = base
        let header = 20
        for i in stride(from: header, to: base.count - 3, by: 4) {
            let bits = UInt32(base[i]) | UInt32(base[i + 1]) << 8 | UInt32(base[i + 2]) << 16 | UInt32(base[i + 3]) << 24
            let w = Float(bitPattern: bits) * (1 + Float(Double(rng.next() >> 11) / Double(1 << 53) - 0.5) * 2e-3)
            withUnsafeBytes(of: w.bitPattern.littleEndian) { for k in 0..<4 { out[i + k] = $0[k] } }
        }
        return out
    }

    func network(seed: UInt64, loss: Double) throws -> (OverlayWorld, Simulator<GossipNode>) {
        let world = OverlayWorld(settings: .local)
        let publisher = world.identity(Self.publisherIndex).peerID
        world.releases = { i, seed in ReleaseDistributor(me: world.identity(i).peerID, publishers: [publisher], seed: seed) }
        let sim = world.simulator(nodeCount: Self.n, seed: seed,
                                  links: LinkPolicy(default: LinkModel(loss: loss, latency: .milliseconds(5), jitter: .milliseconds(5))))
        let key = try NetworkKey(bytes: [UInt8](repeating: 3, count: NetworkKey.length))
        sim.wire = SecureWireMode.gossip(sim, wires: try SecureWireMode.wires(identities: (0..<Self.n).map(world.identity), keyring: NetworkKeyring(current: key)))
        return (world, sim)
    }

    func publish(_ sim: Simulator<GossipNode>, _ world: OverlayWorld, file: [UInt8], version: UInt64, base: [UInt8]?, at time: Instant,
                 canary: Int = 100, delay: Int = 0) {
        let identity = world.identity(Self.publisherIndex)
        sim.inject(Self.publisherIndex, at: time) { node, now in
            let delta = base.flatMap { b in ReleasePatch.make(from: b, to: file).map { (baseVersion: version - 1, baseHash: Blake2b.hash256(b), bytes: $0) } }
            guard let manifest = try? ReleaseManifest(key: ReleaseKey(name: "mnist", version: version), description: "test model", file: file,
                                                      chunkSize: 64 << 10, canaryPercent: canary, canaryDelaySeconds: delay, publishedAt: 0,
                                                      delta: delta, publisher: identity) else { return [] }
            return (try? node.publish(manifest, file: file, delta: delta?.bytes, at: now)) ?? []
        }
    }

    func holders(_ sim: Simulator<GossipNode>, _ key: ReleaseKey, hash: [UInt8]) -> Int {
        (0..<Self.n).filter { i in sim.node(i)?.releases?.holdings[key]?.file.map(Blake2b.hash256) == hash }.count
    }

    func active(_ sim: Simulator<GossipNode>, _ i: Int) -> UInt64? { sim.node(i)?.releases?.active["mnist"] }

    @Test func release_underLossWithAPartitionAndALateJoiner_reachesEveryNode() throws {
        let (world, sim) = try network(seed: 21, loss: 0.1)
        let partitioned = Self.n - 1, late = Self.n - 2
        // The partitioned node is cut off from everyone from the start until 150 s.
        sim.partition(sides: (0..<Self.n).map { $0 == partitioned ? 1 : 0 }, from: .zero, until: .zero + .seconds(150))
        for i in 0..<Self.n where i != late { sim.start(i, at: .zero + .milliseconds(20) * i) }
        let v1 = Self.modelBytes(count: 200_000, seed: 1)
        publish(sim, world, file: v1, version: 1, base: nil, at: .zero + .seconds(20))
        sim.start(late, at: .zero + .seconds(90))
        let key1 = ReleaseKey(name: "mnist", version: 1)
        sim.run(until: .zero + .seconds(140))
        let beforeHeal = holders(sim, key1, hash: Blake2b.hash256(v1))
        #expect(sim.node(partitioned)?.releases?.holdings[key1] == nil)
        sim.run(until: .zero + .seconds(260))
        let everyone = holders(sim, key1, hash: Blake2b.hash256(v1))
        print("release v1 (\(v1.count) bytes) under 10 % loss: \(beforeHeal) of \(Self.n) held it before the heal, \(everyone) after; dropped by loss \(sim.counters.dropped(.loss))")
        #expect(beforeHeal == Self.n - 1)
        #expect(everyone == Self.n)
        #expect((0..<Self.n).allSatisfy { active(sim, $0) == 1 })

        // v2, a fine-tuning of v1, travels as a delta to the nodes that hold v1.
        let v2 = Self.fineTuned(v1, seed: 2)
        let fileBytesBefore = (0..<Self.n).reduce(0) { $0 + (sim.node($1)?.releases?.counters.fileBytesReceived ?? 0) }
        publish(sim, world, file: v2, version: 2, base: v1, at: .zero + .seconds(270))
        sim.run(until: .zero + .seconds(400))
        let key2 = ReleaseKey(name: "mnist", version: 2)
        let deltaBytes = (0..<Self.n).reduce(0) { $0 + (sim.node($1)?.releases?.counters.deltaBytesReceived ?? 0) }
        let fileBytes = (0..<Self.n).reduce(0) { $0 + (sim.node($1)?.releases?.counters.fileBytesReceived ?? 0) } - fileBytesBefore
        let deltaSize = sim.node(0)?.releases?.holdings[key2]?.delta?.count ?? 0
        print("release v2 as a delta: \(deltaSize) bytes against \(v2.count) (\(String(format: "%.2f", Double(v2.count) / Double(max(1, deltaSize))))× smaller); received \(deltaBytes) delta bytes, \(fileBytes) file bytes in all")
        #expect(holders(sim, key2, hash: Blake2b.hash256(v2)) == Self.n)
        #expect(deltaSize > 0 && deltaSize < v2.count)
        #expect(fileBytes == 0)
        #expect(deltaBytes == (Self.n - 1) * deltaSize)
        #expect((0..<Self.n).allSatisfy { active(sim, $0) == 2 })

        // A rollback of v2 takes every node back to v1.
        let notice = RollbackNotice(key: key2, issuedAt: 0, publisher: world.identity(Self.publisherIndex))
        sim.inject(Self.publisherIndex, at: .zero + .seconds(410)) { node, now in (try? node.rollBack(notice, at: now)) ?? [] }
        sim.run(until: .zero + .seconds(480))
        #expect((0..<Self.n).allSatisfy { active(sim, $0) == 1 })
    }

    @Test func stagedRollout_canariesActivateFirst_andARollbackStopsTheRest() throws {
        let (world, sim) = try network(seed: 22, loss: 0.05)
        sim.startAll()
        let v1 = Self.modelBytes(count: 20_000, seed: 3)
        publish(sim, world, file: v1, version: 1, base: nil, at: .zero + .seconds(10))
        sim.run(until: .zero + .seconds(60))
        let v2 = Self.fineTuned(v1, seed: 4)
        // 25 % canaries at once; the rest after 120 s, unless rolled back first.
        publish(sim, world, file: v2, version: 2, base: v1, at: .zero + .seconds(60), canary: 25, delay: 120)
        sim.run(until: .zero + .seconds(120))
        let key2 = ReleaseKey(name: "mnist", version: 2)
        let manifest = try #require(sim.node(0)?.releases?.holdings[key2]?.manifest)
        let canaries = (0..<Self.n).filter { manifest.isCanary(world.identity($0).peerID) }
        let early = (0..<Self.n).filter { active(sim, $0) == 2 }
        print("staged rollout: \(canaries.count) canaries of \(Self.n), \(early.count) active on v2 after 60 s")
        #expect(!canaries.isEmpty && canaries.count < Self.n)
        #expect(early == canaries)
        let notice = RollbackNotice(key: key2, issuedAt: 0, publisher: world.identity(Self.publisherIndex))
        sim.inject(Self.publisherIndex, at: .zero + .seconds(125)) { node, now in (try? node.rollBack(notice, at: now)) ?? [] }
        sim.run(until: .zero + .seconds(400))
        #expect((0..<Self.n).allSatisfy { active(sim, $0) == 1 })
    }
}

/// The distributor's checks, one message at a time: nothing unchecked is stored or activated.
struct ReleaseRefusalTests {
    let publisher = simIdentity(100)
    let stranger = simIdentity(101)
    let peerA = PeerAddress(peer: simIdentity(102).peerID, endpoint: Endpoint(host: "10.0.0.2", port: 1))
    let file = ReleaseDistributionTests.modelBytes(count: 40_000, seed: 9)

    func manifest(version: UInt64, by identity: Identity, file: [UInt8]? = nil) throws -> ReleaseManifest {
        try ReleaseManifest(key: ReleaseKey(name: "m", version: version), description: "", file: file ?? self.file, chunkSize: 16 << 10,
                            canaryPercent: 100, canaryDelaySeconds: 0, publishedAt: 0, delta: nil, publisher: identity)
    }

    func distributor() -> ReleaseDistributor {
        var d = ReleaseDistributor(me: simIdentity(103).peerID, publishers: [publisher.peerID], seed: 1)
        d.peers = [peerA]
        return d
    }

    func refusals(_ d: ReleaseDistributor, _ reason: ReleaseDistributor.Refusal) -> Int { d.counters.refused[reason] ?? 0 }

    /// Offers `m` from peer A and answers the manifest request.
    func offer(_ m: ReleaseManifest, to d: inout ReleaseDistributor) -> [ReleaseDistributor.Action] {
        _ = d.onMessage(.summary(held: [.init(key: m.key, complete: true)], rollbacks: [], reply: false), from: peerA, at: .zero)
        return d.onMessage(.manifest(m), from: peerA, at: .zero)
    }

    @Test func manifest_fromAStranger_isRefusedAndCounted() throws {
        var d = distributor()
        _ = offer(try manifest(version: 1, by: stranger), to: &d)
        #expect(refusals(d, .untrustedPublisher) == 1)
        #expect(d.holdings.isEmpty && d.active.isEmpty)
        // The same offer again costs nothing and is not counted twice.
        _ = offer(try manifest(version: 1, by: stranger), to: &d)
        #expect(refusals(d, .untrustedPublisher) == 1)
    }

    @Test func tamperedChunk_isRefused_andTheReleaseCompletesFromAnotherHolder() throws {
        var d = distributor()
        let m = try manifest(version: 1, by: publisher)
        let peerB = PeerAddress(peer: simIdentity(104).peerID, endpoint: Endpoint(host: "10.0.0.3", port: 1))
        d.peers = [peerA, peerB]
        _ = d.onMessage(.summary(held: [.init(key: m.key, complete: true)], rollbacks: [], reply: false), from: peerB, at: .zero)
        let requests = offer(m, to: &d)
        let asked = requests.compactMap { action -> (PeerID, Int)? in
            if case let .send(.chunkRequest(_, _, index), _, .session(peer)) = action { return (peer, index) } else { return nil }
        }
        #expect(asked.count == min(d.settings.maxRequestsInFlight, m.file.chunkHashes.count))
        for (peer, index) in asked {
            var chunk = Array(file[m.file.range(of: index, chunkSize: m.chunkSize)])
            if peer == peerA.peer { chunk[0] ^= 1 }
            _ = d.onMessage(.chunk(m.key, .file, index: index, bytes: chunk), from: peer == peerA.peer ? peerA : peerB, at: .zero)
        }
        #expect(refusals(d, .chunkHashMismatch) >= 1)
        #expect(d.active.isEmpty)
        // The chunks A spoiled are asked of B, and only B, from now on.
        for _ in 0..<4 {
            let missing = (0..<m.file.chunkHashes.count).filter { d.holdings[m.key]?.isComplete != true && $0 >= 0 }
            for index in missing where d.holdings[m.key]?.isComplete != true {
                _ = d.onMessage(.chunk(m.key, .file, index: index, bytes: Array(file[m.file.range(of: index, chunkSize: m.chunkSize)])), from: peerB, at: .zero)
            }
        }
        #expect(d.holdings[m.key]?.file == file)
        #expect(d.active["m"] == 1)
    }

    @Test func olderVersion_afterANewerOneIsActive_isRefusedAndCounted() throws {
        var d = distributor()
        let v2 = try manifest(version: 2, by: publisher)
        _ = try d.publishForTest(v2, file: file)
        #expect(d.active["m"] == 2)
        _ = d.onMessage(.summary(held: [.init(key: ReleaseKey(name: "m", version: 1), complete: true)], rollbacks: [], reply: false), from: peerA, at: .zero)
        #expect(refusals(d, .olderThanActive) == 1)
        #expect(d.holdings[ReleaseKey(name: "m", version: 1)] == nil)
        #expect(d.active["m"] == 2)
    }

    @Test func forgedSignature_orRollbackFromAStranger_changesNothing() throws {
        var d = distributor()
        let genuine = try manifest(version: 1, by: publisher)
        // The stranger's manifest re-labelled with the publisher's ID: its signature fails.
        var bytes = try manifest(version: 1, by: stranger).encoded
        let publisherOffset = 1 + 2 + 1 + 8
        bytes.replaceSubrange(publisherOffset..<(publisherOffset + 32), with: publisher.peerID.bytes)
        let forged = try ReleaseManifest(decoding: bytes)
        _ = offer(forged, to: &d)
        #expect(refusals(d, .badSignature) == 1)
        #expect(d.holdings.isEmpty)
        let rollback = RollbackNotice(key: genuine.key, issuedAt: 0, publisher: stranger)
        _ = d.onMessage(.summary(held: [], rollbacks: [rollback], reply: false), from: peerA, at: .zero)
        #expect(refusals(d, .untrustedRollback) == 1)
        #expect(d.rollbacks.isEmpty)
    }

    @Test func messages_roundTripThroughTheirEncoding() throws {
        let m = try manifest(version: 3, by: publisher)
        let notice = RollbackNotice(key: m.key, issuedAt: 42, publisher: publisher)
        let messages: [ReleaseMessage] = [
            .summary(held: [.init(key: m.key, complete: false)], rollbacks: [notice], reply: true),
            .manifestRequest(m.key), .manifest(m), .chunkRequest(m.key, .delta, index: 7), .chunk(m.key, .file, index: 2, bytes: [1, 2, 3]),
        ]
        for message in messages {
            #expect(try ReleaseMessage(decoding: message.encoded) == message)
            #expect(message.wireSize >= message.encoded.count - 180)
        }
        #expect(try ReleaseManifest(decoding: m.encoded).isSigned)
        #expect(try RollbackNotice(decoding: notice.encoded).isSigned)
        // Truncations are refused, never trapped on.
        let encoded = ReleaseMessage.manifest(m).encoded
        for cut in stride(from: 0, to: encoded.count, by: 37) { #expect(throws: WireError.self) { try ReleaseMessage(decoding: Array(encoded[..<cut])) } }
    }

    /// Records every event of `actions` in `store`, as the runtime does.
    func record(_ actions: [ReleaseDistributor.Action], of d: ReleaseDistributor, in store: inout ReleaseStore) {
        for case let .report(event) in actions { store.record(event, of: d, at: 0) }
    }

    @Test func fetch_interruptedByARestart_resumesWithTheChunksItKept() throws {
        let directory = FileManager.default.temporaryDirectory.appendingPathComponent("releases-\(UUID().uuidString)").path
        defer { try? FileManager.default.removeItem(atPath: directory) }
        var store = ReleaseStore(dataDirectory: directory)
        var d = distributor()
        let m = try manifest(version: 1, by: publisher)
        record(d.onMessage(.summary(held: [.init(key: m.key, complete: true)], rollbacks: [], reply: false), from: peerA, at: .zero), of: d, in: &store)
        record(d.onMessage(.manifest(m), from: peerA, at: .zero), of: d, in: &store)
        let kept = 4
        for index in 0..<kept {
            record(d.onMessage(.chunk(m.key, .file, index: index, bytes: Array(file[m.file.range(of: index, chunkSize: m.chunkSize)])), from: peerA, at: .zero), of: d, in: &store)
        }
        // The node restarts: a new distributor from what the store kept.
        let partials = store.loadPartials()
        #expect(partials.count == 1 && partials.first?.fileChunks.count == kept)
        var resumed = ReleaseDistributor(me: simIdentity(103).peerID, publishers: [publisher.peerID], seed: 2,
                                         partial: partials.map { ($0.manifest, fileChunks: $0.fileChunks, deltaChunks: $0.deltaChunks) })
        resumed.peers = [peerA]
        #expect(resumed.holdings[m.key]?.keptChunks == kept)
        var asked: [Int] = []
        var actions = resumed.onMessage(.summary(held: [.init(key: m.key, complete: true)], rollbacks: [], reply: false), from: peerA, at: .zero)
        while !actions.isEmpty {
            let requests = actions.compactMap { action -> Int? in if case let .send(.chunkRequest(_, _, index), _, _) = action { return index } else { return nil } }
            asked += requests
            record(actions, of: resumed, in: &store)
            actions = requests.flatMap { index in
                resumed.onMessage(.chunk(m.key, .file, index: index, bytes: Array(file[m.file.range(of: index, chunkSize: m.chunkSize)])), from: peerA, at: .zero)
            }
        }
        #expect(Set(asked) == Set(kept..<m.file.chunkHashes.count), "asked again for \(asked.sorted())")
        #expect(resumed.holdings[m.key]?.file == file)
        #expect(store.loadPartials().isEmpty)
        #expect(store.load().releases.map(\.manifest.key) == [m.key])
        // A kept chunk that was damaged on disk is dropped and fetched again, never used.
        _ = ReleaseDistributor(me: simIdentity(103).peerID, publishers: [publisher.peerID], seed: 3,
                               partial: [(m, fileChunks: [0: [UInt8](repeating: 0, count: m.chunkSize)], deltaChunks: [:])])
            .holdings[m.key].map { #expect($0.keptChunks == 0) }
    }

    @Test func patch_rebuildsTheFileExactly_andRefusesAnotherBase() throws {
        let v2 = ReleaseDistributionTests.fineTuned(file, seed: 5)
        let patch = try #require(ReleasePatch.make(from: file, to: v2))
        #expect(ReleasePatch.apply(patch, to: file) == v2)
        #expect(patch.count < v2.count)
        #expect(ReleasePatch.apply(patch, to: Array(file.dropLast(4))) == nil)
        #expect(ReleasePatch.make(from: file, to: Array(v2.dropLast())) == nil)
    }
}

extension ReleaseDistributor {
    /// Publishes at time zero.
    mutating func publishForTest(_ m: ReleaseManifest, file: [UInt8]) throws -> [Action] { try publish(m, file: file, delta: nil, at: .zero) }
}
