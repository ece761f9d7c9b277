import Crypto

/// What a push-sum node must keep across a crash (`kill -9`, power kept) to resume without
/// losing or creating mass: its value and weight, its epoch and next sequence number, the
/// transfers it has in flight, and which transfers it has applied from whom. A runtime writes
/// it (atomically) before any transfer or acknowledgement leaves the process, so the saved
/// state is never behind what peers have seen.
///
/// Encoding (big-endian, like every other format of the project): `"MPS3" ‖ peer(32) ‖
/// epoch u64 ‖ nextSequence u64 ‖ weight f64 bits ‖ pending contribution f64 bits ‖ dimension u32 ‖ value (f64 bits × dimension) ‖
/// coordinate weights u8 (0: none, the state of a dense codec; 1: f64 bits × dimension follow) ‖
/// inFlight count u16 ‖ per transfer: endpoint, to-peer(32), the transfer (``AveragingWire``,
/// length-prefixed) ‖ senders count u32 ‖ per sender: peer(32) ‖ epoch u64 ‖ highest u64 ‖ bitmap u64`.
/// Earlier states are still read: `"MPS2"` (no coordinate weights) and `"MPS1"` (nor the
/// pending contribution either).
public struct DurableState: Equatable, Sendable {
    static let magic = Array("MPS3".utf8)
    static let olderMagics = [Array("MPS2".utf8), Array("MPS1".utf8)]
    /// Bounds checked before allocating, far above what one node holds.
    static let maxDimension = AveragingWire.maxElements
    static let maxSenders = 1 << 20

    public var peer: PeerID
    public var epoch: UInt64
    public var nextSequence: UInt64
    public var weight: Double
    /// Samples whose mass the node has not added yet (``PushSumAverager/pendingContribution``).
    public var pendingContribution: Double
    public var value: [Double]
    /// Each coordinate's own weight, saved by a node averaging with a sparse codec; nil otherwise.
    public var coordinateWeights: [Double]?
    public var inFlight: [(to: PeerAddress, transfer: PushSumAverager.Transfer)]
    public var senders: [(peer: PeerID, epoch: UInt64, highest: UInt64, bitmap: UInt64)]

    /// Why this state cannot resume with `codec`, or nil if it can. A saved transfer in flight
    /// that `codec` does not run would be refused by every receiver running `codec`, and its
    /// mass would wait until this node is declared gone; coordinates with weights of their own
    /// (a sparse codec's state) have no one weight a dense codec could go on with.
    public func incompatibility(with codec: any ShareCodec) -> String? {
        if let saved = inFlight.first(where: { $0.transfer.codec != codec.identifier })?.transfer.codec {
            return "it holds transfers in flight encoded with codec \(saved)"
        }
        if coordinateWeights != nil, codec.sparseSelection == nil {
            return "its coordinates have weights of their own, which only a sparse codec (top-k) resumes"
        }
        return nil
    }

    public static func == (a: DurableState, b: DurableState) -> Bool {
        a.encoded() == b.encoded()
    }

    public func encoded() -> [UInt8] {
        var w = ByteWriter(capacity: 64 + value.count * 8)
        w.write(bytes: Self.magic)
        w.write(bytes: peer.bytes)
        w.writeUInt64(epoch)
        w.writeUInt64(nextSequence)
        w.writeUInt64(weight.bitPattern)
        w.writeUInt64(pendingContribution.bitPattern)
        w.writeUInt32(UInt32(value.count))
        for v in value { w.writeUInt64(v.bitPattern) }
        if let coordinateWeights {
            w.write(UInt8(1))
            for x in coordinateWeights { w.writeUInt64(x.bitPattern) }
        } else {
            w.write(UInt8(0))
        }
        w.writeUInt16(UInt16(inFlight.count))
        for entry in inFlight {
            w.writeString(entry.to.endpoint.host)
            w.writeUInt16(entry.to.endpoint.port)
            w.write(bytes: entry.to.peer.bytes)
            w.writeLengthPrefixed(AveragingWire.encode(.transfer(entry.transfer)))
        }
        w.writeUInt32(UInt32(senders.count))
        for s in senders {
            w.write(bytes: s.peer.bytes)
            w.writeUInt64(s.epoch)
            w.writeUInt64(s.highest)
            w.writeUInt64(s.bitmap)
        }
        return w.bytes
    }

    /// Reads saved state, refusing anything malformed with a ``WireError`` naming the field.
    public init(decoding bytes: [UInt8]) throws(WireError) {
        var r = ByteReader(bytes)
        let magic = try r.readBytes(4, "state magic")
        guard magic == Self.magic || Self.olderMagics.contains(magic) else {
            throw .invalidValue(field: "state magic", reason: "not a Murmuration averaging state (expected MPS3)")
        }
        peer = try Self.readPeer(&r)
        epoch = try r.readUInt64("epoch")
        nextSequence = try r.readUInt64("next sequence")
        weight = Double(bitPattern: try r.readUInt64("weight"))
        pendingContribution = magic == Self.olderMagics[1] ? 0 : Double(bitPattern: try r.readUInt64("pending contribution"))
        guard weight.isFinite, weight >= 0, pendingContribution.isFinite, pendingContribution >= 0 else {
            throw .invalidValue(field: "weight", reason: "weights are finite and not negative")
        }
        let dimension = Int(try r.readUInt32("dimension"))
        guard dimension > 0, dimension <= Self.maxDimension else {
            throw .lengthTooLarge(field: "dimension", declared: UInt64(dimension), maximum: Self.maxDimension)
        }
        var value: [Double] = []
        value.reserveCapacity(dimension)
        for _ in 0..<dimension { value.append(Double(bitPattern: try r.readUInt64("value"))) }
        self.value = value
        coordinateWeights = nil
        if magic == Self.magic {
            switch try r.readUInt8("coordinate weights") {
            case 0: break
            case 1:
                var weights: [Double] = []
                weights.reserveCapacity(dimension)
                for _ in 0..<dimension {
                    let x = Double(bitPattern: try r.readUInt64("coordinate weight"))
                    guard x.isFinite, x >= 0 else { throw .invalidValue(field: "coordinate weight", reason: "weights are finite and not negative") }
                    weights.append(x)
                }
                coordinateWeights = weights
            case let flag:
                throw .invalidValue(field: "coordinate weights", reason: "flag \(flag), expected 0 or 1")
            }
        }
        let transfers = Int(try r.readUInt16("in-flight count"))
        guard transfers <= PushSumAverager.maxInFlightLimit else {
            throw .lengthTooLarge(field: "in-flight count", declared: UInt64(transfers), maximum: PushSumAverager.maxInFlightLimit)
        }
        inFlight = []
        for _ in 0..<transfers {
            let host = try r.readString(maximum: 255, "endpoint host")
            let port = try r.readUInt16("endpoint port")
            let to = try Self.readPeer(&r)
            let encoded = try r.readLengthPrefixed(maximum: AveragingWire.maxElements * 4 + 64, "transfer")
            guard case .transfer(let t)? = try? AveragingWire.decode(encoded) else {
                throw .invalidValue(field: "transfer", reason: "not a push-sum transfer")
            }
            inFlight.append((PeerAddress(peer: to, endpoint: Endpoint(host: host, port: port)), t))
        }
        let count = Int(try r.readUInt32("sender count"))
        guard count <= Self.maxSenders else { throw .lengthTooLarge(field: "sender count", declared: UInt64(count), maximum: Self.maxSenders) }
        senders = []
        for _ in 0..<count {
            senders.append((try Self.readPeer(&r), try r.readUInt64("sender epoch"), try r.readUInt64("highest"), try r.readUInt64("bitmap")))
        }
        try r.expectEnd()
    }

    private static func readPeer(_ r: inout ByteReader) throws(WireError) -> PeerID {
        guard let peer = PeerID(bytes: try r.readSlice(PeerID.length, "peer")) else { throw .invalidValue(field: "peer", reason: "length") }
        return peer
    }

    init(peer: PeerID, epoch: UInt64, nextSequence: UInt64, weight: Double, pendingContribution: Double, value: [Double],
         coordinateWeights: [Double]?, inFlight: [(to: PeerAddress, transfer: PushSumAverager.Transfer)],
         senders: [(peer: PeerID, epoch: UInt64, highest: UInt64, bitmap: UInt64)]) {
        self.peer = peer
        self.epoch = epoch
        self.nextSequence = nextSequence
        self.weight = weight
        self.pendingContribution = pendingContribution
        self.value = value
        self.coordinateWeights = coordinateWeights
        self.inFlight = inFlight
        self.senders = senders
    }
}

extension PushSumAverager {
    /// The state to save so that a restart resumes this node exactly (see ``DurableState``).
    public var durableState: DurableState {
        DurableState(peer: peerID, epoch: epoch, nextSequence: nextSequence, weight: weight,
                     pendingContribution: pendingContribution, value: value,
                     coordinateWeights: isSparse ? coordinateWeights : nil,
                     inFlight: inFlight.map { ($0.to, $0.transfer) },
                     senders: senders.elements.map { ($0.key.peer, $0.key.epoch, $0.applied.highest, $0.applied.bitmap) })
    }

    /// A node resuming `state` with these settings and codec.
    public static func resuming(_ state: DurableState, settings: Settings = Settings(), codec: any ShareCodec = IdentityShareCodec(),
                                rng: SplitMix64) -> PushSumAverager {
        PushSumAverager(restoring: state, settings: settings, codec: codec, rng: rng)
    }
}
