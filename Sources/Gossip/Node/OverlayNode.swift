/// A node the libuv runtime can run: an overlay node (``GossipNode``), possibly composed with
/// more protocol (learning), that speaks the overlay's messages. The runtime reads the
/// overlay's parts (identity, membership, view, cache, averager) through ``overlay``.
public protocol OverlayNode: ProtocolNode where Message == GossipMessage {
    /// The overlay part of this node.
    var overlay: GossipNode { get }
    /// Starts a graceful leave (``GossipNode/leave(at:)``).
    mutating func leave(at now: Instant) -> [Action]
    /// The overlay's event inside `event`, if it is one.
    static func overlayEvent(_ event: Event) -> GossipEvent?
}

extension GossipNode: OverlayNode {
    public var overlay: GossipNode { self }
    public static func overlayEvent(_ event: GossipEvent) -> GossipEvent? { event }
}
