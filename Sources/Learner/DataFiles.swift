import CZlib
import Foundation

/// Readers for IDX files (MNIST, Fashion-MNIST; gzip-compressed or not) and CSV files.
public enum DataFiles {
    /// The largest uncompressed data file read: Fashion-MNIST's training images are 47 MB, so
    /// this leaves ample room while keeping a gzip bomb from exhausting memory.
    public static let maxFileBytes = 1 << 30
    /// Read size for gzip streams; large enough that the per-call cost vanishes.
    static let readChunkBytes = 1 << 20

    /// The whole (decompressed) content of `path`. zlib reads plain files unchanged, so one
    /// path serves `.gz` and uncompressed files; a truncated or corrupt gzip stream is an error.
    public static func readBytes(_ path: String) throws -> [UInt8] {
        guard let file = gzopen(path, "rb") else {
            throw LearnerError.io(path: path, reason: String(cString: strerror(errno)))
        }
        defer { gzclose(file) }
        var bytes: [UInt8] = []
        var chunk = [UInt8](repeating: 0, count: readChunkBytes)
        while true {
            let n = chunk.withUnsafeMutableBytes { gzread(file, $0.baseAddress, UInt32($0.count)) }
            if n < 0 { break }
            if n == 0 { break }
            bytes.append(contentsOf: chunk[0..<Int(n)])
            if bytes.count > maxFileBytes {
                throw LearnerError.malformed(path: path, location: "byte \(maxFileBytes)", reason: "larger than the \(maxFileBytes >> 20) MiB limit for data files")
            }
        }
        var code: Int32 = 0
        let message = gzerror(file, &code).map { String(cString: $0) } ?? ""
        if code != Z_OK && code != Z_STREAM_END {
            throw LearnerError.malformed(path: path, location: "byte \(bytes.count) of the decompressed data",
                                         reason: "gzip stream is truncated or corrupt (\(message))")
        }
        return bytes
    }

    // MARK: IDX

    /// An IDX array of unsigned bytes: its dimensions and its data.
    public struct IDXArray: Sendable {
        public let dimensions: [Int]
        public let data: [UInt8]
    }

    /// The IDX element type this reader supports (0x08, unsigned byte: MNIST and Fashion-MNIST).
    static let idxUnsignedByte: UInt8 = 0x08

    /// Parses an IDX file of unsigned bytes, checking the header against the file length. The
    /// data is read straight into an array of the size the header declares (bounded by
    /// ``maxFileBytes``), so a 47 MB images file costs 47 MB, not the doubling buffer and copy
    /// of reading the whole file first.
    public static func readIDX(_ path: String) throws -> IDXArray {
        guard let file = gzopen(path, "rb") else {
            throw LearnerError.io(path: path, reason: String(cString: strerror(errno)))
        }
        defer { gzclose(file) }
        func fail(_ offset: Int, _ reason: String) -> LearnerError {
            .malformed(path: path, location: "byte \(offset)", reason: reason)
        }
        /// Decompressed bytes read so far, for error messages.
        var position = 0
        /// Reads up to `count` bytes into `buffer`; returns how many arrived (fewer at the end).
        func read(into buffer: UnsafeMutableRawBufferPointer, _ count: Int) throws -> Int {
            var done = 0
            while done < count, let base = buffer.baseAddress {
                let n = gzread(file, base + done, UInt32(min(count - done, readChunkBytes)))
                guard n > 0 else {
                    var code: Int32 = 0
                    let message = gzerror(file, &code).map { String(cString: $0) } ?? ""
                    if n < 0 || (code != Z_OK && code != Z_STREAM_END) {
                        throw LearnerError.malformed(path: path, location: "byte \(position) of the decompressed data",
                                                     reason: "gzip stream is truncated or corrupt (\(message))")
                    }
                    break
                }
                done += Int(n)
                position += Int(n)
            }
            return done
        }
        var magic = [UInt8](repeating: 0, count: 4)
        let got = try magic.withUnsafeMutableBytes { try read(into: $0, 4) }
        guard got == 4 else { throw fail(0, "truncated: \(got) bytes, an IDX header needs at least 4") }
        guard magic[0] == 0, magic[1] == 0 else { throw fail(0, "not an IDX file (magic must start with two zero bytes)") }
        guard magic[2] == idxUnsignedByte else {
            throw fail(2, "IDX element type 0x\(String(magic[2], radix: 16)) is not supported (only 0x08, unsigned byte)")
        }
        let ndims = Int(magic[3])
        guard (1...4).contains(ndims) else { throw fail(3, "IDX files with \(ndims) dimensions are not supported (1 to 4)") }
        let headerBytes = 4 + 4 * ndims
        var header = [UInt8](repeating: 0, count: 4 * ndims)
        let gotDims = try header.withUnsafeMutableBytes { try read(into: $0, 4 * ndims) }
        guard gotDims == 4 * ndims else { throw fail(4 + gotDims, "truncated inside the header (\(headerBytes) bytes needed)") }
        var dims: [Int] = []
        var total = 1
        for i in 0..<ndims {
            let o = 4 * i
            let d = Int(header[o]) << 24 | Int(header[o + 1]) << 16 | Int(header[o + 2]) << 8 | Int(header[o + 3])
            dims.append(d)
            let (product, overflow) = total.multipliedReportingOverflow(by: d)
            guard !overflow, product <= maxFileBytes else { throw fail(4 + o, "dimensions \(dims) describe more data than the limit") }
            total = product
        }
        var available = 0
        let data = try [UInt8](unsafeUninitializedCapacity: total) { buffer, initialized in
            available = try read(into: UnsafeMutableRawBufferPointer(buffer), total)
            initialized = available
        }
        guard available == total else {
            throw fail(headerBytes + available, "truncated: the header declares \(dims.map(String.init).joined(separator: "×")) = \(total) bytes of data, only \(available) follow")
        }
        // Whatever follows the data is an error; it is counted up to the size limit.
        var extra = 0
        var spill = [UInt8](repeating: 0, count: 4_096)
        while extra <= maxFileBytes {
            let n = try spill.withUnsafeMutableBytes { try read(into: $0, $0.count) }
            guard n > 0 else { break }
            extra += n
        }
        guard extra == 0 else { throw fail(headerBytes + total, "\(extra) unexpected bytes after the data") }
        return IDXArray(dimensions: dims, data: data)
    }

    /// Writes an IDX file of unsigned bytes (gzip-compressed when `path` ends in `.gz`), e.g.
    /// to hand each simulated peer its partition.
    public static func writeIDX(_ path: String, dimensions: [Int], data: [UInt8]) throws {
        guard !dimensions.isEmpty, dimensions.count <= 4, dimensions.allSatisfy({ $0 >= 0 && $0 <= Int(UInt32.max) }),
              dimensions.reduce(1, *) == data.count else {
            throw LearnerError.shapeMismatch("IDX dimensions \(dimensions) do not hold \(data.count) bytes")
        }
        var w = ByteWriter(capacity: 4 + 4 * dimensions.count + data.count)
        w.raw([0, 0, idxUnsignedByte, UInt8(dimensions.count)])
        for d in dimensions { w.u32(UInt32(d).bigEndian) }
        w.raw(data)
        if path.hasSuffix(".gz") {
            guard let file = gzopen(path, "wb") else { throw LearnerError.io(path: path, reason: String(cString: strerror(errno))) }
            let written = w.bytes.withUnsafeBytes { gzwrite(file, $0.baseAddress, UInt32($0.count)) }
            guard gzclose(file) == Z_OK, Int(written) == w.bytes.count else { throw LearnerError.io(path: path, reason: "gzip write failed") }
        } else {
            try ModelFile.writeAtomically(w.bytes, to: path)
        }
    }

    /// A labelled data set from an IDX images file (count × any further dimensions) and an IDX
    /// labels file (count), byte-backed (see ``Dataset``). `classCount` defaults to the largest
    /// label + 1. With `featureCount`, images of another size are refused before any label is
    /// looked at.
    public static func loadIDX(images: String, labels: String, classCount: Int? = nil, featureCount: Int? = nil) throws -> Dataset {
        let x = try readIDX(images)
        let width = try idxWidth(x, path: images)
        if let featureCount, width != featureCount {
            throw LearnerError.shapeMismatch("\(images) has \(width) features per sample, the model takes \(featureCount)")
        }
        let y = try readIDX(labels)
        guard y.dimensions.count == 1 else {
            throw LearnerError.malformed(path: labels, location: "byte 3", reason: "a labels file has 1 dimension, this one has \(y.dimensions.count)")
        }
        guard y.dimensions[0] == x.dimensions[0] else {
            throw LearnerError.malformed(path: labels, location: "byte 4",
                                         reason: "\(y.dimensions[0]) labels for \(x.dimensions[0]) images in \(images)")
        }
        let classes = classCount ?? max(2, Int(y.data.max() ?? 0) + 1)
        if let bad = y.data.firstIndex(where: { Int($0) >= classes }) {
            throw LearnerError.malformed(path: labels, location: "byte \(8 + bad)", reason: "label \(y.data[bad]) is outside 0..<\(classes)")
        }
        let storage = Dataset.Storage.bytes(x.data, scales: [Float](repeating: 1, count: width), shifts: [Float](repeating: 0, count: width))
        return Dataset(unchecked: storage, labels: y.data.map { Int32($0) }, featureCount: width, classCount: classes)
    }

    /// Unlabelled inputs from an IDX images file.
    public static func loadIDXFeatures(images: String) throws -> (values: [Float], width: Int) {
        try idxFeatures(readIDX(images), path: images)
    }

    /// Values per sample of an images file.
    static func idxWidth(_ x: IDXArray, path: String) throws -> Int {
        guard x.dimensions.count >= 2, x.dimensions[0] > 0 else {
            throw LearnerError.malformed(path: path, location: "byte 3", reason: "an images file needs a sample count and at least one more dimension")
        }
        let width = x.dimensions.dropFirst().reduce(1, *)
        guard width > 0 else { throw LearnerError.malformed(path: path, location: "byte 8", reason: "samples have no features") }
        return width
    }

    static func idxFeatures(_ x: IDXArray, path: String) throws -> (values: [Float], width: Int) {
        let width = try idxWidth(x, path: path)
        var values = [Float](repeating: 0, count: x.data.count)
        x.data.withUnsafeBufferPointer { src in
            values.withUnsafeMutableBufferPointer { dst in
                for i in 0..<src.count { dst[i] = Float(src[i]) }
            }
        }
        return (values, width)
    }

    // MARK: CSV

    /// A numeric CSV table: `rows` × `columns` values, the header if the file had one, and the
    /// line number of every row (for error messages).
    public struct CSVTable: Sendable {
        public let path: String
        public let header: [String]?
        public let columns: Int
        public let values: [Float]
        public let lineNumbers: [Int]
        public var rows: Int { lineNumbers.count }
    }

    /// Reads a comma-separated file of numbers (RFC 4180: a field may be quoted, `""` inside
    /// quotes is one quote, and a quoted field may hold commas and line breaks). The first
    /// record is a header when any of its fields is not a number. Blank lines are skipped;
    /// every other record must have as many fields as the first. A field that is not a finite
    /// number is an error naming its line and column.
    public static func readCSV(_ path: String) throws -> CSVTable {
        var bytes = try readBytes(path)
        bytes.append(0) // strtof needs a terminator after the last field
        let comma = UInt8(ascii: ","), newline = UInt8(ascii: "\n"), cr = UInt8(ascii: "\r"), quote = UInt8(ascii: "\"")
        var header: [String]?
        var columns = 0
        var values: [Float] = []
        var lineNumbers: [Int] = []
        try bytes.withUnsafeBufferPointer { buf in
            guard let base = buf.baseAddress else { return }
            let end = buf.count - 1
            func text(_ start: Int, _ stop: Int) -> String {
                String(decoding: UnsafeBufferPointer(start: base + start, count: stop - start), as: UTF8.self)
            }
            var pos = 0, line = 1
            var fieldValues: [Float] = []
            var fieldTexts: [String] = []
            while pos < end {
                let recordLine = line
                fieldValues.removeAll(keepingCapacity: true)
                fieldTexts.removeAll(keepingCapacity: true)
                var firstBad: (column: Int, text: String)?
                var column = 0
                var blank = false
                // One record: fields up to an unquoted line break or the end of the file.
                while true {
                    column += 1
                    var fieldStart = pos
                    while fieldStart < end && (base[fieldStart] == 32 || base[fieldStart] == 9) { fieldStart += 1 }
                    var contentStart = pos, contentEnd: Int
                    var quoted = false
                    if fieldStart < end && base[fieldStart] == quote {
                        quoted = true
                        contentStart = fieldStart + 1
                        var i = contentStart
                        while true {
                            guard i < end else {
                                throw LearnerError.malformed(path: path, location: "line \(line), column \(column)",
                                                             reason: "a quoted field is not closed (a missing \" ?)")
                            }
                            if base[i] == quote {
                                if i + 1 < end && base[i + 1] == quote { i += 2; continue }
                                break
                            }
                            if base[i] == newline { line += 1 }
                            i += 1
                        }
                        contentEnd = i
                        pos = i + 1
                        while pos < end && (base[pos] == 32 || base[pos] == 9 || base[pos] == cr) { pos += 1 }
                        guard pos >= end || base[pos] == comma || base[pos] == newline else {
                            throw LearnerError.malformed(path: path, location: "line \(line), column \(column)",
                                                         reason: "'\(text(pos, min(end, pos + 1)))' after a closing quote; a quoted field must end at a comma or a line break")
                        }
                    } else {
                        pos = fieldStart
                        while pos < end && base[pos] != comma && base[pos] != newline { pos += 1 }
                        contentEnd = pos
                        if contentEnd > contentStart && base[contentEnd - 1] == cr { contentEnd -= 1 }
                    }
                    if let v = parseNumber(base, contentStart, contentEnd) {
                        fieldValues.append(v)
                    } else if firstBad == nil {
                        firstBad = (column, text(contentStart, contentEnd))
                    }
                    if columns == 0 { // the first record may be a header: keep its texts
                        let name = text(contentStart, contentEnd)
                        fieldTexts.append((quoted ? name.replacingOccurrences(of: "\"\"", with: "\"") : name).trimmingCharacters(in: .whitespaces))
                    }
                    if column == 1 && !quoted && (pos >= end || base[pos] == newline)
                        && (contentStart..<contentEnd).allSatisfy({ base[$0] == 32 || base[$0] == 9 }) {
                        blank = true
                    }
                    if pos >= end || base[pos] == newline { break }
                    pos += 1 // the comma
                }
                // Past the line break that ends the record.
                pos += 1
                line += 1
                if blank { continue }
                if columns == 0 {
                    columns = column
                    if firstBad != nil {
                        header = fieldTexts
                        continue
                    }
                }
                guard column == columns else {
                    throw LearnerError.malformed(path: path, location: "line \(recordLine)", reason: "\(column) fields, expected \(columns)")
                }
                if let bad = firstBad {
                    throw LearnerError.malformed(path: path, location: "line \(recordLine), column \(bad.column)",
                                                 reason: "'\(bad.text)' is not a finite number")
                }
                values.append(contentsOf: fieldValues)
                lineNumbers.append(recordLine)
            }
        }
        guard !lineNumbers.isEmpty else { throw LearnerError.malformed(path: path, location: "line 1", reason: "no data rows") }
        return CSVTable(path: path, header: header, columns: columns, values: values, lineNumbers: lineNumbers)
    }

    /// A finite number spanning exactly base[start..<end] (surrounding blanks allowed), or nil.
    static func parseNumber(_ base: UnsafePointer<UInt8>, _ start: Int, _ end: Int) -> Float? {
        var s = start, e = end
        while s < e && (base[s] == 32 || base[s] == 9) { s += 1 }
        while e > s && (base[e - 1] == 32 || base[e - 1] == 9) { e -= 1 }
        guard s < e else { return nil }
        // Only plain decimal notation: strtof would also take "nan", "inf" and hex floats.
        for i in s..<e {
            let c = base[i]
            let ok = (c >= 48 && c <= 57) || c == 46 || c == 45 || c == 43 || c == 101 || c == 69
            if !ok { return nil }
        }
        return base.withMemoryRebound(to: CChar.self, capacity: end + 1) { chars -> Float? in
            var stop: UnsafeMutablePointer<CChar>?
            let v = strtof(chars + s, &stop)
            guard let stop, stop == UnsafeMutablePointer(mutating: chars + e), v.isFinite else { return nil }
            return v
        }
    }

    /// The column that holds labels: `requested` if given, else a header field named `label`
    /// (any case), else, when the file has no header, the first column. A header without a
    /// `label` field is an error: guessing would train on the wrong column.
    public static func labelColumn(of table: CSVTable, requested: Int? = nil) throws -> Int {
        if let requested {
            guard requested >= 0 && requested < table.columns else {
                throw LearnerError.invalidArgument("label column \(requested) does not exist in \(table.path) (\(table.columns) columns, counted from 0)")
            }
            return requested
        }
        guard let header = table.header else { return 0 }
        guard let named = header.firstIndex(where: { $0.lowercased() == "label" }) else {
            throw LearnerError.malformed(path: table.path, location: "line 1",
                                         reason: "the header (\(header.joined(separator: ", "))) has no 'label' column; name the label column with --label-column N, counted from 0")
        }
        return named
    }

    /// The largest number of classes a data file may define: labels run from 0 to
    /// `maxClassCount - 1`. A larger label is far more likely a feature read as a label than a
    /// real class, and would silently build a huge output layer.
    public static let maxClassCount = 1_000

    /// A labelled data set from a CSV table: one integer label column (0, 1, 2, ...) and numeric
    /// features in the others. `classCount` defaults to the largest label + 1.
    public static func dataset(from table: CSVTable, labelColumn: Int, classCount: Int? = nil) throws -> Dataset {
        let width = table.columns - 1
        guard width >= 1 else { throw LearnerError.malformed(path: table.path, location: "line \(table.lineNumbers[0])", reason: "needs a label and at least one feature column") }
        var features = [Float](repeating: 0, count: table.rows * width)
        var labels = [Int32](repeating: 0, count: table.rows)
        var maxLabel: Int32 = 0
        try table.values.withUnsafeBufferPointer { src in
            try features.withUnsafeMutableBufferPointer { dst in
                for r in 0..<table.rows {
                    let row = r * table.columns
                    let v = src[row + labelColumn]
                    guard v >= 0, v == v.rounded() else {
                        throw LearnerError.malformed(path: table.path, location: "line \(table.lineNumbers[r]), column \(labelColumn + 1)",
                                                     reason: "label \(v) is not a class number (0, 1, 2, ...); if the labels are in another column, name it with --label-column N, counted from 0")
                    }
                    guard v < Float(maxClassCount) else {
                        throw LearnerError.malformed(path: table.path, location: "line \(table.lineNumbers[r]), column \(labelColumn + 1)",
                                                     reason: "label \(Int(v)) is beyond the limit of \(maxClassCount) classes (labels 0 to \(maxClassCount - 1)); is column \(labelColumn) really the label column? (--label-column N)")
                    }
                    labels[r] = Int32(v)
                    maxLabel = max(maxLabel, labels[r])
                    var k = r * width
                    for c in 0..<table.columns where c != labelColumn {
                        dst[k] = src[row + c]
                        k += 1
                    }
                }
            }
        }
        let classes = classCount ?? max(2, Int(maxLabel) + 1)
        guard Int(maxLabel) < classes else {
            throw LearnerError.malformed(path: table.path, location: "column \(labelColumn + 1)", reason: "label \(maxLabel) is outside 0..<\(classes)")
        }
        return Dataset(unchecked: features, labels: labels, featureCount: width, classCount: classes)
    }
}
