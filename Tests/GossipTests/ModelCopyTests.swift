import Crypto
import Foundation
import Testing
@testable import Gossip

/// Model copies (gossip learning, D-PSGD) on the wire: signed envelopes over sessions.
@Suite struct ModelCopyTests {
    /// docs/wire.md's inputs: identities and network key from the byte runs 0x00…, 0x20…, 0x40….
    static func run(from start: UInt8) -> [UInt8] { (0..<32).map { start &+ UInt8($0) } }
    static let author = try! Identity(seed: run(from: 0x00))
    static let recipient = try! Identity(seed: run(from: 0x20))
    static let key = try! NetworkKey(bytes: run(from: 0x40))
    static let documented = ModelCopy(age: 12, sequence: 3, degree: 5, count: 3, codec: 0, payload: .floats([0.25, -1, 3]))

    static func codec(_ identity: Identity) -> SecureWire.SessionCodec {
        SecureWire.SessionCodec(identity: identity, keyring: NetworkKeyring(current: key))
    }

    @Test func modelCopy_overASession_opensAtItsRecipientExactly_andItsSizeIsKnownBeforehand() throws {
        let copies = [Self.documented, ModelCopy(age: 0, sequence: 1, degree: 0, count: 4, codec: 0x12, payload: .bytes([1, 2, 3, 4, 5]))]
        for copy in copies {
            let bytes = try Self.codec(Self.author).encode(.model(copy), to: Self.recipient.peerID)
            #expect(bytes.count == copy.wireSize && bytes.count == GossipMessage.model(copy).wireSize)
            #expect(try Self.codec(Self.recipient).decode(bytes, from: Self.author.peerID) == .model(copy))
        }
    }

    @Test func modelCopy_tamperedRelayedOrMisaddressed_isRefused() throws {
        let bytes = try Self.codec(Self.author).encode(.model(Self.documented), to: Self.recipient.peerID)
        let other = try Identity(seed: Self.run(from: 0xc0))
        func refusal(_ bytes: [UInt8], from: PeerID = Self.author.peerID, at: Identity = Self.recipient) -> String {
            do {
                _ = try Self.codec(at).decode(bytes, from: from)
                return "accepted"
            } catch { return "\(error)" }
        }
        var tampered = bytes
        tampered[tampered.count - 1] ^= 1
        #expect(refusal(tampered).contains("model copy refused"))
        // Over another peer's session, or delivered to a third node, it is not the sender's to give.
        #expect(refusal(bytes, from: other.peerID).contains("model copy refused"))
        #expect(refusal(bytes, at: other).contains("model copy refused"))
        // Never in a datagram.
        #expect(throws: WireError.self) { try GossipWire.encode(.model(Self.documented)) }
        // A push-sum share is still taken for a share, not a copy.
        let share = PushSumAverager.Transfer(epoch: 1, sequence: 2, weight: 3, count: 1, codec: 0, payload: .floats([4]))
        let shareBytes = try Self.codec(Self.author).encode(.averaging(.transfer(share)), to: Self.recipient.peerID)
        #expect(try Self.codec(Self.recipient).decode(shareBytes, from: Self.author.peerID) == .averaging(.transfer(share)))
    }

    @Test func modelCopy_documentedVector_matchesDocsWire() throws {
        let bytes = try ModelCopyEnvelope.encode(Self.documented, identity: Self.author, networkID: Self.key.id, to: Self.recipient.peerID)
        let docs = try String(contentsOf: URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("docs/wire.md"), encoding: .utf8)
        let lines = docs.split(separator: "\n", omittingEmptySubsequences: false)
        let computed = bytes.map { String(format: "%02x", $0) }.joined()
        let start = lines.firstIndex(of: "model.copy:") ?? lines.endIndex
        let hex = lines[min(start + 1, lines.endIndex)...].prefix { $0.hasPrefix("    ") }.map { $0.trimmingCharacters(in: .whitespaces) }.joined()
        #expect(hex == computed, "model.copy:\n\(stride(from: 0, to: computed.count, by: 64).map { "    " + computed.dropFirst($0).prefix(64) }.joined(separator: "\n"))")
    }
}
