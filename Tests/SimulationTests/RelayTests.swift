import Gossip
import Testing
@testable import Simulation

@Suite struct RelayTests {
    /// Sends `count` datagrams through a relay link with `model` to a local socket; returns how
    /// many arrived and the relay's counters.
    func relay(_ model: LinkModel, count: Int) throws -> (received: Int, counters: Relay.Counters) {
        let loop = try EventLoop()
        let sink = try UDPSocket(loop: loop, host: "127.0.0.1", port: 0)
        var received = 0
        sink.onReceive = { _, _ in received += 1 }
        let withLink = try Relay(links: [Relay.Link(listen: Endpoint(host: "127.0.0.1", port: 0), target: Endpoint(host: "127.0.0.1", port: sink.port))],
                                 model: model, seed: 3, loop: loop)
        let sender = try UDPSocket(loop: loop, host: "127.0.0.1", port: 0)
        let port = try #require(withLink.ports.first)
        // Paced, 50 datagrams every 5 ms, so no socket buffer overflows: only the link drops.
        var sent = 0
        func sendBatch() {
            for _ in 0..<min(50, count - sent) {
                sender.send([UInt8(truncatingIfNeeded: sent)], to: Endpoint(host: "127.0.0.1", port: port))
                sent += 1
            }
            if sent < count { try? loop.after(milliseconds: 5) { sendBatch() } }
        }
        sendBatch()
        try loop.after(milliseconds: UInt64(count / 50 * 5 + 500)) {
            sink.close()
            sender.close()
            withLink.stop()
        }
        loop.run()
        return (received, withLink.counters)
    }

    @Test func relay_iidLoss_dropsTheConfiguredShareOfRealDatagrams() throws {
        let (received, counters) = try relay(LinkModel(loss: 0.3, latency: .milliseconds(5)), count: 2_000)
        #expect(counters.datagrams == 2_000)
        #expect(abs(counters.dropRate - 0.3) < 0.04, "dropped \(counters.dropRate)")
        #expect(received == counters.datagrams - counters.dropped)
    }

    @Test func relay_burstLoss_dropsTheChainsLongRunShareInSpells() throws {
        let burst = GilbertElliott(goodToBad: 0.05, badToGood: 0.25, lossInGood: 0, lossInBad: 1)
        let (received, counters) = try relay(LinkModel(burst: burst, latency: .milliseconds(5)), count: 4_000)
        #expect(abs(counters.dropRate - burst.longRunLoss) < 0.05, "dropped \(counters.dropRate), expected about \(burst.longRunLoss)")
        #expect(received == counters.datagrams - counters.dropped)
    }
}
