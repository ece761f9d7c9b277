/// Domain separation for Ed25519 signatures: every signed message of the protocol is
/// `label ‖ 0x00 ‖ u32 body length ‖ body`. Labels contain no zero byte, so no two labels
/// (and no label and any other message layout) can produce the same signed bytes.
public struct SignatureDomain: Sendable, Hashable {
    /// The label, e.g. `murmuration/delta/v1`.
    public let label: String

    /// A domain; nil if the label is empty or contains a zero byte.
    public init?(_ label: String) {
        guard !label.isEmpty, !label.utf8.contains(0) else { return nil }
        self.label = label
    }

    private init(fixed label: String) { self.label = label }

    /// Signed model-delta headers (see ``SignedDelta``).
    public static let delta = SignatureDomain(fixed: "murmuration/delta/v1")

    /// Model release manifests, signed by their publisher.
    public static let release = SignatureDomain(fixed: "murmuration/release/v1")

    /// Rollback notices for a release, signed by its publisher.
    public static let rollback = SignatureDomain(fixed: "murmuration/rollback/v1")

    /// The bytes actually signed for `body` in this domain.
    public func message(_ body: some Collection<UInt8>) -> [UInt8] {
        var w = ByteWriter(capacity: label.utf8.count + 5 + body.count)
        w.write(bytes: Array(label.utf8))
        w.write(UInt8(0))
        w.writeUInt32(UInt32(truncatingIfNeeded: body.count))
        w.write(bytes: body)
        return w.bytes
    }
}

extension Identity {
    /// Signs `body` in `domain` (64-byte detached signature).
    public func sign(_ body: some Collection<UInt8>, domain: SignatureDomain) -> [UInt8] {
        sign(domain.message(body))
    }
}

extension PeerID {
    /// Verifies a signature made with ``Identity/sign(_:domain:)`` in the same domain.
    public func verify(signature: some Collection<UInt8>, message body: some Collection<UInt8>, domain: SignatureDomain) -> Bool {
        verify(signature: signature, message: domain.message(body))
    }
}
