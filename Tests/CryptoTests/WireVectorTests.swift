import Foundation
import Testing
@testable import Crypto

/// The hex test vectors of docs/wire.md, recomputed from fixed inputs.
enum WireVectors {
    static func compute() throws -> [(name: String, bytes: [UInt8])] {
        let t = try Fixture.transcript()
        let key = Fixture.networkKey
        let datagram = try DatagramSealer(networkKey: key).seal(Array("murmuration datagram".utf8), to: .peer(Fixture.bob.peerID),
                                                                now: Fixture.now, nonce: Fixture.datagramNonce)
        let envelope = try Fixture.envelope()
        let header = try SignedDelta.openHead(envelope, keyring: NetworkKeyring(current: key), expecting: Fixture.expectation()).header
        var identityFile = KeyFile.identityMagic + [KeyFile.version]
        identityFile += Fixture.seedA
        return [
            ("identity.a.public", Fixture.alice.peerID.bytes),
            ("identity.b.public", Fixture.bob.peerID.bytes),
            ("keyfile.identity.a", identityFile),
            ("network.id", key.id),
            ("handshake.msg1", t.frames[0]),
            ("handshake.msg2", t.frames[1]),
            ("handshake.msg3", t.frames[2]),
            ("handshake.msg4", t.frames[3]),
            ("handshake.key.a_to_b", t.initiatorResult.sendKey.testCopy),
            ("handshake.key.b_to_a", t.initiatorResult.receiveKey.testCopy),
            ("datagram.key", try key.deriveSubkey(.datagram).testCopy),
            ("datagram.sealed", datagram),
            ("delta.header", try header.encode()),
            ("delta.envelope", envelope),
            ("delta.chunk", DeltaChunk(offset: 8, bytes: Array(Fixture.deltaPayload[8..<16])).encode()),
        ]
    }

    /// `name: hex` entries of the fenced blocks in docs/wire.md (continuation lines are indented hex).
    static func parseDocs() throws -> [String: [UInt8]] {
        let url = URL(fileURLWithPath: #filePath).deletingLastPathComponent().deletingLastPathComponent()
            .deletingLastPathComponent().appendingPathComponent("docs/wire.md")
        let text = try String(contentsOf: url, encoding: .utf8)
        var result: [String: [UInt8]] = [:]
        var current: String?
        var hex = ""
        func flush() {
            if let current, let bytes = Hex.decode(hex) { result[current] = bytes }
            current = nil
            hex = ""
        }
        for line in text.split(separator: "\n", omittingEmptySubsequences: false) {
            let s = String(line)
            if let colon = s.firstIndex(of: ":"), !s.hasPrefix(" "),
               s[..<colon].allSatisfy({ $0.isLetter || $0.isNumber || $0 == "." || $0 == "_" }), s[..<colon].contains(".") {
                flush()
                current = String(s[..<colon])
                hex = String(s[s.index(after: colon)...])
            } else if current != nil, s.hasPrefix(" "), s.allSatisfy({ $0.isHexDigit || $0 == " " }) {
                hex += s
            } else {
                flush()
            }
        }
        flush()
        return result
    }

    /// Wraps bytes as the docs print them: 32 bytes (64 hex digits) per line.
    static func format(_ name: String, _ bytes: [UInt8]) -> String {
        let hex = Hex.encode(bytes)
        var lines: [String] = []
        var i = hex.startIndex
        while i < hex.endIndex {
            let j = hex.index(i, offsetBy: 64, limitedBy: hex.endIndex) ?? hex.endIndex
            lines.append(String(hex[i..<j]))
            i = j
        }
        return "\(name):\n" + lines.map { "    " + $0 }.joined(separator: "\n")
    }
}

@Suite struct WireVectorTests {
    @Test func wireDocVectors_recomputedFromFixedInputs_matchDocs() throws {
        let docs = try WireVectors.parseDocs()
        for (name, bytes) in try WireVectors.compute() {
            if ProcessInfo.processInfo.environment["MURMUR_PRINT_VECTORS"] != nil { print(WireVectors.format(name, bytes)) }
            #expect(docs[name] == bytes, "docs/wire.md vector \(name) differs; code gives:\n\(WireVectors.format(name, bytes))")
        }
    }

    @Test func wireDocStreamVector_opensWithDocumentedKey() throws {
        let docs = try WireVectors.parseDocs()
        let t = try Fixture.transcript()
        if ProcessInfo.processInfo.environment["MURMUR_PRINT_VECTORS"] != nil {
            let s = try SecureChannelSender(key: t.initiatorResult.sendKey)
            print(WireVectors.format("stream.header", s.header))
            print(WireVectors.format("stream.frame1", try s.seal(Array("hello".utf8))))
            print(WireVectors.format("stream.frame2", try s.finish(Array("bye".utf8))))
        }
        let header = try #require(docs["stream.header"])
        let r = try SecureChannelReceiver(key: t.responderResult.receiveKey, header: header)
        #expect(try r.open(frame: try #require(docs["stream.frame1"])) == Array("hello".utf8))
        #expect(try r.open(frame: try #require(docs["stream.frame2"])) == Array("bye".utf8))
        #expect(r.isFinished)
    }
}
