import Foundation
import Testing
@testable import Crypto

@Suite struct KeyFileTests {
    private func tempDir() throws -> String {
        let base = FileManager.default.temporaryDirectory.appendingPathComponent("murmur-keys-\(UUID().uuidString)").path
        try KeyFile.prepareDirectory(base)
        return base
    }

    private func mode(_ path: String) throws -> Int {
        try (FileManager.default.attributesOfItem(atPath: path)[.posixPermissions] as? Int) ?? -1
    }

    @Test func identityFile_saveThenLoad_sameIdentityMode0600InDirectory0700() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/identity.key"
        try Fixture.alice.save(to: path)
        #expect(try mode(path) == 0o600)
        #expect(try mode(dir) == 0o700)
        #expect(try Identity.load(from: path).peerID == Fixture.alice.peerID)
        #expect(try Data(contentsOf: URL(fileURLWithPath: path)).count == KeyFile.fileLength)
    }

    @Test func keyFile_existing_isNeverOverwritten() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/identity.key"
        try Fixture.alice.save(to: path)
        #expect(throws: KeyFileError.alreadyExists(path: path)) { try Fixture.bob.save(to: path) }
        #expect(try Identity.load(from: path).peerID == Fixture.alice.peerID)
        let netPath = dir + "/network.key"
        try Fixture.networkKey.save(to: netPath)
        #expect(throws: KeyFileError.alreadyExists(path: netPath)) { try Fixture.otherNetworkKey.save(to: netPath) }
        #expect(try NetworkKey.load(from: netPath).sameKey(as: Fixture.networkKey))
    }

    @Test func keyFile_fifoAtPath_isRefusedWithoutBlocking() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/identity.key"
        #expect(mkfifo(path, 0o600) == 0)
        // Without O_NONBLOCK the open would wait forever for a writer.
        #expect(throws: KeyFileError.malformed(path: path, reason: "not a regular file")) { try Identity.load(from: path) }
    }

    @Test func keyDirectory_symbolicLink_isRefused() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let real = dir + "/real"
        try KeyFile.prepareDirectory(real)
        let link = dir + "/link"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: real)
        #expect(throws: KeyFileError.symbolicLink(path: link)) { try KeyFile.prepareDirectory(link) }
        let file = dir + "/file"
        #expect(FileManager.default.createFile(atPath: file, contents: Data()))
        #expect(throws: KeyFileError.self) { try KeyFile.prepareDirectory(file) }
    }

    @Test(.enabled(if: geteuid() == 0, "changing a file's owner needs root"))
    func keyFileAndDirectory_ownedByAnotherUser_areRefused() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/identity.key"
        try Fixture.alice.save(to: path)
        let other: UInt32 = 4_242
        #expect(chown(path, other, other) == 0)
        #expect(throws: KeyFileError.wrongOwner(path: path, owner: other)) { try Identity.load(from: path) }
        let sub = dir + "/sub"
        try KeyFile.prepareDirectory(sub)
        #expect(chown(sub, other, other) == 0)
        #expect(throws: KeyFileError.wrongOwner(path: sub, owner: other)) { try KeyFile.prepareDirectory(sub) }
    }

    @Test func keyFile_readableByOthers_isRefusedWithChmodAdvice() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/identity.key"
        try Fixture.alice.save(to: path)
        try FileManager.default.setAttributes([.posixPermissions: 0o644], ofItemAtPath: path)
        do {
            _ = try Identity.load(from: path)
            Issue.record("a 0644 key file was accepted")
        } catch let error as KeyFileError {
            #expect(error == .tooOpen(path: path, mode: 0o100644))
            #expect(error.description.contains("chmod 600 \(path)"))
        }
        try FileManager.default.setAttributes([.posixPermissions: 0o640], ofItemAtPath: path)
        #expect(throws: KeyFileError.self) { try Identity.load(from: path) }
    }

    @Test func keyDirectory_openToOthers_isRefused() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("murmur-open-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o755])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        #expect(throws: KeyFileError.directoryTooOpen(path: dir, mode: 0o40755)) { try KeyFile.prepareDirectory(dir) }
    }

    @Test func keyFile_wrongKindMissingOrShort_isTypedError() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/network.key"
        try Fixture.networkKey.save(to: path)
        #expect(throws: KeyFileError.self) { try Identity.load(from: path) }
        #expect(throws: KeyFileError.notFound(path: dir + "/none")) { try Identity.load(from: dir + "/none") }
        let short = dir + "/short.key"
        _ = FileManager.default.createFile(atPath: short, contents: Data([0x4d, 0x4d]), attributes: [.posixPermissions: 0o600])
        #expect(throws: KeyFileError.self) { try Identity.load(from: short) }
    }

    @Test func identityLoad_fromDirectoryOpenToOthersOrThroughALink_isRefused() throws {
        // v1 checked the key directory only when creating it: loading accepted a 0755 directory
        // and a symbolic link to the real one.
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixture.alice.save(to: dir + "/identity.key")
        #expect(chmod(dir, 0o755) == 0)
        #expect(throws: KeyFileError.directoryTooOpen(path: dir, mode: 0o40755)) { try Identity.load(from: dir + "/identity.key") }
        #expect(chmod(dir, 0o700) == 0)
        let link = dir + "-link"
        try FileManager.default.createSymbolicLink(atPath: link, withDestinationPath: dir)
        defer { try? FileManager.default.removeItem(atPath: link) }
        #expect(throws: KeyFileError.symbolicLink(path: link)) { try Identity.load(from: link + "/identity.key") }
        #expect(try Identity.load(from: dir + "/identity.key").peerID == Fixture.alice.peerID)
    }

    @Test(.enabled(if: geteuid() == 0, "changing a directory's owner needs root"))
    func identityLoad_fromAnotherUsersDirectory_isRefused() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixture.alice.save(to: dir + "/identity.key")
        #expect(chown(dir, 4_242, 4_242) == 0)
        #expect(throws: KeyFileError.wrongOwner(path: dir, owner: 4_242)) { try Identity.load(from: dir + "/identity.key") }
    }

    @Test func keyFile_symbolicLink_isRefusedWithAPlainMessage() throws {
        let dir = try tempDir()
        defer { try? FileManager.default.removeItem(atPath: dir) }
        try Fixture.networkKey.save(to: dir + "/network.key")
        try FileManager.default.createSymbolicLink(atPath: dir + "/link.key", withDestinationPath: dir + "/network.key")
        do {
            _ = try NetworkKey.load(from: dir + "/link.key")
            Issue.record("a symbolic link to a key file was followed")
        } catch let error as KeyFileError {
            #expect(error == .fileIsSymbolicLink(path: dir + "/link.key"))
            #expect(error.description.contains("give the real file's path"))
        }
    }

    @Test func networkKey_inADirectoryOthersCanWrite_isRefused() throws {
        let dir = FileManager.default.temporaryDirectory.appendingPathComponent("murmur-shared-\(UUID().uuidString)").path
        try FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: false, attributes: [.posixPermissions: 0o755])
        defer { try? FileManager.default.removeItem(atPath: dir) }
        // A readable directory is fine for a network key (the file itself is 0600)...
        try Fixture.networkKey.save(to: dir + "/network.key")
        #expect(try NetworkKey.load(from: dir + "/network.key").sameKey(as: Fixture.networkKey))
        // ...but not one where others could replace the file.
        #expect(chmod(dir, 0o777) == 0)
        #expect(throws: KeyFileError.directoryWritable(path: dir, mode: 0o40777)) { try NetworkKey.load(from: dir + "/network.key") }
        #expect(throws: KeyFileError.directoryWritable(path: dir, mode: 0o40777)) { try Fixture.otherNetworkKey.save(to: dir + "/other.key") }
        // A sticky directory like /tmp is: nobody else can rename or remove the file.
        #expect(chmod(dir, 0o1777) == 0)
        #expect(try NetworkKey.load(from: dir + "/network.key").sameKey(as: Fixture.networkKey))
    }

    @Test func networkKeyring_rotation_acceptsBothThenOnlyNew() {
        var ring = NetworkKeyring(current: Fixture.otherNetworkKey)
        ring.rotate(to: Fixture.networkKey)
        #expect(ring.accepts(networkID: Fixture.networkKey.id))
        #expect(ring.accepts(networkID: Fixture.otherNetworkKey.id))
        ring.dropPrevious()
        #expect(!ring.accepts(networkID: Fixture.otherNetworkKey.id))
        #expect(Fixture.networkKey.id != Fixture.otherNetworkKey.id)
    }
}

@Suite struct ByteCodecTests {
    @Test func byteWriterReader_allFieldKinds_roundTrip() throws {
        var w = ByteWriter()
        w.write(UInt8(7))
        w.writeUInt16(0xBEEF)
        w.writeUInt32(0xDEAD_BEEF)
        w.writeUInt64(0x0123_4567_89AB_CDEF)
        w.writeLengthPrefixed([1, 2, 3])
        w.writeString("héllo")
        var r = ByteReader(w.bytes)
        #expect(try r.readUInt8() == 7)
        #expect(try r.readUInt16() == 0xBEEF)
        #expect(try r.readUInt32() == 0xDEAD_BEEF)
        #expect(try r.readUInt64() == 0x0123_4567_89AB_CDEF)
        #expect(try r.readLengthPrefixed(maximum: 3) == [1, 2, 3])
        #expect(try r.readString(maximum: 16) == "héllo")
        try r.expectEnd()
        #expect(Array(w.bytes.prefix(3)) == [7, 0xBE, 0xEF])
    }

    @Test func byteReader_truncatedOversizedOrTrailing_throwsTypedErrors() throws {
        var r = ByteReader([0, 0, 0, 9, 1])
        #expect(throws: WireError.lengthTooLarge(field: "bytes", declared: 9, maximum: 4)) { try r.readLengthPrefixed(maximum: 4) }
        var t = ByteReader([0, 0, 0, 9, 1])
        #expect(throws: WireError.truncated(field: "bytes", needed: 9, available: 1)) { try t.readLengthPrefixed(maximum: 100) }
        var z = ByteReader([0, 0, 0, 0])
        #expect(throws: WireError.zeroLength(field: "bytes")) { try z.readLengthPrefixed(maximum: 100, allowEmpty: false) }
        var e = ByteReader([])
        #expect(throws: WireError.self) { try e.readUInt64() }
        #expect(throws: WireError.self) { try e.readBytes(-1) }
        var bad = ByteReader([0, 2, 0xff, 0xfe])
        #expect(throws: WireError.invalidValue(field: "string", reason: "not UTF-8")) { try bad.readString(maximum: 10) }
        #expect(throws: WireError.trailingBytes(count: 1)) { try ByteReader([1]).expectEnd() }
    }
}
