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

    /// Writes `chunks` through a relay link with `faults` to a TCP sink, 10 ms apart; returns
    /// what the sink read, when it read the last byte (ms after the first write), whether the
    /// client's connection ended, and the relay's counters.
    func pipe(_ chunks: [[UInt8]], faults: Relay.StreamFaults) throws -> (received: [UInt8], lastMs: UInt64, clientEnded: Bool, counters: Relay.Counters) {
        let loop = try EventLoop()
        var received: [UInt8] = []
        var lastMs: UInt64 = 0
        var accepted: [StreamConnection] = []
        let start = loop.nowMilliseconds
        let sink = try StreamListener(loop: loop, host: "127.0.0.1", port: 0) { connection in
            accepted.append(connection)
            connection.onRead = { bytes in
                received += bytes
                lastMs = loop.nowMilliseconds - start
            }
            try? connection.startReading()
        }
        let relay = try Relay(links: [Relay.Link(listen: Endpoint(host: "127.0.0.1", port: 0), target: Endpoint(host: "127.0.0.1", port: sink.port))],
                              model: LinkModel(latency: .milliseconds(5)), streamFaults: faults, seed: 5, loop: loop)
        let port = try #require(relay.ports.first)
        var client: StreamConnection?
        var clientEnded = false
        try StreamConnection.connect(loop: loop, host: "127.0.0.1", port: port) { result in
            guard case .success(let connection) = result else { return }
            client = connection
            connection.onEnd = { _ in clientEnded = true }
            connection.onClose = { clientEnded = true }
            try? connection.startReading()
            for (i, chunk) in chunks.enumerated() {
                try? loop.after(milliseconds: UInt64(10 * i)) { client?.write(chunk) }
            }
        }
        try loop.after(milliseconds: UInt64(10 * chunks.count) + faults.stallMilliseconds * 3 + 300) {
            client?.close()
            for c in accepted { c.close() }
            sink.close()
            relay.stop()
        }
        loop.run()
        return (received, lastMs, clientEnded, relay.counters)
    }

    @Test func relay_tcpStalls_holdADirection_thenDeliverEverythingInOrder() throws {
        let chunks = (0..<20).map { i in [UInt8](repeating: UInt8(i), count: 1_000) }
        let (received, lastMs, _, counters) = try pipe(chunks, faults: Relay.StreamFaults(stallChance: 0.2, stallMilliseconds: 200))
        #expect(counters.tcpStalls > 0)
        #expect(received == chunks.flatMap { $0 }, "every byte, in order")
        #expect(lastMs >= 200, "the last byte came \(lastMs) ms after the first write, past at least one stall")
    }

    @Test func relay_tcpReset_closesBothEnds() throws {
        let (received, _, clientEnded, counters) = try pipe([[1, 2, 3], [4, 5, 6]], faults: Relay.StreamFaults(resetChance: 1))
        #expect(counters.tcpResets == 1)
        #expect(received.isEmpty)
        #expect(clientEnded)
    }
}
