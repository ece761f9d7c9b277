import Crypto
import Gossip
import Testing
@testable import Simulation

/// Issue 3, test 6: a peer is its key. Coming back at a new address, it keeps its identity
/// and replaces its old record everywhere; forged and replayed records are rejected.
struct IdentityTests {
    static let nodes = 200
    static let returning = 7
    static let newHome = 200  // a spare slot: a different address
    static let attacker = 201

    /// Every live node's view of `peer`: the endpoints it holds for it (view or membership).
    func heldEndpoints(of peer: PeerID, in sim: Simulator<GossipNode>) -> [Endpoint: Int] {
        var held: [Endpoint: Int] = [:]
        for i in 0..<sim.nodeCount where sim.isUp(i) {
            guard let node = sim.node(i), node.identity.peerID != peer else { continue }
            if let e = node.sampler.entry(for: peer) { held[e.record.primary, default: 0] += 1 }
            if let m = node.membership.members[peer], node.sampler.entry(for: peer) == nil { held[m.record.primary, default: 0] += 1 }
        }
        return held
    }

    @Test func identity_peerReturningAtNewAddress_keepsIdentityAndForgeriesAreRejected() {
        let world = OverlayWorld()
        let sim = world.simulator(nodeCount: Self.nodes + 2, seed: 6, links: LinkPolicy(default: LinkModel(latency: .milliseconds(2), jitter: .milliseconds(3))))
        final class Log: @unchecked Sendable { var rejected = 0, refused = 0 }
        let log = Log()
        sim.onEvent = { _, event, _ in
            switch event {
            case .membership(.rejected), .sampling(.rejected): log.rejected += 1
            case .refused: log.refused += 1
            default: break
            }
        }
        for i in 0..<Self.nodes { sim.start(i, at: .zero + .milliseconds(10) * i) }
        let x = world.identity(Self.returning).peerID
        sim.run(until: .zero + .seconds(40))
        let oldRecord = sim.node(Self.returning)!.record
        #expect(heldEndpoints(of: x, in: sim)[SimAddress.endpoint(Self.returning), default: 0] > 0)

        // The peer crashes and comes back 10 s later at another address, with its key and
        // the peer cache its runtime persisted.
        world.crash(sim, Self.returning, at: sim.now)
        sim.run(until: sim.now + .milliseconds(1))
        world.identities[Self.newHome] = world.identity(Self.returning)
        world.caches[Self.newHome] = world.caches[Self.returning]
        sim.start(Self.newHome, at: sim.now + .seconds(10))
        sim.run(until: sim.now + .seconds(60))
        let returned = sim.node(Self.newHome)!
        #expect(returned.identity.peerID == x)
        #expect(returned.record.sequence == oldRecord.sequence + 1)
        let afterReturn = heldEndpoints(of: x, in: sim)
        print("returning peer held at: \(afterReturn.sorted { $0.value > $1.value })")
        #expect(afterReturn[SimAddress.endpoint(Self.newHome), default: 0] >= 10)
        #expect(afterReturn[SimAddress.endpoint(Self.returning)] == nil)
        for i in 0..<Self.nodes where sim.isUp(i) {
            if let m = sim.node(i)?.membership.members[x] { #expect(m.status == .alive && m.record.primary == SimAddress.endpoint(Self.newHome)) }
        }

        // An attacker claims the peer's key at its own address (signed with its own key, at a
        // higher sequence), and replays the peer's old genuine record, by every route.
        sim.start(Self.attacker, at: sim.now)
        sim.run(until: sim.now + .milliseconds(1))
        let attackerIdentity = world.identity(Self.attacker)
        let counterfeit = AddressRecord(signedBy: attackerIdentity, endpoints: [SimAddress.endpoint(Self.attacker)], sequence: oldRecord.sequence + 100)
        let forged = AddressRecord(peer: x, endpoints: counterfeit.endpoints, sequence: counterfeit.sequence, signature: counterfeit.signature)
        let rejectedBefore = log.rejected + log.refused
        for target in 0..<Self.nodes where target != Self.returning {
            let to = SimAddress.endpoint(target)
            sim.inject(Self.attacker, at: sim.now) { _, _ in
                [
                    .send(.sampling(.request(id: 1, entries: [PeerSampler.Entry(record: forged, age: 0)])), to: to, via: .datagram(to: world.identity(target).peerID)),
                    .send(.membership(.gossip(from: x, updates: [.alive(AliveClaim(signedBy: attackerIdentity, record: forged, incarnation: 9))])), to: to, via: .datagram(to: world.identity(target).peerID)),
                    .send(.discovery(.beacon(forged)), to: to, via: .datagram(to: world.identity(target).peerID)),
                    .send(.discovery(.join(forged)), to: to, via: .datagram(to: world.identity(target).peerID)),
                    .send(.sampling(.request(id: 2, entries: [PeerSampler.Entry(record: oldRecord, age: 0)])), to: to, via: .datagram(to: world.identity(target).peerID)),
                    .send(.membership(.gossip(from: x, updates: [.alive(AliveClaim(signedBy: attackerIdentity, record: oldRecord, incarnation: 50))])), to: to, via: .datagram(to: world.identity(target).peerID)),
                ]
            }
        }
        let knewNewRecord = (0..<Self.nodes).filter { i in
            sim.node(i).map { $0.sampler.entry(for: x) != nil || $0.membership.members[x] != nil } ?? false
        }
        sim.run(until: sim.now + .seconds(2))
        // No node that knew the new record took the forged or the replayed one.
        for i in knewNewRecord {
            guard let node = sim.node(i) else { continue }
            let held = node.sampler.entry(for: x)?.record ?? node.membership.members[x]?.record
            #expect(held == nil || held == returned.record, "node \(i) holds \(String(describing: held))")
        }
        let shortlyAfter = heldEndpoints(of: x, in: sim)
        // A node that never heard of the peer cannot tell a replayed genuine record from a
        // current one; its probes of the dead address fail, its suspicion reaches the peer,
        // which answers with its current record. Within the detection bound all is mended.
        sim.run(until: sim.now + .seconds(60))
        let afterAttack = heldEndpoints(of: x, in: sim)
        print("after forgery and replay: \(shortlyAfter.sorted { $0.value > $1.value }) at 2 s, \(afterAttack.sorted { $0.value > $1.value }) at 62 s, rejections \(log.rejected + log.refused - rejectedBefore)")
        #expect(shortlyAfter[SimAddress.endpoint(Self.attacker)] == nil)
        #expect(afterAttack[SimAddress.endpoint(Self.attacker)] == nil)
        #expect(afterAttack[SimAddress.endpoint(Self.returning)] == nil)
        #expect(afterAttack[SimAddress.endpoint(Self.newHome), default: 0] >= 10)
        #expect(log.rejected + log.refused - rejectedBefore >= Self.nodes)
    }
}
