import Learner

/// Fuzzes the CSV reader and the data set built from a table. `DataFiles.readCSV` only takes a
/// path (there is no byte-level entry point), so each input is written to a scratch file first.
let path = scratchPath(".csv")

@_cdecl("LLVMFuzzerTestOneInput")
public func fuzzOne(_ data: UnsafePointer<UInt8>?, _ size: Int) -> Int32 {
    writeFile(path, fuzzInput(data, size))
    guard let table = try? DataFiles.readCSV(path) else { return 0 }
    precondition(table.columns >= 1 && table.values.count == table.rows * table.columns, "CSV table is not rectangular")
    precondition(table.values.allSatisfy(\.isFinite), "CSV table holds a non-finite value")
    if let header = table.header { precondition(header.count == table.columns, "CSV header width differs from the rows") }
    guard let label = try? DataFiles.labelColumn(of: table) else { return 0 }
    precondition(label >= 0 && label < table.columns, "label column \(label) outside the table")
    if let set = try? DataFiles.dataset(from: table, labelColumn: label) {
        precondition(set.featureCount == table.columns - 1, "data set width differs from the table")
    }
    return 0
}

@_cdecl("LLVMFuzzerInitialize")
public func fuzzInitialize(_ argc: FuzzArgc, _ argv: FuzzArgv) -> Int32 {
    writeSeeds([
        "label,a,b\n0,1.5,2\n1,-3e2,0.25\n",
        "1,2,3\r\n0,4,5\r\n\r\n2,6,7.5",
        "x, y ,Label\n 1 , 2 , 0\n3,4,1\n",
    ].map { Array($0.utf8) }) { seed in
        writeFile(path, seed)
        return (try? DataFiles.readCSV(path)) != nil
    }
    return 0
}
