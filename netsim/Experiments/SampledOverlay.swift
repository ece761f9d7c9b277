import Crypto
import DeterministicRandom
import Gossip
import Simulation

/// The protocol's own peer sampling: every node a full `GossipNode` (signed address records,
/// membership, Cyclon views, discovery), its averager (if it has one) pushing to the peers its
/// view holds, as `peer join` runs it.
///
/// With `warmCaches` every node starts, at time 0, with the peer cache a previous run would
/// have persisted: a view's worth of peers drawn uniformly, so views are random from the first
/// tick and the run measures mixing. Without, nodes join one after another through node 0
/// (a cold start: the run measures the join surge as well).
final class SampledOverlay {
    /// Spacing of the joins in a cold start.
    let joinSpacing: Duration
    /// Each node's first record, as it signs it at its first start (sequence 1), when caches
    /// start warm; empty for a cold start.
    private var firstRecords: [AddressRecord] = []
    private let seed: UInt64
    private let identities: [Identity]
    private let settings: OverlaySettings
    private let averaging: PushSumAverager.Settings
    private let codec: any ShareCodec
    private let inputs: (Int) -> (vector: [Float], samples: Double)?
    /// Verification is pure: one memo for the whole network changes no outcome, only CPU time.
    private let memo = RecordVerifier.Memo()

    /// `inputs` gives each node's vector and sample count, or nil for a node without an averager.
    init(nodes: Int, seed: UInt64, warmCaches: Bool, averaging: PushSumAverager.Settings, codec: any ShareCodec,
         inputs: @escaping (Int) -> (vector: [Float], samples: Double)?) throws(ScenarioError) {
        var settings = OverlaySettings.lan
        settings.discovery.beaconEndpoint = nil  // the simulator has no multicast group
        settings.averaging = averaging
        self.settings = settings
        self.averaging = averaging
        self.codec = codec
        self.inputs = inputs
        self.seed = seed
        var rng = SplitMix64(seed: seed ^ 0x1D3E_7171)
        var identities: [Identity] = []
        identities.reserveCapacity(nodes)
        for _ in 0..<nodes {
            var bytes = [UInt8]()
            for _ in 0..<(Identity.seedLength / 8) { withUnsafeBytes(of: rng.next().littleEndian) { bytes.append(contentsOf: $0) } }
            do { identities.append(try Identity.simulated(seed: bytes)) } catch {
                throw ScenarioError("cannot make node identities: \(error)")
            }
        }
        self.identities = identities
        joinSpacing = warmCaches ? .zero : .milliseconds(2)
        guard warmCaches else { return }
        firstRecords = (0..<nodes).map { AddressRecord(signedBy: identities[$0], endpoints: [SimAddress.endpoint($0)], sequence: 1) }
    }

    /// The network: `wrap` makes each node around its `GossipNode` (a learning node, say), or
    /// keeps it as it is.
    func simulator<Node: ProtocolNode>(links: LinkPolicy, wrap: @escaping (NodeContext, GossipNode) throws -> Node) -> Simulator<Node> {
        Simulator<Node>(nodeCount: identities.count, seed: seed, links: links) { [self] context in try wrap(context, makeNode(context)) }
    }

    private func makeNode(_ context: NodeContext) -> GossipNode {
        var s = settings
        if context.index > 0, firstRecords.isEmpty { s.discovery.bootstrap = [SimAddress.endpoint(0)] }
        let averager = inputs(context.index).map { vector, samples in
            PushSumAverager(peer: identities[context.index].peerID, initial: vector, sampleCount: samples,
                            settings: averaging, codec: codec, rng: SplitMix64(seed: context.seed ^ 0xA5A5))
        }
        let cache = firstRecords.isEmpty
            ? PeerCache()
            : randomPeerCache(of: context.index, records: firstRecords, viewSize: settings.sampling.viewSize, seed: seed ^ 0xCAC4_E5ED)
        return GossipNode(identity: identities[context.index], endpoints: [context.endpoint], settings: s, cache: cache,
                          averager: averager, seed: context.seed, verifier: RecordVerifier(sharing: memo))
    }
}
