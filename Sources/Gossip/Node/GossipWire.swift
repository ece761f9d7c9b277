import Crypto

/// The binary encoding of the ``GossipMessage``s that travel as datagrams: membership,
/// sampling and discovery (big-endian; see `docs/membership.md`, "Wire format"). Averaging
/// messages never travel as datagrams: they go over the peer's session (``SecureWire``).
///
/// A message is a version byte (1), a kind byte, then the kind's fields. Decoding is total:
/// every malformed input ends in a ``WireError`` naming the field, and every count or length
/// is checked against its bound before anything is allocated.
public enum GossipWire {
    /// The only version this code speaks.
    public static let version: UInt8 = 1
    /// Most updates a message may carry (twice the default piggyback count).
    public static let maxUpdates = 16
    /// Most view entries a shuffle or join answer may carry (a whole default view and spare).
    public static let maxEntries = 32

    enum Kind: UInt8 {
        case ping = 1, ack = 2, pingRequest = 3, nack = 4, gossip = 5
        case shuffleRequest = 16, shuffleReply = 17
        case join = 32, joinReply = 33, beacon = 34
    }

    enum UpdateKind: UInt8 { case alive = 0, suspect = 1, dead = 2, left = 3 }

    // MARK: Encoding

    /// The bytes of `message`; an averaging message is refused (it travels over a session).
    public static func encode(_ message: GossipMessage) throws(WireError) -> [UInt8] {
        var w = ByteWriter(capacity: size(of: message))
        w.write(version)
        switch message {
        case .membership(let m):
            switch m {
            case let .ping(seq, from, updates): header(.ping, seq, from, &w); write(updates, &w)
            case let .ack(seq, from, updates): header(.ack, seq, from, &w); write(updates, &w)
            case let .nack(seq, from, updates): header(.nack, seq, from, &w); write(updates, &w)
            case let .pingRequest(seq, from, target, updates):
                header(.pingRequest, seq, from, &w)
                write(target, to: &w)
                write(updates, &w)
            case let .gossip(from, updates):
                w.write(Kind.gossip.rawValue)
                write(from, to: &w)
                write(updates, &w)
            }
        case .sampling(let m):
            switch m {
            case let .request(id, entries): w.write(Kind.shuffleRequest.rawValue); w.writeUInt32(id); write(entries, &w)
            case let .reply(id, entries): w.write(Kind.shuffleReply.rawValue); w.writeUInt32(id); write(entries, &w)
            }
        case .discovery(let m):
            switch m {
            case .join(let r): w.write(Kind.join.rawValue); write(r, to: &w)
            case .joinReply(let entries): w.write(Kind.joinReply.rawValue); write(entries, &w)
            case .beacon(let r): w.write(Kind.beacon.rawValue); write(r, to: &w)
            }
        case .averaging, .release, .model:
            throw .invalidValue(field: "message", reason: "averaging, release and model messages travel over a peer's session, never in a datagram")
        }
        return w.bytes
    }

    private static func header(_ kind: Kind, _ seq: UInt32, _ from: PeerID, _ w: inout ByteWriter) {
        w.write(kind.rawValue)
        w.writeUInt32(seq)
        write(from, to: &w)
    }

    static func write(endpoints: [Endpoint], to w: inout ByteWriter) {
        w.write(UInt8(truncatingIfNeeded: endpoints.count))
        for e in endpoints {
            let host = Array(e.host.utf8)
            w.write(UInt8(truncatingIfNeeded: host.count))
            w.write(bytes: host)
            w.writeUInt16(e.port)
        }
    }

    /// Writes a peer's 32 key bytes without allocating.
    static func write(_ id: PeerID, to w: inout ByteWriter) {
        id.withUnsafeBytes { w.write(raw: $0) }
    }

    static func write(_ r: AddressRecord, to w: inout ByteWriter) {
        write(r.peer, to: &w)
        w.writeUInt64(r.sequence)
        write(endpoints: r.endpoints, to: &w)
        w.write(bytes: r.signature)
    }

    private static func write(_ updates: [Membership.Update], _ w: inout ByteWriter) {
        w.write(UInt8(truncatingIfNeeded: updates.count))
        for u in updates {
            switch u {
            case let .alive(c):
                w.write(UpdateKind.alive.rawValue)
                write(c.record, to: &w)
                w.writeUInt32(c.incarnation)
                w.write(bytes: c.signature)
            case let .suspect(p, v, by), let .dead(p, v, by):
                if case .suspect = u { w.write(UpdateKind.suspect.rawValue) } else { w.write(UpdateKind.dead.rawValue) }
                write(p, to: &w)
                w.writeUInt64(v.sequence)
                w.writeUInt32(v.incarnation)
                write(by, to: &w)
            case let .left(n):
                w.write(UpdateKind.left.rawValue)
                write(n.peer, to: &w)
                w.writeUInt64(n.sequence)
                w.write(bytes: n.signature)
            }
        }
    }

    private static func write(_ entries: [PeerSampler.Entry], _ w: inout ByteWriter) {
        w.write(UInt8(truncatingIfNeeded: entries.count))
        for e in entries {
            write(e.record, to: &w)
            w.writeUInt16(e.age)
        }
    }

    // MARK: Sizes (computed without encoding, for drivers that count bytes)

    static func size(of endpoints: [Endpoint]) -> Int {
        1 + endpoints.reduce(0) { $0 + 1 + $1.host.utf8.count + 2 }
    }

    static func size(of r: AddressRecord) -> Int { 32 + 8 + size(of: r.endpoints) + Identity.signatureLength }

    static func size(of u: Membership.Update) -> Int {
        switch u {
        case .alive(let c): return 1 + size(of: c.record) + 4 + Identity.signatureLength
        case .suspect, .dead: return 1 + 32 + 8 + 4 + 32
        case .left: return 1 + 32 + 8 + Identity.signatureLength
        }
    }

    static func size(of updates: [Membership.Update]) -> Int { 1 + updates.reduce(0) { $0 + size(of: $1) } }
    static func size(of entries: [PeerSampler.Entry]) -> Int { 1 + entries.reduce(0) { $0 + size(of: $1.record) + 2 } }

    /// Encoded size of `message` in bytes (for an averaging message, its size on the session).
    public static func size(of message: GossipMessage) -> Int {
        2 + {
            switch message {
            case .membership(let m):
                switch m {
                case .ping(_, _, let u), .ack(_, _, let u), .nack(_, _, let u): return 4 + 32 + size(of: u)
                case let .pingRequest(_, _, t, u): return 4 + 32 + size(of: t) + size(of: u)
                case .gossip(_, let u): return 32 + size(of: u)
                }
            case .sampling(.request(_, let e)), .sampling(.reply(_, let e)): return 4 + size(of: e)
            case .discovery(.join(let r)), .discovery(.beacon(let r)): return size(of: r)
            case .discovery(.joinReply(let e)): return size(of: e)
            case .averaging(let m): return m.wireSize
            case .release(let m): return 1 + m.wireSize
            case .model(let copy): return copy.wireSize - 2  // the envelope, with no version and kind bytes
            }
        }()
    }

    // MARK: Decoding

    /// Decodes one message; the whole input must be that message.
    public static func decode(_ bytes: [UInt8]) throws(WireError) -> GossipMessage {
        var r = ByteReader(bytes)
        let v = try r.readUInt8("version")
        guard v == version else { throw .unsupportedVersion(v) }
        let raw = try r.readUInt8("message kind")
        guard let kind = Kind(rawValue: raw) else { throw .invalidValue(field: "message kind", reason: "unknown kind \(raw)") }
        let message: GossipMessage
        switch kind {
        case .ping, .ack, .nack:
            let seq = try r.readUInt32("probe sequence")
            let from = try readPeer(&r, "sender")
            let updates = try readUpdates(&r)
            switch kind {
            case .ping: message = .membership(.ping(sequence: seq, from: from, updates: updates))
            case .ack: message = .membership(.ack(sequence: seq, from: from, updates: updates))
            default: message = .membership(.nack(sequence: seq, from: from, updates: updates))
            }
        case .pingRequest:
            let seq = try r.readUInt32("probe sequence")
            let from = try readPeer(&r, "sender")
            let target = try readRecord(&r)
            message = .membership(.pingRequest(sequence: seq, from: from, target: target, updates: try readUpdates(&r)))
        case .gossip:
            let from = try readPeer(&r, "sender")
            message = .membership(.gossip(from: from, updates: try readUpdates(&r)))
        case .shuffleRequest:
            let id = try r.readUInt32("shuffle id")
            message = .sampling(.request(id: id, entries: try readEntries(&r)))
        case .shuffleReply:
            let id = try r.readUInt32("shuffle id")
            message = .sampling(.reply(id: id, entries: try readEntries(&r)))
        case .join: message = .discovery(.join(try readRecord(&r)))
        case .joinReply: message = .discovery(.joinReply(try readEntries(&r)))
        case .beacon: message = .discovery(.beacon(try readRecord(&r)))
        }
        try r.expectEnd()
        return message
    }

    static func readPeer(_ r: inout ByteReader, _ field: String) throws(WireError) -> PeerID {
        let raw = try r.readSlice(PeerID.length, field)
        guard let id = PeerID(bytes: raw) else { throw .invalidValue(field: field, reason: "not a 32-byte key") }
        return id
    }

    static func readEndpoints(_ r: inout ByteReader) throws(WireError) -> [Endpoint] {
        let count = Int(try r.readUInt8("endpoint count"))
        guard count > 0 else { throw .zeroLength(field: "endpoints") }
        guard count <= AddressRecord.maxEndpoints else {
            throw .lengthTooLarge(field: "endpoints", declared: UInt64(count), maximum: AddressRecord.maxEndpoints)
        }
        var out: [Endpoint] = []
        out.reserveCapacity(count)
        for _ in 0..<count {
            let n = Int(try r.readUInt8("host length"))
            guard n > 0 else { throw .zeroLength(field: "host") }
            guard n <= AddressRecord.maxHostLength else {
                throw .lengthTooLarge(field: "host", declared: UInt64(n), maximum: AddressRecord.maxHostLength)
            }
            let raw = try r.readSlice(n, "host")
            guard let host = String(validating: raw, as: UTF8.self) else { throw .invalidValue(field: "host", reason: "not UTF-8") }
            out.append(Endpoint(host: host, port: try r.readUInt16("port")))
        }
        return out
    }

    /// Reads an address record (not verified: that is the receiver's job).
    static func readRecord(_ r: inout ByteReader) throws(WireError) -> AddressRecord {
        let peer = try readPeer(&r, "record key")
        let seq = try r.readUInt64("record sequence")
        let endpoints = try readEndpoints(&r)
        let sig = try r.readBytes(Identity.signatureLength, "record signature")
        return AddressRecord(peer: peer, endpoints: endpoints, sequence: seq, signature: sig)
    }

    private static func readUpdates(_ r: inout ByteReader) throws(WireError) -> [Membership.Update] {
        let count = Int(try r.readUInt8("update count"))
        guard count <= maxUpdates else { throw .lengthTooLarge(field: "updates", declared: UInt64(count), maximum: maxUpdates) }
        var out: [Membership.Update] = []
        out.reserveCapacity(count)
        for _ in 0..<count {
            let raw = try r.readUInt8("update kind")
            guard let kind = UpdateKind(rawValue: raw) else { throw .invalidValue(field: "update kind", reason: "unknown kind \(raw)") }
            switch kind {
            case .alive:
                let record = try readRecord(&r)
                let incarnation = try r.readUInt32("incarnation")
                let signature = try r.readBytes(Identity.signatureLength, "alive signature")
                out.append(.alive(AliveClaim(record: record, incarnation: incarnation, signature: signature)))
            case .suspect, .dead:
                let peer = try readPeer(&r, "update subject")
                let seq = try r.readUInt64("record sequence")
                let inc = try r.readUInt32("incarnation")
                let by = try readPeer(&r, "accuser")
                let v = Membership.Version(sequence: seq, incarnation: inc)
                out.append(kind == .suspect ? .suspect(peer, v, by: by) : .dead(peer, v, by: by))
            case .left:
                let peer = try readPeer(&r, "leaving peer")
                let seq = try r.readUInt64("record sequence")
                let sig = try r.readBytes(Identity.signatureLength, "leave signature")
                out.append(.left(LeaveNotice(peer: peer, sequence: seq, signature: sig)))
            }
        }
        return out
    }

    private static func readEntries(_ r: inout ByteReader) throws(WireError) -> [PeerSampler.Entry] {
        let count = Int(try r.readUInt8("entry count"))
        guard count <= maxEntries else { throw .lengthTooLarge(field: "entries", declared: UInt64(count), maximum: maxEntries) }
        var out: [PeerSampler.Entry] = []
        out.reserveCapacity(count)
        for _ in 0..<count {
            let record = try readRecord(&r)
            out.append(PeerSampler.Entry(record: record, age: try r.readUInt16("entry age")))
        }
        return out
    }
}
