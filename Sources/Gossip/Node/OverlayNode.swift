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
    /// Publishes a release this node signed (``GossipNode/publish(_:file:delta:at:)``).
    mutating func publish(_ manifest: ReleaseManifest, file: [UInt8], delta: [UInt8]?, at now: Instant) throws(ReleaseError) -> [Action]
    /// Rolls a release back by a notice this node signed.
    mutating func rollBack(_ notice: RollbackNotice, at now: Instant) throws(ReleaseError) -> [Action]
}

extension GossipNode: OverlayNode {
    public var overlay: GossipNode { self }
    public static func overlayEvent(_ event: GossipEvent) -> GossipEvent? { event }
}
