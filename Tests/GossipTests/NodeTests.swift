import Crypto
import Testing
@testable import Gossip

/// In-degree of every running node, counted over running nodes' views.
func inDegrees(_ h: NodeHarness) -> [PeerID: Int] {
    var degree: [PeerID: Int] = [:]
    for i in h.nodes.indices where h.up[i] { degree[h.nodes[i].identity.peerID] = 0 }
    for i in h.nodes.indices where h.up[i] {
        for e in h.nodes[i].sampler.view where degree[e.peer] != nil { degree[e.peer, default: 0] += 1 }
    }
    return degree
}

/// True if every running node reaches every other along view edges (strong connectivity).
func stronglyConnected(_ h: NodeHarness) -> Bool {
    let live = h.nodes.indices.filter { h.up[$0] }
    guard let root = live.first else { return true }
    var index: [PeerID: Int] = [:]
    for i in live { index[h.nodes[i].identity.peerID] = i }
    var forward: [Int: [Int]] = [:], backward: [Int: [Int]] = [:]
    for i in live {
        for e in h.nodes[i].sampler.view {
            guard let j = index[e.peer] else { continue }
            forward[i, default: []].append(j)
            backward[j, default: []].append(i)
        }
    }
    func reach(_ edges: [Int: [Int]]) -> Int {
        var seen: Set<Int> = [root]
        var stack = [root]
        while let n = stack.popLast() {
            for m in edges[n] ?? [] where seen.insert(m).inserted { stack.append(m) }
        }
        return seen.count
    }
    return reach(forward) == live.count && reach(backward) == live.count
}

func bootstrappedNetwork(_ n: Int, settings: OverlaySettings = .lan, seed: UInt64 = 1) -> NodeHarness {
    var h = NodeHarness()
    let memo = RecordVerifier.Memo()
    var s = settings
    s.discovery.beaconEndpoint = nil
    for i in 0..<n {
        var si = s
        if i > 0 { si.discovery.bootstrap = [testEndpoint(0)] }
        let node = GossipNode(identity: testIdentity(i), endpoints: [testEndpoint(i)], settings: si, seed: seed &+ UInt64(i), verifier: RecordVerifier(sharing: memo))
        _ = h.add(node)
        h.run(for: .milliseconds(10))
    }
    return h
}

@Test func node_smallNetworkBootstrappedFromOneNode_formsConnectedOverlay() {
    var h = bootstrappedNetwork(100)
    h.run(for: .seconds(30))
    let degrees = inDegrees(h)
    let mean = Double(degrees.values.reduce(0, +)) / Double(degrees.count)
    let maximum = degrees.values.max() ?? 0
    print("n=100 mean in-degree \(mean) max \(maximum) messages \(h.messagesSent)")
    #expect(stronglyConnected(h))
    #expect(Double(maximum) <= 3 * mean)
}
