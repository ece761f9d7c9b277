import Testing
@testable import Gossip

/// The word an array value holds: the address of its storage, which a prefetch hint loads.
private func storage<Element>(_ array: [Element]) -> UInt { unsafeBitCast(array, to: UInt.self) }

/// The words a hint reads `offsets` into `value`.
private func words<Value>(_ value: Value, at offsets: [Int]) -> [UInt] {
    withUnsafeBytes(of: value) { raw in offsets.map { raw.load(fromByteOffset: $0, as: UInt.self) } }
}

@Test func prefetchHints_readThePushSumNodesOwnArrayReferences() {
    let peer = PeerAddress(peer: averagingTestPeer(1), endpoint: Endpoint(host: "n1", port: 1))
    var node = PushSumAverager(peer: averagingTestPeer(0), initial: [1, 2, 3], sampleCount: 2, neighbours: [peer], rng: SplitMix64(seed: 1))
    _ = node.onTimer(.tick, at: .zero)
    #expect(node.inFlight.count == 1, "a transfer in flight, so that array is not the shared empty one")
    let expected = [storage(node.value), storage(node.neighbours), storage(node.inFlight), storage(node.roundTrips.elements), storage(node.senders.elements)]
    #expect(words(node, at: PushSumAverager.stateOffsets.map(\.offset)) == expected)
}

@Test func prefetchHints_readTheInterpretersTimerTable() {
    var interpreter = ActionInterpreter<String, String, Int>()
    interpreter.perform([.schedule("tick", at: .zero)], send: { _, _, _ in }, wake: { _, _, _ in }, report: { _ in }, compute: { _ in })
    #expect(words(interpreter, at: [ActionInterpreter<String, String, Int>.pendingOffset]) == [storage(interpreter.pending)])
}
