import Gossip

/// What one node of a settled overlay costs, per simulated second: the figures a researcher
/// compares across network sizes to check that per-node traffic and state stay bounded.
public struct OverlayCost: Sendable, CustomStringConvertible {
    public var messagesPerNodeSecond: Double
    public var bytesPerNodeSecond: Double
    /// The most peers any node's membership watches.
    public var maxWatched: Int
    /// The largest peer-sampling view of any node.
    public var maxView: Int

    /// Runs `sim` from `settled` (the overlay already formed) for `window` of virtual time and
    /// measures the traffic sent in that window and the nodes' state at its end.
    public static func measure(_ sim: Simulator<GossipNode>, from settled: Instant, window: Duration) -> OverlayCost {
        sim.run(until: settled)
        let (sent, bytes) = (sim.counters.sent, sim.counters.bytesSent)
        sim.run(until: settled + window)
        var maxWatched = 0, maxView = 0
        for i in 0..<sim.nodeCount {
            guard let node = sim.node(i) else { continue }
            maxWatched = max(maxWatched, node.membership.members.count)
            maxView = max(maxView, node.sampler.count)
        }
        let nodeSeconds = Double(sim.nodeCount) * window.seconds
        return OverlayCost(
            messagesPerNodeSecond: Double(sim.counters.sent - sent) / nodeSeconds,
            bytesPerNodeSecond: Double(sim.counters.bytesSent - bytes) / nodeSeconds,
            maxWatched: maxWatched, maxView: maxView)
    }

    public var description: String {
        "\(messagesPerNodeSecond) msg/s, \(bytesPerNodeSecond) B/s per node; watched ≤ \(maxWatched), view ≤ \(maxView)"
    }
}
