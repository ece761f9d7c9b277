import ArgumentParser
import CommandSupport
import Crypto
import Foundation
import Gossip
import Learner

/// What a node's model distribution needs from `peer join`: the publishers it trusts, and the
/// control requests through which `peer publish` and `peer rollback` reach it.
enum ReleaseControl {
    /// The distributor of a node with `identity` and data directory `dataDir`, resuming the
    /// releases it kept there.
    static func distributor(identity: Identity, publishers: [String], dataDir: String, seed: UInt64) throws -> ReleaseDistributor {
        let trusted = try publishers.map { text in
            guard let peer = PeerID(hex: text) else {
                throw ValidationError("--publisher takes a peer ID (64 hex digits, as `peer show-id` prints), got '\(text)'")
            }
            return peer
        }
        let store = ReleaseStore(dataDirectory: dataDir)
        let state = try userFacing { try store.loadState() }
        let (stored, rollbacks, problems) = store.load()
        for problem in problems { printNote("skipping \(problem); the node fetches it again from its peers") }
        let partials = store.loadPartials()
        let distributor = ReleaseDistributor(me: identity.peerID, publishers: trusted, seed: seed,
                                             stored: stored.map { ($0.manifest, file: $0.file, delta: $0.delta) },
                                             active: state.active, rollbacks: rollbacks,
                                             partial: partials.map { ($0.manifest, fileChunks: $0.fileChunks, deltaChunks: $0.deltaChunks) })
        for key in distributor.holdings.keys.sorted() where distributor.holdings[key]?.isComplete == false {
            printNote("resuming the fetch of \(key) with \(distributor.holdings[key]?.keptChunks ?? 0) chunk(s) kept")
        }
        if !distributor.holdings.isEmpty {
            printNote("holding \(distributor.holdings.count) release(s) from \(store.directory); active: "
                      + (distributor.active.isEmpty ? "none" : distributor.active.sorted { $0.key < $1.key }.map { "\($0.key) v\($0.value)" }.joined(separator: ", ")))
        }
        return distributor
    }

    /// Answers `publish` and `rollback` on the control socket of `runtime`, signing with `identity`.
    static func register<Node>(on runtime: OverlayRuntime<Node>, identity: Identity) {
        runtime.controlRequests["publish"] = { [unowned runtime] arguments in
            do { return try publish(arguments, on: runtime, identity: identity) } catch { return ["error": "\(error)"] }
        }
        runtime.controlRequests["rollback"] = { [unowned runtime] arguments in
            guard let name = arguments["name"] as? String, let version = (arguments["version"] as? NSNumber)?.uint64Value else {
                return ["error": "a rollback request names the model (name) and its version"]
            }
            let key = ReleaseKey(name: name, version: version)
            do {
                try runtime.rollBack(RollbackNotice(key: key, issuedAt: WallClock.milliseconds(), publisher: identity))
            } catch {
                return ["error": "\(error)"]
            }
            return ["rolled_back": "\(key)", "active": runtime.node.overlay.releases?.active[name].map { $0 as Any } ?? NSNull()]
        }
    }

    /// Reads the model file the request names, signs its release (with a delta against the
    /// newest earlier version held, when that is smaller) and publishes it.
    static func publish<Node>(_ arguments: [String: Any], on runtime: OverlayRuntime<Node>, identity: Identity) throws -> [String: Any] {
        guard let path = arguments["path"] as? String, let name = arguments["name"] as? String,
              let version = (arguments["version"] as? NSNumber)?.uint64Value else {
            throw CommandFailure("a publish request names the model file (path), the model (name) and its version")
        }
        let canary = (arguments["canary"] as? NSNumber)?.intValue ?? 100
        let delay = (arguments["canary_delay"] as? NSNumber)?.intValue ?? 0
        guard let releases = runtime.node.overlay.releases else { throw CommandFailure("this node takes no part in model distribution") }
        guard let data = FileManager.default.contents(atPath: path) else { throw CommandFailure("the node cannot read \(path)") }
        let file = Array(data)
        let contents = try ModelFile.decode(file, path: path)
        let key = ReleaseKey(name: name, version: version)
        let base = releases.versions(of: name).last { $0.version < version && releases.holdings[$0]?.isComplete == true }
        var delta: (baseVersion: UInt64, baseHash: [UInt8], bytes: [UInt8])?
        if let base, let baseFile = releases.holdings[base]?.file, let patch = ReleasePatch.make(from: baseFile, to: file), patch.count < file.count {
            delta = (base.version, Blake2b.hash256(baseFile), patch)
        }
        let manifest = try ReleaseManifest(
            key: key, description: describe(contents), file: file, chunkSize: releases.settings.chunkSize, canaryPercent: canary,
            canaryDelaySeconds: delay, publishedAt: WallClock.milliseconds(), delta: delta, publisher: identity)
        try runtime.publish(manifest, file: file, delta: delta?.bytes)
        return [
            "published": "\(key)", "name": name, "version": version, "hash": Hex.encode(manifest.fileHash), "bytes": file.count,
            "delta_bytes": delta.map { $0.bytes.count as Any } ?? NSNull(), "delta_base": delta.map { $0.baseVersion as Any } ?? NSNull(),
            "description": manifest.description, "active": releases.active[name].map { $0 as Any } ?? NSNull(),
        ]
    }

    /// The model file of release `spec` (`NAME`, its active version, or `NAME@VERSION`) held in
    /// `dataDir`, checked against its release hash; and its key.
    static func releasedModel(_ spec: String, dataDir: String) throws -> (contents: ModelFile.Contents, key: ReleaseKey) {
        let parts = spec.split(separator: "@", maxSplits: 1).map(String.init)
        let name = parts.first ?? spec
        if let problem = ReleaseKey.problem(withName: name) { throw UserFacingError("release '\(spec)': \(problem)") }
        let store = ReleaseStore(dataDirectory: dataDir)
        let version: UInt64
        if parts.count == 2 {
            guard let v = UInt64(parts[1]), v >= 1 else { throw UserFacingError("release '\(spec)': the version after '@' is a positive integer") }
            version = v
        } else {
            guard let active = try userFacing({ try store.loadState() }).active[name] else {
                throw UserFacingError("the peer with --data-dir \(dataDir) has no active release of '\(name)'; `peer models --data-dir \(dataDir)` lists what it holds")
            }
            version = active
        }
        let key = ReleaseKey(name: name, version: version)
        let bytes = try userFacing { try store.file(of: key) }
        return (try ModelFile.decode(bytes, path: "release \(key)"), key)
    }

    /// What a release's manifest says of its model: architecture, shape, normaliser.
    static func describe(_ contents: ModelFile.Contents) -> String {
        "\(contents.model.architecture), \(contents.storage), normaliser \(contents.normalizer.kind)"
    }
}

/// `peer publish`: publish a model file as a release through a running peer.
struct Publish: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Publish a model file to the whole network as a signed release, through a running peer.",
        discussion: """
        The peer running with --data-dir signs the release with its identity (it must be one of its \
        own --publisher IDs, and the other peers' too, or they refuse it), keeps it, and gossip \
        spreads it: every peer, including those offline or partitioned now, fetches it in verified \
        chunks from peers that hold it, as a delta when it holds the previous version. With \
        --canary PERCENT only that share of peers (chosen by their ID) activates it at once; the \
        others wait --canary-delay seconds, unless `peer rollback` comes first. Prints the \
        release's BLAKE2b-256 hash on standard output. See docs/deployment.md.

        Example:
          peer publish model.bin --name fashion --version 3 --data-dir node1 --canary 10 --canary-delay 600
        """
    )

    @Argument(help: "The model file (from `peer train`, `peer compress`, or a peer's DATA_DIR/model).")
    var model: String
    @Option(help: "The model's name in the network (letters, digits, '.', '_', '-').")
    var name: String
    @Option(help: "The release's version: a positive integer, higher than every earlier one.")
    var version: UInt64
    @Option(name: .customLong("data-dir"), help: "The --data-dir of the running peer that publishes it.")
    var dataDir: String
    @Option(help: "Per cent of peers that activate the release at once (the canaries).")
    var canary: Int = 100
    @Option(name: .customLong("canary-delay"), help: "Seconds the other peers wait after they hold it before they activate it.")
    var canaryDelay: Int = 0
    @Flag(help: "Print the peer's answer as one JSON object.")
    var json = false

    func validate() throws {
        if let problem = ReleaseKey.problem(withName: name) { throw ValidationError("--name: \(problem)") }
        guard version >= 1 else { throw ValidationError("--version counts from 1") }
        guard (0...100).contains(canary) else { throw ValidationError("--canary is a percentage from 0 to 100, got \(canary)") }
        guard (0...ReleaseManifest.maxCanaryDelaySeconds).contains(canaryDelay) else {
            throw ValidationError("--canary-delay is seconds from 0 to \(ReleaseManifest.maxCanaryDelaySeconds) (a week), got \(canaryDelay)")
        }
        if canary < 100 && canaryDelay == 0 { throw ValidationError("--canary \(canary) needs --canary-delay SECONDS: how long the other peers wait") }
    }

    func run() throws {
        // Checked here first, so a wrong file is named before any peer is asked.
        _ = try ModelFile.read(model)
        let absolute = model.hasPrefix("/") ? model : FileManager.default.currentDirectoryPath + "/" + model
        let request: [String: Any] = ["request": "publish", "path": absolute, "name": name, "version": version, "canary": canary, "canary_delay": canaryDelay]
        let reply = try ControlClient.request(String(decoding: try JSONSerialization.data(withJSONObject: request), as: UTF8.self), dataDirectory: dataDir)
        if let error = reply["error"] as? String { throw UserFacingError("the peer with --data-dir \(dataDir) did not publish it: \(error)") }
        if json {
            print(String(decoding: try JSONSerialization.data(withJSONObject: reply, options: [.sortedKeys]), as: UTF8.self))
        } else {
            print(reply["hash"] as? String ?? "")
        }
        let delta = (reply["delta_bytes"] as? Int).map { ", delta of \($0) bytes against v\(reply["delta_base"] ?? "?")" } ?? ""
        printNote("published \(name) v\(version): \(reply["bytes"] ?? "?") bytes\(delta); \(reply["description"] ?? "")")
    }
}

/// `peer rollback`: withdraw a release everywhere.
struct Rollback: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Roll a release back on every peer, through a running peer that is one of its publishers.",
        discussion: "Peers running that version go back to the newest earlier version they hold; peers still waiting (a staged rollout) never activate it."
    )

    @Argument(help: "The model's name.")
    var name: String
    @Argument(help: "The version to roll back.")
    var version: UInt64
    @Option(name: .customLong("data-dir"), help: "The --data-dir of the running peer that signs the rollback.")
    var dataDir: String

    func validate() throws {
        if let problem = ReleaseKey.problem(withName: name) { throw ValidationError(problem) }
        guard version >= 1 else { throw ValidationError("versions count from 1") }
    }

    func run() throws {
        let request: [String: Any] = ["request": "rollback", "name": name, "version": version]
        let reply = try ControlClient.request(String(decoding: try JSONSerialization.data(withJSONObject: request), as: UTF8.self), dataDirectory: dataDir)
        if let error = reply["error"] as? String { throw UserFacingError("the peer with --data-dir \(dataDir) did not roll it back: \(error)") }
        let active = (reply["active"] as? NSNumber).map { "v\($0)" } ?? "none"
        print("\(name)\t\(version)\trolled back\tactive \(active)")
    }
}

/// `peer models`: the releases a peer holds (read from its data directory; no node needs to run).
struct Models: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "List the model releases a peer holds: versions, the active one, rollbacks and history.",
        discussion: "Reads DATA_DIR/releases, so it works whether or not the peer runs."
    )

    @Option(name: .customLong("data-dir"), help: "The peer's --data-dir.")
    var dataDir: String
    @Flag(help: "Print one JSON object (for scripts).")
    var json = false

    func run() throws {
        guard FileManager.default.fileExists(atPath: dataDir) else { throw UserFacingError("--data-dir \(dataDir) does not exist") }
        let store = ReleaseStore(dataDirectory: dataDir)
        let state = try userFacing { try store.loadState() }
        let (stored, rollbacks, problems) = store.load()
        for problem in problems { printNote("skipping \(problem)") }
        let names = Set(stored.map(\.manifest.key.name) + rollbacks.map(\.key.name) + state.active.keys).sorted()
        var models: [[String: Any]] = []
        for name in names {
            let versions: [[String: Any]] = stored.filter { $0.manifest.key.name == name }.map { s in
                let m = s.manifest
                return [
                    "version": m.key.version, "bytes": m.file.size, "hash": Hex.encode(m.fileHash), "description": m.description,
                    "publisher": m.publisher.description, "published_at": m.publishedAt, "canary": m.canaryPercent,
                    "canary_delay": m.canaryDelaySeconds, "delta_bytes": s.delta.map { $0.count as Any } ?? NSNull(),
                    "rolled_back": rollbacks.contains { $0.key == m.key },
                ]
            }
            models.append([
                "name": name, "active": state.active[name].map { $0 as Any } ?? NSNull(), "versions": versions,
                "rolled_back": rollbacks.filter { $0.key.name == name }.map(\.key.version),
                "history": state.history.filter { $0.name == name }.map { ["version": $0.version, "event": $0.event, "at": $0.at] as [String: Any] },
            ])
        }
        if json {
            print(String(decoding: try JSONSerialization.data(withJSONObject: ["models": models], options: [.sortedKeys]), as: UTF8.self))
            return
        }
        if models.isEmpty { printNote("no releases in \(store.directory)") }
        for model in models {
            let active = (model["active"] as? NSNumber).map { "v\($0)" } ?? "none"
            print("\(model["name"] ?? "?"): active \(active)")
            for v in model["versions"] as? [[String: Any]] ?? [] {
                let published = Date(timeIntervalSince1970: Double(v["published_at"] as? UInt64 ?? 0) / 1000)
                let flags = (v["rolled_back"] as? Bool == true ? " (rolled back)" : "") + (v["delta_bytes"] is Int ? " (delta held)" : "")
                print("  v\(v["version"] ?? "?")  \(v["bytes"] ?? "?") bytes  \(String((v["hash"] as? String ?? "").prefix(16)))  published \(ISO8601DateFormatter().string(from: published))  \(v["description"] ?? "")\(flags)")
            }
            for h in (model["history"] as? [[String: Any]] ?? []).suffix(10) {
                let at = Date(timeIntervalSince1970: Double(h["at"] as? UInt64 ?? 0) / 1000)
                print("  \(ISO8601DateFormatter().string(from: at))  v\(h["version"] ?? "?") \(h["event"] ?? "")")
            }
        }
    }
}
