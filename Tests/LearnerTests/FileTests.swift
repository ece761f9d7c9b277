import Foundation
import Testing
@testable import Learner

/// A fresh temporary directory per test.
func temporaryDirectory() throws -> String {
    let path = NSTemporaryDirectory() + "learner-tests-" + UUID().uuidString
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

/// The message of the error `body` throws, or "" if it does not throw.
func errorMessage(_ body: () throws -> Void) -> String {
    do { try body() } catch { return "\(error)" }
    return ""
}

struct DataFileTests {
    /// A small IDX pair: 5 images of 2×3 and their labels.
    static func writePair(_ dir: String, prefix: String, gz: Bool) throws {
        let ext = gz ? ".gz" : ""
        try DataFiles.writeIDX("\(dir)/\(prefix)-images-idx3-ubyte\(ext)", dimensions: [5, 2, 3], data: (0..<30).map { UInt8($0 * 8) })
        try DataFiles.writeIDX("\(dir)/\(prefix)-labels-idx1-ubyte\(ext)", dimensions: [5], data: [0, 1, 2, 1, 0])
    }

    @Test(arguments: [true, false])
    func idx_prefix_loadsGzipAndPlain(gz: Bool) throws {
        let dir = try temporaryDirectory()
        try Self.writePair(dir, prefix: "train", gz: gz)
        let (data, test) = try DataSource.resolve(dir + "/train").load()
        #expect(test == nil)
        #expect(data.count == 5 && data.featureCount == 6 && data.classCount == 3)
        #expect(data.labels == [0, 1, 2, 1, 0])
        #expect(data.features[7] == 56)
        #expect(data.isByteBacked, "IDX images are kept as bytes")
    }

    @Test func idx_directory_findsTrainAndTestSets() throws {
        let dir = try temporaryDirectory()
        try Self.writePair(dir, prefix: "train", gz: true)
        try Self.writePair(dir, prefix: "t10k", gz: false)
        let (train, test) = try DataSource.resolve("mnist:" + dir).load()
        #expect(train.count == 5 && test?.count == 5)
    }

    @Test func idx_dottedMirrorNames_areFound() throws {
        let dir = try temporaryDirectory()
        for prefix in ["train", "t10k"] {
            try DataFiles.writeIDX("\(dir)/\(prefix)-images.idx3-ubyte", dimensions: [2, 2, 2], data: [UInt8](repeating: 3, count: 8))
            try DataFiles.writeIDX("\(dir)/\(prefix)-labels.idx1-ubyte", dimensions: [2], data: [0, 1])
        }
        let (train, test) = try DataSource.resolve("mnist:" + dir).load()
        #expect(train.count == 2 && test?.count == 2 && train.featureCount == 4)
    }

    @Test(arguments: [true, false])
    func idx_truncated_errorNamesFileAndSize(gz: Bool) throws {
        let dir = try temporaryDirectory()
        let full = dir + "/full-images-idx3-ubyte"
        try DataFiles.writeIDX(full, dimensions: [5, 2, 3], data: [UInt8](repeating: 1, count: 30))
        let bytes = try Data(contentsOf: URL(fileURLWithPath: full))
        let cut = dir + "/cut-images-idx3-ubyte" + (gz ? ".gz" : "")
        if gz {
            // A gzip stream cut short: write a real .gz, then drop its tail.
            try DataFiles.writeIDX(dir + "/whole.gz", dimensions: [5, 2, 3], data: (0..<30).map { UInt8($0) })
            let gzBytes = try Data(contentsOf: URL(fileURLWithPath: dir + "/whole.gz"))
            try gzBytes.prefix(gzBytes.count - 12).write(to: URL(fileURLWithPath: cut))
        } else {
            try bytes.prefix(bytes.count - 4).write(to: URL(fileURLWithPath: cut))
        }
        let message = errorMessage { _ = try DataFiles.readIDX(cut) }
        #expect(message.contains(cut))
        #expect(message.contains("truncated"))
    }

    @Test func idx_notIDX_refused() throws {
        let dir = try temporaryDirectory()
        let path = dir + "/junk"
        try Data("hello, world".utf8).write(to: URL(fileURLWithPath: path))
        #expect(errorMessage { _ = try DataFiles.readIDX(path) }.contains("not an IDX file"))
        #expect(errorMessage { _ = try DataFiles.readIDX(dir + "/missing") }.contains("missing"))
    }

    @Test func csv_withHeader_labelColumnByName() throws {
        let dir = try temporaryDirectory()
        let path = dir + "/d.csv"
        try "f1,label,f2\n1.5,1,2\n\n-3,0,4e-1\r\n0.5, 2 ,1\n".write(toFile: path, atomically: true, encoding: .utf8)
        let (data, _) = try DataSource.resolve(path).load()
        #expect(data.count == 3 && data.featureCount == 2 && data.classCount == 3)
        #expect(data.labels == [1, 0, 2])
        #expect(data.features == [1.5, 2, -3, 0.4, 0.5, 1])
    }

    @Test func csv_rfc4180Quoting() throws {
        let dir = try temporaryDirectory()
        let path = dir + "/q.csv"
        // Quoted names with a comma, a doubled quote and a line break; quoted numbers; CRLF.
        try "\"a, b\",\"say \"\"hi\"\"\",\"two\nlines\",\"Label\"\r\n\"0.5\",1, \"2\" ,\"1\"\r\n1.5,3,4,0\n"
            .write(toFile: path, atomically: true, encoding: .utf8)
        let table = try DataFiles.readCSV(path)
        #expect(table.header == ["a, b", "say \"hi\"", "two\nlines", "Label"])
        #expect(table.values == [0.5, 1, 2, 1, 1.5, 3, 4, 0])
        #expect(table.lineNumbers == [3, 4])
        let (data, _) = try DataSource.resolve(path).load()
        #expect(data.labels == [1, 0] && data.features == [0.5, 1, 2, 1.5, 3, 4])

        try "a,b\n\"1,2\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(errorMessage { _ = try DataFiles.readCSV(path) }.contains("not closed"))
        try "a,b\n\"1\"x,2\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(errorMessage { _ = try DataFiles.readCSV(path) }.contains("line 2, column 1"))
    }

    @Test func csv_headerWithoutLabel_pointsToLabelColumn() throws {
        let dir = try temporaryDirectory()
        let path = dir + "/d.csv"
        try "a,b\n0.5,1\n".write(toFile: path, atomically: true, encoding: .utf8)
        let message = errorMessage { _ = try DataSource.resolve(path).load() }
        #expect(message.contains("no 'label' column") && message.contains("--label-column"))
        let (data, _) = try DataSource.resolve(path).load(labelColumn: 1)
        #expect(data.labels == [1] && data.features == [0.5])
    }

    @Test func csv_labelBeyondClassLimit_statesTheLimit() throws {
        let dir = try temporaryDirectory()
        let path = dir + "/d.csv"
        try "label,a\n\(DataFiles.maxClassCount),1\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(errorMessage { _ = try DataSource.resolve(path).load() }.contains("limit of \(DataFiles.maxClassCount) classes"))
        try "label,a\n\(DataFiles.maxClassCount - 1),1\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(try DataSource.resolve(path).load().train.classCount == DataFiles.maxClassCount)
    }

    @Test func csv_withoutHeader_firstColumnIsLabel() throws {
        let dir = try temporaryDirectory()
        let path = dir + "/d.csv"
        try "1,0.5,0.25\n0,1,2\n".write(toFile: path, atomically: true, encoding: .utf8)
        let (data, _) = try DataSource.resolve(path).load()
        #expect(data.labels == [1, 0] && data.features == [0.5, 0.25, 1, 2])
    }

    @Test func csv_nonNumber_errorNamesFileLineAndColumn() throws {
        let dir = try temporaryDirectory()
        let path = dir + "/bad.csv"
        try "label,a,b\n1,2,3\n0,4,oops\n".write(toFile: path, atomically: true, encoding: .utf8)
        let message = errorMessage { _ = try DataSource.resolve(path).load() }
        #expect(message.contains(path))
        #expect(message.contains("line 3, column 3"))
        #expect(message.contains("'oops'"))
        try "1,2,3\n0,nan,3\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(errorMessage { _ = try DataFiles.readCSV(path) }.contains("line 2, column 2"))
        try "1,2,3\n0,4\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(errorMessage { _ = try DataFiles.readCSV(path) }.contains("line 2"))
        try "1.5,2,3\n".write(toFile: path, atomically: true, encoding: .utf8)
        #expect(errorMessage { _ = try DataSource.resolve(path).load() }.contains("line 1, column 1"))
    }

    @Test func normalizer_fittedOnTraining_mapsRangeAndMoments() throws {
        let data = try Dataset(features: [0, 10, 2, 10, 4, 10], labels: [0, 1, 0], featureCount: 2, classCount: 2)
        var m = data
        try m.normalize(with: Normalizer.fit(.minMax, on: data))
        #expect(m.features == [0, 0, 0.5, 0, 1, 0])
        var s = data
        try s.normalize(with: Normalizer.fit(.standardize, on: data))
        #expect(abs(s.features[0] + 1.2247) < 1e-3 && s.features[1] == 0)
    }
}

struct ModelFileTests {
    static func contents() throws -> ModelFile.Contents {
        let arch = try Architecture(inputCount: 6, hiddenSizes: [5, 4], classCount: 3)
        let data = try blobs(count: 30, seed: 1)
        return ModelFile.Contents(model: Model(architecture: arch, seed: 3), normalizer: Normalizer.fit(.standardize, on: data))
    }

    @Test func modelFile_roundTrip_isExact() throws {
        let dir = try temporaryDirectory()
        let c = try Self.contents()
        try ModelFile.write(c, to: dir + "/m.model")
        #expect(try ModelFile.read(dir + "/m.model") == c)
        #expect(try FileManager.default.contentsOfDirectory(atPath: dir) == ["m.model"])
        // Overwriting replaces the file whole.
        var d = c
        try d.model.load(flat: c.model.flatten().map { $0 + 1 })
        try ModelFile.write(d, to: dir + "/m.model")
        #expect(try ModelFile.read(dir + "/m.model") == d)
    }

    @Test func modelFile_everyFlippedByte_isRefused() throws {
        let bytes = ModelFile.encode(try Self.contents())
        for i in stride(from: 0, to: bytes.count, by: 7) {
            var bad = bytes
            bad[i] ^= 0x10
            #expect(throws: LearnerError.self) { try ModelFile.decode(bad) }
        }
        var bad = bytes
        bad[bytes.count / 2] ^= 1
        #expect(errorMessage { _ = try ModelFile.decode(bad, path: "x.model") }.contains("checksum mismatch"))
    }

    @Test func modelFile_truncatedOrPadded_isRefused() throws {
        let bytes = ModelFile.encode(try Self.contents())
        for n in [0, 5, 12, 40, bytes.count - 1] {
            #expect(throws: LearnerError.self) { try ModelFile.decode(Array(bytes.prefix(n))) }
        }
        #expect(errorMessage { _ = try ModelFile.decode(Array(bytes.dropLast(10))) }.contains("truncated"))
        #expect(throws: LearnerError.self) { try ModelFile.decode(bytes + [0]) }
    }

    @Test func modelFile_otherArchitecture_isRefused() throws {
        let bytes = ModelFile.encode(try Self.contents())
        let expected = try Architecture(inputCount: 6, hiddenSizes: [5], classCount: 3)
        let message = errorMessage { _ = try ModelFile.decode(bytes, path: "m.model", expecting: expected) }
        #expect(message.contains("m.model") && message.contains("expected mlp:5"))
    }
}
