/// A protocol node that averages a vector by push-sum and lets a local process (training)
/// move it: a bare ``PushSumAverager`` over fixed neighbours, or a ``GossipNode`` whose
/// neighbours come from peer sampling. What composes learning with averaging builds on this,
/// so one learning protocol runs over either.
public protocol AveragingHost: ProtocolNode {
    /// The averager, if the node holds one.
    var averager: PushSumAverager? { get }
    /// Moves the averaged vector by `change` (``PushSumAverager/applyLocalUpdate(_:)``).
    mutating func applyLocalUpdate(_ change: [Float]) throws(AveragingError) -> Bool
    /// Adds the node's own mass once (``PushSumAverager/contribute(at:)``).
    mutating func contribute(at vector: [Float]) throws(AveragingError) -> Bool
}

extension PushSumAverager: AveragingHost {
    public var averager: PushSumAverager? { self }
}
