import Crypto
import DeterministicRandom
import Federation
import Gossip
import Learner
import Testing

/// The overlay peer of the model-exchanging algorithms (what `peer join --algorithm
/// gossip-learning|dpsgd` runs) and the checkpoint that resumes it.
@Suite struct ModelExchangePeerTests {
    static let architecture = try! Architecture(inputCount: 6, hiddenSizes: [], classCount: 3)

    static func overlay(_ seed: UInt8, averager: (PeerID) -> PushSumAverager? = { _ in nil }) throws -> GossipNode {
        let identity = try Identity(seed: [UInt8](repeating: seed, count: Identity.seedLength))
        return GossipNode(identity: identity, endpoints: [Endpoint(host: "10.0.0.\(seed)", port: 7946)], averager: averager(identity.peerID), seed: UInt64(seed))
    }

    static func peer(joining: Bool, scaling: InputScaling = .fixed(.identity(featureCount: 0)), data: Dataset) throws -> ModelExchangePeer<GossipLearningNode> {
        let base = try overlay(1) { peer in
            guard case .agreed = scaling else { return nil }
            return PushSumAverager(peer: peer, initial: ModelExchangePeer<GossipLearningNode>.initialMoments(of: data), sampleCount: Double(data.count), rng: SplitMix64(seed: 2))
        }
        let algorithm = try GossipLearningNode(peer: base.peerID, neighbours: [], architecture: architecture,
                                               initial: Model(architecture: architecture, seed: 1), data: data, seed: 3)
        return try ModelExchangePeer(base: base, algorithm: algorithm, data: data, scaling: scaling, joining: joining)
    }

    @Test func aJoiner_takesTheFirstCopyItReceivesAsItsModel_thenTrains() throws {
        let data = try Dataset.gaussianBlobs(count: 90, seed: 1)
        var node = try Self.peer(joining: true, data: data)
        let start = node.onStart(at: .zero)
        // Neither trains nor sends while it waits: only the join timer and the overlay's own work.
        #expect(start.contains { if case .schedule(.join, _) = $0 { return true } else { return false } })
        #expect(!start.contains { if case .schedule(.algorithm, _) = $0 { return true } else { return false } })
        #expect(node.model == nil && node.joining)

        let network = Model(architecture: Self.architecture, seed: 9).flatten()
        let copy = ModelCopy(age: 40, sequence: 1, degree: 3, count: network.count, codec: 0, payload: .floats(network))
        let sender = Sender(endpoint: Endpoint(host: "10.0.0.2", port: 7946), peer: try Self.overlay(2).peerID)
        let actions = node.onMessage(.model(copy), from: sender, at: Instant(nanoseconds: 1_000_000))
        #expect(!node.joining && node.model?.flatten() == network)
        #expect(actions.contains { if case .report(.joined(pulled: true)) = $0 { return true } else { return false } })
        #expect(actions.contains { if case .schedule(.algorithm(.gossip), _) = $0 { return true } else { return false } })

        // A copy that does not fit (another model's size) is refused, not merged.
        let wrong = ModelCopy(age: 1, sequence: 2, degree: 3, count: 4, codec: 0, payload: .floats([1, 2, 3, 4]))
        let refused = node.onMessage(.model(wrong), from: sender, at: Instant(nanoseconds: 2_000_000))
        #expect(refused.contains { if case .report(.algorithm(.refused)) = $0 { return true } else { return false } })
        #expect(node.model?.flatten() == network)
    }

    @Test func aFirstPeer_startsFromTheInitialModelAfterTheJoinTimeout() throws {
        var node = try Self.peer(joining: true, data: try Dataset.gaussianBlobs(count: 90, seed: 1))
        _ = node.onStart(at: .zero)
        let actions = node.onTimer(.join, at: Instant(nanoseconds: 3_000_000_000))
        #expect(!node.joining && node.model?.flatten() == Model(architecture: Self.architecture, seed: 1).flatten())
        #expect(actions.contains { if case .report(.joined(pulled: false)) = $0 { return true } else { return false } })
    }

    @Test func withTheNetworksScaling_theOverlayAveragesTheMoments_andTheNormaliserStandardisesByThem() throws {
        let data = try Dataset.gaussianBlobs(count: 300, seed: 5)
        let node = try Self.peer(joining: false, scaling: .agreed, data: data)
        #expect(node.overlay.averager?.dimension == 2 * data.featureCount)
        // Alone, the network's moments are its own data's: standardised, its features have mean 0.
        var scaled = data
        try scaled.normalize(with: try #require(node.normalizer))
        for j in 0..<data.featureCount {
            let mean = (0..<scaled.count).reduce(0.0) { $0 + Double(scaled.features[$1 * data.featureCount + j]) } / Double(scaled.count)
            #expect(abs(mean) < 1e-4, "feature \(j): mean \(mean)")
        }
        // Without the moments in the overlay the peer is refused.
        let bare = try Self.overlay(1)
        let algorithm = try GossipLearningNode(peer: bare.peerID, neighbours: [], architecture: Self.architecture,
                                               initial: Model(architecture: Self.architecture, seed: 1), data: data, seed: 3)
        #expect(throws: LearnerError.self) { try ModelExchangePeer(base: bare, algorithm: algorithm, data: data, scaling: .agreed, joining: false) }
    }

    @Test func withTheNetworksScaling_andNoMomentsYet_thePeerMergesButDoesNotTrainOnUnscaledData() throws {
        let data = try Dataset.gaussianBlobs(count: 90, seed: 1)
        func node(weighted: Bool) throws -> ModelExchangePeer<GossipLearningNode> {
            let base = try Self.overlay(1) { peer in
                let dimension = AveragedLayout(momentsOf: data.featureCount).dimension
                return weighted
                    ? PushSumAverager(peer: peer, initial: ModelExchangePeer<GossipLearningNode>.initialMoments(of: data), sampleCount: Double(data.count), rng: SplitMix64(seed: 2))
                    : PushSumAverager(joining: peer, dimension: dimension, sampleCount: Double(data.count), rng: SplitMix64(seed: 2))
            }
            let algorithm = try GossipLearningNode(peer: base.peerID, neighbours: [], architecture: Self.architecture,
                                                   initial: Model(architecture: Self.architecture, seed: 1), data: data, seed: 3)
            return try ModelExchangePeer(base: base, algorithm: algorithm, data: data, scaling: .agreed, joining: false)
        }
        let copy = ModelCopy(age: 1, sequence: 1, degree: 1, count: Self.architecture.parameterCount, codec: 0,
                             payload: .floats(Model(architecture: Self.architecture, seed: 9).flatten()))
        let sender = Sender(endpoint: Endpoint(host: "10.0.0.2", port: 7946), peer: try Self.overlay(2).peerID)
        func trains(_ actions: [ModelExchangePeer<GossipLearningNode>.Action]) -> Bool {
            actions.contains { if case .compute = $0 { return true } else { return false } }
        }
        // Without weight its averager knows no moments: it merges the copy but trains on nothing.
        var unweighted = try node(weighted: false)
        _ = unweighted.onStart(at: .zero)
        #expect(unweighted.normalizer == nil)
        #expect(!trains(unweighted.onMessage(.model(copy), from: sender, at: Instant(nanoseconds: 1_000))))
        #expect(unweighted.algorithm.merged == 1)
        // With its moments it trains on the data they scale.
        var weighted = try node(weighted: true)
        _ = weighted.onStart(at: .zero)
        #expect(trains(weighted.onMessage(.model(copy), from: sender, at: Instant(nanoseconds: 1_000))))
    }

    @Test func checkpoints_withAndWithoutParameters_roundTrip_andDamageIsRefusedByName() throws {
        var optimizer = SGDState(parameterCount: 3)
        optimizer.velocity = [0.5, -1, 2]
        optimizer.step = 77
        let plain = LearningCheckpoint(rounds: 12, steps: 60, optimizer: optimizer)
        let withModel = LearningCheckpoint(rounds: 12, steps: 60, optimizer: optimizer, parameters: [1, -2.5, 3, 0.125])
        for checkpoint in [plain, withModel] {
            let bytes = checkpoint.encoded()
            #expect(try LearningCheckpoint(decoding: bytes) == checkpoint)
            var damaged = bytes
            damaged[10] ^= 1
            #expect(throws: WireError.self) { try LearningCheckpoint(decoding: damaged) }
        }
        #expect(Array(plain.encoded().prefix(4)) == Array("MLC1".utf8) && Array(withModel.encoded().prefix(4)) == Array("MLC2".utf8))
        // A model of non-finite values is refused even with a valid digest.
        let poisoned = LearningCheckpoint(rounds: 1, steps: 1, optimizer: optimizer, parameters: [.nan])
        #expect(throws: WireError.self) { try LearningCheckpoint(decoding: poisoned.encoded()) }

        // A peer whose model travels by copies resumes the model, the rounds and the optimizer.
        var node = try Self.peer(joining: true, data: try Dataset.gaussianBlobs(count: 90, seed: 1))
        let model = Model(architecture: Self.architecture, seed: 7).flatten()
        var state = SGDState(parameterCount: model.count)
        state.step = 125
        try node.restore(LearningCheckpoint(rounds: 25, steps: 125, optimizer: state, parameters: model))
        #expect(!node.joining && node.model?.flatten() == model && node.roundsTrained == 25 && node.stepsTrained == 125)
        #expect(node.checkpoint.parameters == model && node.checkpoint.optimizer.step == 125)
        #expect(throws: LearnerError.self) { try node.restore(plain) }
    }
}
