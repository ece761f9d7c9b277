import Crypto

/// Every message a ``GossipNode`` sends or receives.
public enum GossipMessage: Sendable, Equatable, WireSized, TraceIdentified {
    case membership(Membership.Message)
    case sampling(PeerSampler.Message)
    case discovery(Discovery.Message)
    case averaging(PushSumAverager.Message)
    case release(ReleaseMessage)
    /// A learning algorithm's model copy (gossip learning, D-PSGD), over the peer's session.
    case model(ModelCopy)

    public var wireSize: Int { GossipWire.size(of: self) }

    /// The component and message kind, with sequence numbers where the message has them;
    /// averaging messages name their transfer.
    public var traceWord: UInt64 {
        switch self {
        case .membership(let m):
            switch m {
            case .ping(let sequence, _, _): return traceMix(0x11, UInt64(sequence))
            case .ack(let sequence, _, _): return traceMix(0x12, UInt64(sequence))
            case .pingRequest(let sequence, _, _, _): return traceMix(0x13, UInt64(sequence))
            case .nack(let sequence, _, _): return traceMix(0x14, UInt64(sequence))
            case .gossip(_, let updates): return traceMix(0x15, UInt64(updates.count))
            }
        case .sampling(let m):
            switch m {
            case .request(let id, let entries): return traceMix(0x21, UInt64(id), UInt64(entries.count))
            case .reply(let id, let entries): return traceMix(0x22, UInt64(id), UInt64(entries.count))
            }
        case .discovery(let m):
            switch m {
            case .join(let r): return traceMix(0x31, r.sequence)
            case .joinReply(let entries): return traceMix(0x32, UInt64(entries.count))
            case .beacon(let r): return traceMix(0x33, r.sequence)
            }
        case .averaging(let m):
            return traceMix(0x41, m.traceWord)
        case .release(let m):
            switch m {
            case .summary(let held, let rollbacks, _): return traceMix(0x51, UInt64(held.count), UInt64(rollbacks.count))
            case .manifestRequest(let k): return traceMix(0x52, k.version)
            case .manifest(let manifest): return traceMix(0x53, manifest.key.version)
            case .chunkRequest(let k, let part, let index): return traceMix(0x54, k.version, UInt64(part.rawValue) << 32 | UInt64(index))
            case .chunk(let k, let part, let index, _): return traceMix(0x55, k.version, UInt64(part.rawValue) << 32 | UInt64(index))
            }
        case .model(let copy):
            return traceMix(0x61, copy.age, copy.sequence, UInt64(copy.count))
        }
    }
}

/// Timers of a ``GossipNode``.
public enum GossipTimer: Hashable, Sendable {
    case membership(Membership.Timer)
    case sampling(PeerSampler.Timer)
    case discovery(Discovery.Timer)
    case averaging(PushSumAverager.Timer)
    case release(ReleaseDistributor.Timer)
    /// Checks whether the node is cut off (empty view, or silence for the isolation timeout).
    case isolationCheck
    /// Take back averaging shares still in flight to a peer that left (after a grace period).
    case reclaim(PeerID)
}

/// What a ``GossipNode`` reports to its observer.
public enum GossipEvent: Sendable {
    case membership(Membership.Event)
    case sampling(PeerSampler.Event)
    case discovery(Discovery.Event)
    case averaging(PushSumAverager.Event)
    case release(ReleaseDistributor.Event)
    /// An incoming message could not be used (bad signature, wrong sender).
    case refused(from: Endpoint, reason: String)
}
