import Crypto
import Testing
@testable import Gossip

private typealias Message = PairwiseAverager.Message

private func pairwiseEndpoint(_ i: Int) -> Endpoint { Endpoint(host: "p\(i)", port: 1) }

private func pairwiseAddress(_ i: Int) -> PeerAddress { PeerAddress(peer: averagingTestPeer(i), endpoint: pairwiseEndpoint(i)) }

/// Node `i` of `vectors`, linked to every other node.
private func pairwiseNodes(_ vectors: [[Float]]) -> [PairwiseAverager] {
    vectors.indices.map { i in
        PairwiseAverager(
            peer: averagingTestPeer(i), initial: vectors[i],
            neighbours: vectors.indices.filter { $0 != i }.map(pairwiseAddress), rng: SplitMix64(seed: UInt64(i + 1)))
    }
}

/// The one message sent among `actions`, and the node it goes to.
private func sentMessage(_ actions: [PairwiseAverager.Action]) -> (message: Message, to: Int)? {
    for case .send(let message, let endpoint, _) in actions {
        guard let to = (0..<16).first(where: { pairwiseEndpoint($0) == endpoint }) else { return nil }
        return (message, to)
    }
    return nil
}

/// Wakes node `from` until it offers to node `to` (its neighbour), within 50 wake-ups.
private func offerTo(_ to: Int, from: Int, in nodes: inout [PairwiseAverager]) -> Message? {
    for _ in 0..<50 {
        if let sent = sentMessage(nodes[from].onTimer(.wake, at: .zero)), sent.to == to { return sent.message }
    }
    return nil
}

/// `message` delivered to `nodes[to]` over the session with node `from`.
private func deliver(_ message: Message, from: Int, to: Int, in nodes: inout [PairwiseAverager]) -> [PairwiseAverager.Action] {
    nodes[to].onMessage(message, from: Sender(endpoint: pairwiseEndpoint(from), peer: averagingTestPeer(from)), at: .zero)
}

private func sums(_ nodes: [PairwiseAverager]) -> [Double] {
    (0..<nodes[0].value.count).map { k in nodes.reduce(0) { $0 + $1.value[k] } }
}

@Test func pairwiseExchangeMovesBothNodesToTheirMean() throws {
    var nodes = pairwiseNodes([[1, 10], [5, -2]])
    let offer = try #require(sentMessage(nodes[0].onTimer(.wake, at: .zero)))
    #expect(offer.to == 1)
    let answer = try #require(sentMessage(deliver(offer.message, from: 0, to: 1, in: &nodes)))
    #expect(answer.to == 0)
    _ = deliver(answer.message, from: 1, to: 0, in: &nodes)
    #expect(nodes[0].value == [3, 4])
    #expect(nodes[1].value == [3, 4])
    #expect(nodes.map(\.exchanges) == [1, 1])
    #expect(offer.message.wireSize == Message.headerSize + 16)
}

/// The offerer's value changes between its offer and the answer (it answers a third node
/// meanwhile): each exchange moves its two sides by the same amount, so the sum stays.
@Test func pairwiseExchangeConservesTheSumWhenTheOffererChangedMeanwhile() throws {
    var nodes = pairwiseNodes([[8, 0.25], [2, 1], [-4, 7]])
    let before = sums(nodes)
    let offer = try #require(offerTo(1, from: 0, in: &nodes))
    let answer = try #require(sentMessage(deliver(offer, from: 0, to: 1, in: &nodes)))
    // Node 2 offers to node 0 and is answered before node 1's answer reaches node 0.
    let interloper = try #require(offerTo(0, from: 2, in: &nodes))
    let toInterloper = try #require(sentMessage(deliver(interloper, from: 2, to: 0, in: &nodes)))
    _ = deliver(toInterloper.message, from: 0, to: 2, in: &nodes)
    _ = deliver(answer.message, from: 1, to: 0, in: &nodes)
    let after = sums(nodes)
    for k in before.indices { #expect(abs(after[k] - before[k]) < 1e-12, "element \(k): \(before[k]) → \(after[k])") }
    #expect(nodes.map(\.exchanges) == [2, 1, 1])
}

@Test func pairwiseLostOfferChangesNothingAndALostAnswerLosesHalfTheDifference() throws {
    var nodes = pairwiseNodes([[6], [2]])
    _ = nodes[0].onTimer(.wake, at: .zero)
    #expect(nodes.map(\.value) == [[6], [2]])
    // Node 1 answers d = (2 − 6) / 2 = −2 and moves to 4; the answer is lost, node 0 stays at 6.
    let offer = try #require(sentMessage(nodes[0].onTimer(.wake, at: .zero)))
    _ = deliver(offer.message, from: 0, to: 1, in: &nodes)
    #expect(nodes.map(\.value) == [[6], [4]])
}

@Test func pairwiseAnswersApplyOnceAndOnlyFromThePeerAsked() throws {
    var nodes = pairwiseNodes([[6], [2], [0]])
    let offer = try #require(offerTo(1, from: 0, in: &nodes))
    let answer = try #require(sentMessage(deliver(offer, from: 0, to: 1, in: &nodes)))
    // The same answer from a peer that was not asked is ignored.
    #expect(deliver(answer.message, from: 2, to: 0, in: &nodes).isEmpty)
    #expect(nodes[0].value == [6])
    _ = deliver(answer.message, from: 1, to: 0, in: &nodes)
    #expect(nodes[0].value == [4])
    // A duplicate is ignored.
    #expect(deliver(answer.message, from: 1, to: 0, in: &nodes).isEmpty)
    #expect(nodes[0].value == [4])
}

/// The events among `actions`.
private func events(_ actions: [PairwiseAverager.Action]) -> [PairwiseAverager.Event] {
    actions.compactMap { if case .report(let event) = $0 { event } else { nil } }
}

@Test func pairwiseRefusesUnauthenticatedMalformedAndNonFiniteOffers() {
    var node = pairwiseNodes([[1, 2], [0, 0]])[0]
    let anonymous = Sender(endpoint: pairwiseEndpoint(1))
    #expect(events(node.onMessage(.offer(exchange: 1, value: [0, 0]), from: anonymous, at: .zero))
        == [.rejected(from: anonymous, reason: .unauthenticated)])
    let peer = Sender(endpoint: pairwiseEndpoint(1), peer: averagingTestPeer(1))
    #expect(events(node.onMessage(.offer(exchange: 1, value: [0]), from: peer, at: .zero))
        == [.rejected(from: peer, reason: .wrongDimension(expected: 2, got: 1))])
    #expect(events(node.onMessage(.offer(exchange: 2, value: [.nan, 0]), from: peer, at: .zero))
        == [.rejected(from: peer, reason: .nonFinite)])
    #expect(node.value == [1, 2])
    #expect(node.exchanges == 0)
}

/// Two nodes on their own Poisson clocks over 30 ms links, so a node sometimes wakes (or
/// changes) while an offer is on its way: the pair still keeps its sum and reaches its mean.
@Test func pairwiseTwoNodesConvergeToTheMean() {
    var nodes = pairwiseNodes([[3, -1, 100], [-7, 2, 0]])
    let mean = sums(nodes).map { $0 / 2 }
    let latency = Duration.milliseconds(30)
    enum Pending { case wake, message(Message, from: Int) }
    var queue: [(at: Instant, order: Int, node: Int, pending: Pending)] = []
    var order = 0
    func enqueue(_ actions: [PairwiseAverager.Action], from node: Int, at now: Instant) {
        for action in actions {
            order += 1
            switch action {
            case .schedule(_, let at): queue.append((at, order, node, .wake))
            case .send(let message, _, _): queue.append((now + latency, order, 1 - node, .message(message, from: node)))
            default: break
            }
        }
    }
    for i in 0..<2 { enqueue(nodes[i].onStart(at: .zero), from: i, at: .zero) }
    var wakesWithAnOfferInFlight = 0
    while let next = queue.indices.min(by: { (queue[$0].at, queue[$0].order) < (queue[$1].at, queue[$1].order) }),
          queue[next].at < Instant(nanoseconds: 10_000_000_000) {
        let (now, _, node, pending) = queue.remove(at: next)
        switch pending {
        case .wake:
            if queue.contains(where: { if case .message(.offer, _) = $0.pending { true } else { false } }) { wakesWithAnOfferInFlight += 1 }
            enqueue(nodes[node].onTimer(.wake, at: now), from: node, at: now)
        case .message(let message, let from):
            enqueue(nodes[node].onMessage(message, from: Sender(endpoint: pairwiseEndpoint(from), peer: averagingTestPeer(from)), at: now),
                    from: node, at: now)
        }
    }
    #expect(wakesWithAnOfferInFlight > 0, "no node ever woke with an offer in flight: nothing concurrent was tested")
    #expect(nodes[0].exchanges > 50)
    for node in nodes {
        for k in mean.indices { #expect(abs(node.value[k] - mean[k]) < 1e-9, "\(node.value) against \(mean)") }
    }
}

/// The wake-up gaps are exponential with the configured mean: 2,000 gaps of mean 200 ms
/// average within 15 ms of it (three standard deviations of the mean of 2,000 is 13 ms).
@Test func pairwiseWakesOnAPoissonClock() {
    var node = pairwiseNodes([[0], [1]])[0]
    var now = Instant.zero
    var gaps: [Double] = []
    var actions = node.onStart(at: now)
    for _ in 0..<2000 {
        guard case .schedule(.wake, let at) = actions.first else {
            Issue.record("no wake-up scheduled")
            return
        }
        gaps.append((at - now).seconds)
        now = at
        actions = node.onTimer(.wake, at: now)
    }
    let mean = gaps.reduce(0, +) / Double(gaps.count)
    #expect(abs(mean - 0.2) < 0.015, "mean gap \(mean) s")
    // An exponential law: about e⁻¹ of the gaps exceed the mean (a fixed tick gives none).
    let longer = Double(gaps.filter { $0 > 0.2 }.count) / Double(gaps.count)
    #expect(abs(longer - 0.368) < 0.04, "\(longer) of gaps exceed the mean")
}
