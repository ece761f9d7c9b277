import Crypto
import Foundation

/// The releases a node keeps in its data directory, so a restart resumes with them and
/// `peer models` and `peer predict --release` read them with no node running:
///
/// ```
/// DATA_DIR/releases/NAME/VERSION.manifest   the signed manifest
/// DATA_DIR/releases/NAME/VERSION.model      the model file, as published
/// DATA_DIR/releases/NAME/VERSION.delta      its delta against the previous version, if held
/// DATA_DIR/releases/NAME/VERSION.rollback   a rollback notice for that version
/// DATA_DIR/releases/NAME/VERSION.partial/   a fetch in progress: its manifest and every
///                                           verified chunk (file-INDEX, delta-INDEX)
/// DATA_DIR/releases/state.json              active versions and the history of changes
/// ```
///
/// Every file is written atomically (a crash leaves the old file or the new one), the model
/// before its manifest, so a manifest on disk always has its file. A fetch interrupted by a
/// restart resumes with the chunks it had kept.
public struct ReleaseStore: Sendable {
    /// One change of a model's state, for `peer models`.
    public struct HistoryEntry: Sendable, Equatable, Codable {
        public var name: String
        public var version: UInt64
        /// `stored`, `activated`, `rolled back` or `discarded`.
        public var event: String
        /// Unix milliseconds.
        public var at: UInt64
    }

    /// What `state.json` holds.
    public struct State: Sendable, Equatable, Codable {
        public var active: [String: UInt64] = [:]
        public var history: [HistoryEntry] = []
    }

    /// A release read back from disk.
    public struct Stored: Sendable {
        public var manifest: ReleaseManifest
        public var file: [UInt8]
        public var delta: [UInt8]?
    }

    /// A fetch in progress read back from disk: its manifest and the chunks kept so far.
    public struct Partial: Sendable {
        public var manifest: ReleaseManifest
        public var fileChunks: [Int: [UInt8]]
        public var deltaChunks: [Int: [UInt8]]
    }

    /// History entries kept.
    public static let historyLength = 200

    public let directory: String
    /// Active versions and history, as last written.
    public private(set) var state: State

    /// The store of the node with `dataDirectory`; an unreadable state starts empty (`peer
    /// join` checks it first with ``loadState()`` and says so).
    public init(dataDirectory: String) {
        directory = dataDirectory + "/releases"
        state = State()
        state = (try? loadState()) ?? State()
    }

    /// Keeps on disk what `event` of `distributor` changed, at wall-clock `now` (Unix ms).
    public mutating func record(_ event: ReleaseDistributor.Event, of distributor: ReleaseDistributor, at now: UInt64) {
        func note(_ key: ReleaseKey, _ what: String) {
            state.history = Array((state.history + [HistoryEntry(name: key.name, version: key.version, event: what, at: now)]).suffix(Self.historyLength))
            state.active = distributor.active
            _ = save(state)
        }
        switch event {
        case .fetching(let key):
            guard let manifest = distributor.holdings[key]?.manifest,
                  (try? FileManager.default.createDirectory(atPath: partialPath(key), withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])) != nil else { return }
            _ = RuntimeFiles.writeAtomically(manifest.encoded, to: partialPath(key) + "/manifest")
        case let .chunkKept(key, part, index):
            if let bytes = distributor.holdings[key]?.chunks[index] {
                _ = RuntimeFiles.writeAtomically(bytes, to: partialPath(key) + "/\(part.fileName)-\(index)")
            }
        case .stored(let key):
            guard let h = distributor.holdings[key], let manifest = h.manifest, let file = h.file else { return }
            _ = save(manifest, file: file, delta: h.delta)
            try? FileManager.default.removeItem(atPath: partialPath(key))
            note(key, "stored")
        case .activated(let key, _): note(key, "activated")
        case .rolledBack(let notice, _):
            _ = save(notice)
            try? FileManager.default.removeItem(atPath: partialPath(notice.key))
            note(notice.key, "rolled back")
        case .discarded(let key):
            remove(key)
            try? FileManager.default.removeItem(atPath: partialPath(key))
            note(key, "discarded")
        case .refused: break
        }
    }

    func partialPath(_ key: ReleaseKey) -> String { "\(directory)/\(key.name)/\(key.version).partial" }

    /// Every fetch in progress on disk; chunks are checked by the distributor that resumes them.
    public func loadPartials() -> [Partial] {
        var partials: [Partial] = []
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { ReleaseKey.problem(withName: $0) == nil }.sorted()
        for name in names {
            let entries = ((try? FileManager.default.contentsOfDirectory(atPath: directory + "/" + name)) ?? []).filter { $0.hasSuffix(".partial") }.sorted()
            for entry in entries {
                let folder = "\(directory)/\(name)/\(entry)"
                guard let bytes = FileManager.default.contents(atPath: folder + "/manifest").map(Array.init),
                      let manifest = try? ReleaseManifest(decoding: bytes), manifest.key.name == name else { continue }
                var chunks: [ReleasePart: [Int: [UInt8]]] = [.file: [:], .delta: [:]]
                for file in ((try? FileManager.default.contentsOfDirectory(atPath: folder)) ?? []).sorted() {
                    let parts = file.split(separator: "-")
                    guard parts.count == 2, let part = ReleasePart(fileName: String(parts[0])), let index = Int(parts[1]),
                          let data = FileManager.default.contents(atPath: folder + "/" + file) else { continue }
                    chunks[part]?[index] = Array(data)
                }
                partials.append(Partial(manifest: manifest, fileChunks: chunks[.file] ?? [:], deltaChunks: chunks[.delta] ?? [:]))
            }
        }
        return partials
    }

    func path(_ key: ReleaseKey, _ suffix: String) -> String { "\(directory)/\(key.name)/\(key.version).\(suffix)" }

    /// Keeps a complete release.
    public func save(_ manifest: ReleaseManifest, file: [UInt8], delta: [UInt8]?) -> Bool {
        guard prepare(manifest.key.name) else { return false }
        var ok = RuntimeFiles.writeAtomically(file, to: path(manifest.key, "model"))
        if let delta { ok = RuntimeFiles.writeAtomically(delta, to: path(manifest.key, "delta")) && ok }
        return ok && RuntimeFiles.writeAtomically(manifest.encoded, to: path(manifest.key, "manifest"))
    }

    /// Keeps a rollback notice.
    public func save(_ notice: RollbackNotice) -> Bool {
        prepare(notice.key.name) && RuntimeFiles.writeAtomically(notice.encoded, to: path(notice.key, "rollback"))
    }

    /// Removes a discarded version's files (its rollback notice, if any, stays).
    public func remove(_ key: ReleaseKey) {
        for suffix in ["manifest", "model", "delta"] { try? FileManager.default.removeItem(atPath: path(key, suffix)) }
    }

    public func save(_ state: State) -> Bool {
        let encoder = JSONEncoder()
        encoder.outputFormatting = [.sortedKeys, .prettyPrinted]
        guard (try? FileManager.default.createDirectory(atPath: directory, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])) != nil,
              let data = try? encoder.encode(state) else { return false }
        return RuntimeFiles.writeAtomically(Array(data), to: directory + "/state.json")
    }

    /// The state, or an empty one when none was written yet.
    public func loadState() throws -> State {
        guard let data = FileManager.default.contents(atPath: directory + "/state.json") else { return State() }
        do { return try JSONDecoder().decode(State.self, from: data) } catch {
            throw ReleaseStoreError(path: directory + "/state.json", reason: "not a release state (\(error)); move it away and the node starts with no active release")
        }
    }

    /// Every complete release and rollback notice on disk. A file that does not parse, or does
    /// not match its manifest, is skipped and named in `problems` (a node fetches it again).
    public func load() -> (releases: [Stored], rollbacks: [RollbackNotice], problems: [String]) {
        var releases: [Stored] = [], rollbacks: [RollbackNotice] = [], problems: [String] = []
        let names = ((try? FileManager.default.contentsOfDirectory(atPath: directory)) ?? []).filter { ReleaseKey.problem(withName: $0) == nil }.sorted()
        for name in names {
            let files = ((try? FileManager.default.contentsOfDirectory(atPath: directory + "/" + name)) ?? []).sorted()
            for file in files where file.hasSuffix(".manifest") || file.hasSuffix(".rollback") {
                let full = "\(directory)/\(name)/\(file)"
                guard let bytes = FileManager.default.contents(atPath: full).map(Array.init) else { continue }
                if file.hasSuffix(".rollback") {
                    if let notice = try? RollbackNotice(decoding: bytes), notice.key.name == name { rollbacks.append(notice) } else { problems.append("\(full) is not a rollback notice") }
                    continue
                }
                guard let manifest = try? ReleaseManifest(decoding: bytes), manifest.key.name == name, "\(manifest.key.version).manifest" == file else {
                    problems.append("\(full) is not a release manifest")
                    continue
                }
                guard let model = FileManager.default.contents(atPath: path(manifest.key, "model")).map(Array.init), Blake2b.hash256(model) == manifest.fileHash else {
                    problems.append("\(path(manifest.key, "model")) is missing or does not match its manifest")
                    continue
                }
                releases.append(Stored(manifest: manifest, file: model, delta: FileManager.default.contents(atPath: path(manifest.key, "delta")).map(Array.init)))
            }
        }
        return (releases.sorted { $0.manifest.key < $1.manifest.key }, rollbacks.sorted(), problems)
    }

    /// The model file of `key`, checked against its manifest.
    public func file(of key: ReleaseKey) throws -> [UInt8] {
        guard let bytes = FileManager.default.contents(atPath: path(key, "manifest")).map(Array.init) else {
            throw ReleaseStoreError(path: path(key, "manifest"), reason: "no release \(key) is held here; `peer models --data-dir DIR` lists what is")
        }
        guard let manifest = try? ReleaseManifest(decoding: bytes) else { throw ReleaseStoreError(path: path(key, "manifest"), reason: "not a release manifest") }
        guard let model = FileManager.default.contents(atPath: path(key, "model")).map(Array.init), Blake2b.hash256(model) == manifest.fileHash else {
            throw ReleaseStoreError(path: path(key, "model"), reason: "missing or corrupt (it does not match the release hash)")
        }
        return model
    }

    private func prepare(_ name: String) -> Bool {
        (try? FileManager.default.createDirectory(atPath: directory + "/" + name, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])) != nil
    }
}

extension ReleasePart {
    /// How chunk files of this part are named in a fetch's folder.
    var fileName: String { self == .file ? "file" : "delta" }

    init?(fileName: String) {
        switch fileName {
        case "file": self = .file
        case "delta": self = .delta
        default: return nil
        }
    }
}

/// A release file that cannot be used.
public struct ReleaseStoreError: Error, CustomStringConvertible {
    public let path: String
    public let reason: String
    public var description: String { "\(path): \(reason)" }
}
