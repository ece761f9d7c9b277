import Crypto

/// Every message a ``GossipNode`` sends or receives.
public enum GossipMessage: Sendable, WireSized {
    case membership(Membership.Message)
    case sampling(PeerSampler.Message)
    case discovery(Discovery.Message)
    case averaging(PushSumAverager.Message)

    /// How the message should travel: everything but model shares fits a datagram.
    public var transport: Transport {
        if case .averaging = self { return .stream }
        return .datagram
    }

    public var wireSize: Int { GossipWire.size(of: self) }
}

/// Timers of a ``GossipNode``.
public enum GossipTimer: Hashable, Sendable {
    case membership(Membership.Timer)
    case sampling(PeerSampler.Timer)
    case discovery(Discovery.Timer)
    case averaging(PushSumAverager.Timer)
    /// Checks whether the node is cut off (empty view, or silence for the isolation timeout).
    case isolationCheck
    /// Take back averaging shares still in flight to a peer that left (after a grace period).
    case reclaim(Endpoint)
}

/// What a ``GossipNode`` reports to its observer.
public enum GossipEvent: Sendable {
    case membership(Membership.Event)
    case sampling(PeerSampler.Event)
    case discovery(Discovery.Event)
    case averaging(PushSumAverager.Event)
    /// An incoming message could not be used (bad signature, wrong sender).
    case refused(from: Endpoint, reason: String)
}
