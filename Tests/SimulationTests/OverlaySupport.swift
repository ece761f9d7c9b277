import Crypto
import Gossip
@testable import Simulation

/// Deterministic identity `i` for simulations (a fixed 32-byte seed per index).
func simIdentity(_ i: Int) -> Identity {
    var seed = [UInt8](repeating: 0x5E, count: 32)
    withUnsafeBytes(of: UInt64(i).littleEndian) { for (k, b) in $0.enumerated() { seed[k] = b } }
    // Any 32-byte seed derives a key pair; the length is fixed here.
    return try! Identity(seed: seed)
}

/// What a simulated overlay's nodes share outside the protocol: which identity runs at which
/// index, the peer cache each one persisted (as its runtime would write it to disk), and one
/// signature memo (verification is pure, so sharing it changes no outcome, only CPU time).
final class OverlayWorld: @unchecked Sendable {
    var identities: [Int: Identity] = [:]
    var caches: [Int: PeerCache] = [:]
    var settings: OverlaySettings
    var bootstrap: [Endpoint]
    let memo = RecordVerifier.Memo()
    /// When set, node `i` averages `averaging(i)` (its vector and sample count).
    var averaging: ((Int) -> (vector: [Float], samples: Double))?
    /// When set, node `i` takes part in model distribution with `releases(i, seed)`.
    var releases: ((Int, UInt64) -> ReleaseDistributor)?

    init(settings: OverlaySettings = .lan, bootstrap: [Endpoint] = [SimAddress.endpoint(0)]) {
        var s = settings
        s.discovery.beaconEndpoint = nil  // the simulator has no multicast group
        self.settings = s
        self.bootstrap = bootstrap
    }

    func identity(_ index: Int) -> Identity {
        if let id = identities[index] { return id }
        let id = simIdentity(index)
        identities[index] = id
        return id
    }

    /// A node as its runtime would start it: identity, persisted cache, bootstrap list.
    func makeNode(_ context: NodeContext) -> GossipNode {
        var s = settings
        s.discovery.bootstrap = bootstrap.filter { $0 != context.endpoint }
        let averager = averaging.map { input in
            let (vector, samples) = input(context.index)
            return PushSumAverager(peer: identity(context.index).peerID, initial: vector, sampleCount: samples,
                                   settings: s.averaging, rng: SplitMix64(seed: context.seed ^ 0xA5A5))
        }
        return GossipNode(
            identity: identity(context.index), endpoints: [context.endpoint], settings: s,
            cache: caches[context.index] ?? PeerCache(), averager: averager, releases: releases?(context.index, context.seed ^ 0x5A5A),
            seed: context.seed, verifier: RecordVerifier(sharing: memo))
    }

    func simulator(nodeCount: Int, seed: UInt64, links: LinkPolicy = LinkPolicy()) -> Simulator<GossipNode> {
        Simulator<GossipNode>(nodeCount: nodeCount, seed: seed, links: links) { [self] context in makeNode(context) }
    }

    /// Crash node `index` at `time` after saving its peer cache (what the runtime persists).
    func crash(_ sim: Simulator<GossipNode>, _ index: Int, at time: Instant) {
        sim.inject(index, at: time) { [self] node, _ in
            caches[index] = node.peerCache
            return []
        }
        sim.crash(index, at: time, keepState: false)
    }
}

/// In-degree of every running node over running nodes' views, and whether those views form
/// one strongly connected overlay (never for fewer than two running nodes: an empty or lone
/// overlay proves nothing).
struct OverlayShape {
    var inDegree: [Int]
    var stronglyConnected: Bool
    var live: Int

    var mean: Double { inDegree.isEmpty ? 0 : Double(inDegree.reduce(0, +)) / Double(inDegree.count) }
    var maximum: Int { inDegree.max() ?? 0 }

    init(_ sim: Simulator<GossipNode>) {
        let liveIndices = (0..<sim.nodeCount).filter { sim.isUp($0) && sim.node($0) != nil }
        var position: [PeerID: Int] = [:]
        for (k, i) in liveIndices.enumerated() { position[sim.node(i)!.identity.peerID] = k }
        var forward = Array(repeating: [Int](), count: liveIndices.count)
        var backward = forward
        var degree = Array(repeating: 0, count: liveIndices.count)
        for (k, i) in liveIndices.enumerated() {
            for e in sim.node(i)!.sampler.view {
                guard let j = position[e.peer], sim.node(liveIndices[j])!.record.primary == e.record.primary else { continue }
                degree[j] += 1
                forward[k].append(j)
                backward[j].append(k)
            }
        }
        func reach(_ edges: [[Int]]) -> Int {
            guard !edges.isEmpty else { return 0 }
            var seen = Array(repeating: false, count: edges.count)
            seen[0] = true
            var stack = [0], count = 1
            while let n = stack.popLast() {
                for m in edges[n] where !seen[m] {
                    seen[m] = true
                    count += 1
                    stack.append(m)
                }
            }
            return count
        }
        inDegree = degree
        live = liveIndices.count
        stronglyConnected = live >= 2 && reach(forward) == live && reach(backward) == live
    }
}
