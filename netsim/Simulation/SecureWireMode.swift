import Crypto
import Gossip

/// Wire mode through the library's ``SecureWire``: every datagram is sealed for its recipient
/// and opened by it (replay guard on a wall clock derived from virtual time), every transfer is
/// a signed envelope whose author the receiver checks against the session's peer. The
/// session's own encryption (the secure channel) is not modelled; its cost is the crypto
/// benchmark's.
public enum SecureWireMode {
    /// The wall-clock time that virtual time zero stands for (any fixed value: runs stay
    /// reproducible).
    public static let epochMilliseconds: UInt64 = 1_800_000_000_000

    /// Wall-clock milliseconds at virtual instant `now`.
    public static func wallClock(_ now: Instant) -> UInt64 {
        epochMilliseconds + UInt64(max(0, now.nanoseconds) / 1_000_000)
    }

    /// One wire per node, sharing derived keys, for the nodes with `identities`.
    public static func wires(identities: [Identity], keyring: NetworkKeyring) throws -> [SecureWire] {
        guard let first = identities.first else { return [] }
        let guardFor = { ReplayGuard.forDatagrams(startedAt: epochMilliseconds - 1) }
        let head = try SecureWire(identity: first, keyring: keyring, replayGuard: guardFor())
        return [head] + identities.dropFirst().map { SecureWire(identity: $0, sharingKeysWith: head, replayGuard: guardFor()) }
    }

    enum Refusal: Error { case unknownEndpoint, wrongTransport }

    /// Wire mode for ``GossipNode``s: node `i` uses `wires[i]`.
    public static func gossip(_ sim: Simulator<GossipNode>, wires: [SecureWire]) -> WireMode<GossipMessage> {
        WireMode(
            encode: { [unowned sim] message, from, _, via in
                guard let i = sim.index(of: from.endpoint) else { throw Refusal.unknownEndpoint }
                switch via {
                case .datagram(let recipient): return try wires[i].sealDatagram(message, to: recipient, now: wallClock(sim.now))
                case .session(let peer): return try wires[i].encodeSession(message, to: peer)
                }
            },
            decode: { [unowned sim] bytes, from, to in
                guard let j = sim.index(of: to.endpoint) else { throw Refusal.unknownEndpoint }
                if let peer = from.peer { return try wires[j].decodeSession(bytes, from: peer) }
                return try wires[j].openDatagram(bytes, now: wallClock(sim.now))
            })
    }

    /// Wire mode for averaging-only networks (``PushSumAverager`` nodes, which speak only over
    /// sessions): node `i` uses `wires[i]`.
    public static func averaging(_ sim: Simulator<PushSumAverager>, wires: [SecureWire]) -> WireMode<PushSumAverager.Message> {
        WireMode(
            encode: { [unowned sim] message, from, _, via in
                guard let i = sim.index(of: from.endpoint) else { throw Refusal.unknownEndpoint }
                guard case .session(let peer) = via else { throw Refusal.wrongTransport }
                return try wires[i].encodeSession(message, to: peer)
            },
            decode: { [unowned sim] bytes, from, to in
                guard let j = sim.index(of: to.endpoint) else { throw Refusal.unknownEndpoint }
                guard let peer = from.peer else { throw Refusal.wrongTransport }
                return try wires[j].decodeAveragingSession(bytes, from: peer)
            })
    }
}
