import ArgumentParser
import CommandSupport
import Crypto
import DeterministicRandom
import Foundation
import Federation
import Gossip
import Logging
import Prometheus

/// `peer join`: run a node until it is told to leave (SIGINT, SIGTERM or `peer leave`).
struct Join: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Run a node: join the network, keep a membership view, train a model (or average a vector) with its peers.",
        discussion: """
        The node listens on one port for UDP (membership, peer sampling, discovery) and TCP (averaging \
        sessions behind the secret handshake). With --data it trains a model with the network by \
        stochastic gradient push, gossip learning or D-PSGD (--algorithm; docs/learning.md); with --vector it averages a vector. It finds its peers through --bootstrap addresses and the \
        peer cache it keeps in --data-dir. Watch it with `peer status --data-dir DIR`; stop it with \
        SIGINT/SIGTERM or `peer leave --data-dir DIR`: it leaves gracefully, hands its averaging mass to a \
        neighbour, and exits 0. A second signal exits at once. See docs/operators.md.

        Examples:
          peer join --dir keys --network-key net.key --listen 127.0.0.1:7000 --data-dir node1 --data fashion-mnist --model softmax
          peer join --dir keys --network-key net.key --listen 127.0.0.1:7000 --data-dir node1 --vector random:8:1 --samples 10
        """
    )

    @Option(name: .long, help: "Key directory holding identity.key (created with a new identity if it has none).")
    var dir: String = KeyDirectory.defaultPath

    @Option(name: .customLong("network-key"), help: "Network key file.")
    var networkKey: String

    @Option(name: .long, help: "Listen on HOST:PORT, UDP and TCP (port 0 picks a free one).")
    var listen: String = "0.0.0.0:7946"

    @Option(name: .long, help: "The HOST:PORT others should use to reach this node (behind NAT, a relay, or when listening on 0.0.0.0).")
    var advertise: String?

    @Option(name: .long, help: "A peer's HOST:PORT to join through (repeatable).")
    var bootstrap: [String] = []

    @Option(name: .customLong("data-dir"), help: "Directory of the node's state: peer cache and control socket (created 0700).")
    var dataDir: String

    @Option(name: .long, help: "Timing profile: lan, wan or local (one machine).")
    var profile: String = "lan"

    @Option(name: .long, help: "The vector to average: a file of numbers separated by commas or newlines, or random:DIM:SEED.")
    var vector: String?

    @Option(name: .long, parsing: .unconditional, help: "The vector's weight: this node's sample count (> 0).")
    var samples: Double = 1

    @Option(name: .customLong("log-level"), help: "trace, debug (every event), info (membership changes; the default), notice, warning (refused input), error or critical.")
    var logLevel: String = "info"

    @Option(name: .customLong("log-format"), help: "text, or json (one object per line) for log collectors.")
    var logFormat: String = "text"

    @Option(name: .long, help: "Compression of averaging shares: fp32 (none), fp16, int8, or topk:F (each share carries the fraction F of the coordinates, each at its own weight); what a share loses or leaves out stays with its sender (error feedback), so no mass is lost. Every peer of a network must use the same.")
    var compress: String = "fp32"

    @Option(name: .customLong("share-fraction"), parsing: .unconditional, help: "Fraction of this node's averaging mass (value and weight) each transfer moves, above 0 and at most 1 (0.5, classic push-sum, by default). Peers may differ: the mean stays exact.")
    var shareFraction: Double = PushSumAverager.Settings().shareFraction

    @Option(name: .customLong("sparse-share-fraction"), parsing: .unconditional, help: "With --compress topk:F, the fraction of each carried coordinate's mass a transfer moves, strictly between 0 and 1 (0.75 by default).")
    var sparseShareFraction: Double = PushSumAverager.Settings().sparseShareFraction

    @Option(name: .long, parsing: .unconditional, help: "Most bytes per second this node sends, datagrams and transfers together (0: no cap); heartbeats go before transfers.")
    var bandwidth: Double = 0

    @Flag(name: .customLong("no-beacons"), help: "Send and hear no LAN multicast beacons (the wan profile has none anyway).")
    var noBeacons = false

    @Option(name: .customLong("publisher"), help: "A peer ID whose model releases and rollbacks this node accepts (repeatable; the config key is `publishers`). A peer publishes only if its own ID is listed.")
    var publishers: [String] = []

    @OptionGroup(title: "Training (with --data)")
    var learning: LearningOptions

    @Option(help: "Serve predictions over HTTP on HOST:PORT (KServe v2) with the network's active model releases, and a training peer's own model as `local`.")
    var serve: String?

    @OptionGroup(title: "Serving (with --serve)")
    var serving: ServingOptions

    // Read before parsing (JoinConfig.expand turns the file's keys into flags); declared here
    // so that --help documents it.
    @Option(help: "A TOML file (JSON if it ends in .json) whose keys are the long flag names above; flags given on the command line win.")
    var config: String?

    func validate() throws {
        let listenAddress = try HostPort(parsing: listen, flag: "--listen")
        if let advertise {
            guard try HostPort(parsing: advertise, flag: "--advertise").port != 0 else { throw ValidationError("--advertise needs a port from 1 to 65535") }
        } else if (listenAddress.host == "0.0.0.0" || listenAddress.host == "::") && listenAddress.port == 0 {
            throw ValidationError("--listen \(listen) picks a port on every interface; give --advertise HOST:PORT, the address others should use")
        }
        for b in bootstrap {
            guard try HostPort(parsing: b, flag: "--bootstrap").port != 0 else { throw ValidationError("--bootstrap needs a port from 1 to 65535, got '\(b)'") }
        }
        guard Self.profiles[profile] != nil else { throw ValidationError("--profile must be lan, wan or local, got '\(profile)'") }
        guard samples > 0, samples.isFinite else { throw ValidationError("--samples must be a number above 0, got \(samples)") }
        guard bandwidth == 0 || (bandwidth >= 1_000 && bandwidth.isFinite) else {
            throw ValidationError("--bandwidth is bytes per second, 0 (no cap) or at least 1000, got \(bandwidth)")
        }
        guard Logger.Level(rawValue: logLevel) != nil else {
            throw ValidationError("--log-level must be one of \(Logs.levels.joined(separator: ", ")), got '\(logLevel)'")
        }
        guard ["text", "json"].contains(logFormat) else { throw ValidationError("--log-format must be text or json, got '\(logFormat)'") }
        for p in publishers where PeerID(hex: p) == nil {
            throw ValidationError("--publisher takes a peer ID (64 hex digits, as `peer show-id` prints), got '\(p)'")
        }
        if let serve { _ = try HostPort(parsing: serve, flag: "--serve") }
        if let vector, vector.hasPrefix("random:") { _ = try Self.randomSpec(vector) }
        _ = try Self.shareCodec(compress)
        guard shareFraction > 0, shareFraction <= 1 else {
            throw ValidationError("--share-fraction must be above 0 and at most 1, got \(shareFraction)")
        }
        guard sparseShareFraction > 0, sparseShareFraction < 1 else {
            throw ValidationError("--sparse-share-fraction must be strictly between 0 and 1, got \(sparseShareFraction)")
        }
        try learning.validate(vector: vector, compress: compress)
    }

    static let profiles: [String: OverlaySettings] = ["lan": .lan, "wan": .wan, "local": .local]

    /// The share codec for `--compress`: fp32, fp16, int8 or top-k (sparse push-sum, where
    /// every coordinate has a weight of its own; see docs/averaging.md).
    static func shareCodec(_ spec: String) throws -> any ShareCodec {
        do { return try CompressedShareCodec.named(spec) } catch {
            throw ValidationError("--compress must be fp32, fp16, int8 or topk:FRACTION (0 < FRACTION ≤ 1), got '\(spec)'")
        }
    }

    /// `random:DIM:SEED` → (dimension, seed).
    static func randomSpec(_ text: String) throws -> (Int, UInt64) {
        let parts = text.split(separator: ":", omittingEmptySubsequences: false)
        guard parts.count == 3, let dim = Int(parts[1]), (1...(1 << 24)).contains(dim), let seed = UInt64(parts[2]) else {
            throw ValidationError("--vector random:DIM:SEED needs DIM from 1 to 16777216 and a SEED of 0 or more, got '\(text)'")
        }
        return (dim, seed)
    }

    func run() throws {
        Logs.bootstrap(format: logFormat, level: Logger.Level(rawValue: logLevel) ?? .info)
        let logger = Logger(label: "murmuration.peer")
        try prepareDataDirectory()
        let identity = try loadOrCreateIdentity()
        let key = try userFacing { try NetworkKey.load(from: networkKey) }
        let listenAddress = try HostPort(parsing: listen, flag: "--listen").resolved()
        var advertised = try advertise.map { try HostPort(parsing: $0, flag: "--advertise").resolved() }
        if advertised == nil, listenAddress.host == "0.0.0.0" || listenAddress.host == "::" {
            // Bound to every interface: others reach it at this machine's first LAN address.
            guard let lan = Self.firstLANAddress() else {
                throw UserFacingError("--listen \(listen) binds every interface but this machine has no non-loopback IPv4 address; give --advertise HOST:PORT")
            }
            advertised = HostPort(host: lan, port: listenAddress.port)
        }
        var settings = Self.profiles[profile] ?? .lan
        settings.discovery.bootstrap = try bootstrap.map { b in
            let r = try HostPort(parsing: b, flag: "--bootstrap").resolved()
            return Endpoint(host: r.host, port: r.port)
        }
        if noBeacons { settings.discovery.beaconEndpoint = nil }
        settings.averaging.shareFraction = shareFraction
        settings.averaging.sparseShareFraction = sparseShareFraction
        try userFacing { try settings.validate() }
        var seedSource = SystemRandomNumberGenerator()
        let codec = try Self.shareCodec(compress)
        let configuration = NodeRuntime.Configuration(
            listen: Endpoint(host: listenAddress.host, port: listenAddress.port),
            advertise: advertised.map { Endpoint(host: $0.host, port: $0.port) }, settings: settings, dataDirectory: dataDir,
            bandwidth: bandwidth > 0 ? bandwidth : nil)
        let keyring = NetworkKeyring(current: key)
        let releases = try ReleaseControl.distributor(identity: identity, publishers: publishers, dataDir: dataDir, seed: seedSource.next())
        if learning.data != nil {
            try runLearning(identity: identity, keyring: keyring, configuration: configuration, codec: codec, releases: releases,
                            logger: logger, seed: &seedSource)
            return
        }
        let averager: PushSumAverager?
        if let saved = try loadAveragingState(for: identity, codec: codec) {
            // A restart resumes exactly where the last run stopped: its own vector is already
            // in the network's mass and is not added again.
            printNote("resuming the averaging state saved in \(dataDir) (weight \(saved.weight)); --vector and --samples are not added again")
            averager = .resuming(saved, settings: settings.averaging, codec: codec, rng: SplitMix64(seed: seedSource.next()))
        } else {
            averager = try loadVector().map { vector in
                PushSumAverager(peer: identity.peerID, initial: vector, sampleCount: samples, settings: settings.averaging,
                                codec: codec, rng: SplitMix64(seed: seedSource.next()))
            }
        }
        let runtime = try userFacing {
            try NodeRuntime(identity: identity, keyring: keyring, configuration: configuration, averager: averager, releases: releases,
                            seed: seedSource.next())
        }
        runtime.onEvent = { event in Self.log(event, to: logger) }
        ReleaseControl.register(on: runtime, identity: identity)
        let server = try startServing(runtime)
        let handedOff = try drive(runtime, identity: identity, logger: logger)
        _ = server
        if runtime.node.averager != nil {
            printNote(handedOff ? "left: averaging mass handed to a neighbour" : "left: kept its averaging mass (no neighbour took it in time)")
        } else {
            printNote("left")
        }
    }

    /// With --serve, starts the prediction server on the node's active releases; nil without.
    func startServing<Node>(_ runtime: OverlayRuntime<Node>) throws -> (InferenceServer, ModelRegistry)? {
        guard let serve else { return nil }
        let registry = ModelRegistry()
        let server = try serving.startServer(at: serve, flag: "--serve", registry: registry).server
        NetworkServing.follow(runtime, into: registry)
        let previous = runtime.statusExtras
        runtime.statusExtras = {
            var extras = previous?() ?? [:]
            extras["serving"] = server.status
            return extras
        }
        return (server, registry)
    }

    /// Starts `runtime`, prints the peer's ID on standard output, runs until the node has
    /// left (SIGINT, SIGTERM or `peer leave`; a second signal exits at once) and returns whether
    /// its averaging mass was handed off.
    func drive<Node>(_ runtime: OverlayRuntime<Node>, identity: Identity, logger: Logger) throws -> Bool {
        var handedOff = false
        runtime.onStopped = { handedOff = $0 }
        var signals = 0
        let onSignal: (Int32) -> Void = { number in
            signals += 1
            if signals > 1 {
                printNote("second signal: exiting at once")
                Foundation.exit(0)
            }
            printNote("signal \(number): leaving gracefully (send it again to exit at once)")
            runtime.leave()
        }
        let watchers = try userFacing {
            [try SignalWatcher(loop: runtime.loop, signal: SIGINT, onSignal), try SignalWatcher(loop: runtime.loop, signal: SIGTERM, onSignal)]
        }
        try userFacing { try runtime.start() }
        let beaconsConfigured = runtime.configuration.settings.discovery.beaconEndpoint != nil
        if let off = runtime.beaconsOff, !noBeacons, beaconsConfigured { logger.warning("\(off)") }
        printNote("peer \(identity.peerID) (\(identity.peerID.fingerprint)) listening on \(runtime.endpoint), UDP and TCP; profile \(profile)")
        FileHandle.standardOutput.write(Data((identity.peerID.description + "\n").utf8))
        runtime.run()
        for watcher in watchers { watcher.close() }
        return handedOff
    }

    private func prepareDataDirectory() throws {
        var isDirectory: ObjCBool = false
        if FileManager.default.fileExists(atPath: dataDir, isDirectory: &isDirectory) {
            guard isDirectory.boolValue else { throw UserFacingError("--data-dir \(dataDir) is not a directory") }
        } else {
            do {
                try FileManager.default.createDirectory(atPath: dataDir, withIntermediateDirectories: true, attributes: [.posixPermissions: 0o700])
            } catch {
                throw UserFacingError("--data-dir \(dataDir) cannot be created: \(error.localizedDescription)")
            }
        }
        guard access(dataDir, W_OK) == 0 else { throw UserFacingError("--data-dir \(dataDir) is not writable by this user") }
        if (try? ControlClient.request("status", dataDirectory: dataDir)) != nil {
            throw UserFacingError("a node already runs with --data-dir \(dataDir); stop it with `peer leave --data-dir \(dataDir)` or use another directory")
        }
    }

    private func loadOrCreateIdentity() throws -> Identity {
        let path = KeyDirectory.identityPath(dir)
        if !FileManager.default.fileExists(atPath: path) {
            return try userFacing {
                try KeyFile.prepareDirectory(dir)
                let identity = try Identity.generate()
                try identity.save(to: path)
                printNote("created \(path): a new identity for this node")
                return identity
            }
        }
        return try userFacing { try Identity.load(from: path) }
    }

    /// The first up, non-loopback IPv4 address of this machine, if any.
    static func firstLANAddress() -> String? {
        var list: UnsafeMutablePointer<ifaddrs>?
        guard getifaddrs(&list) == 0, let first = list else { return nil }
        defer { freeifaddrs(list) }
        var next: UnsafeMutablePointer<ifaddrs>? = first
        while let entry = next {
            next = entry.pointee.ifa_next
            let flags = Int32(entry.pointee.ifa_flags)
            guard flags & Int32(IFF_UP) != 0, flags & Int32(IFF_LOOPBACK) == 0,
                  let addr = entry.pointee.ifa_addr, addr.pointee.sa_family == sa_family_t(AF_INET) else { continue }
            var name = [CChar](repeating: 0, count: Int(NI_MAXHOST))
            guard getnameinfo(addr, socklen_t(MemoryLayout<sockaddr_in>.size), &name, socklen_t(name.count), nil, 0, NI_NUMERICHOST) == 0 else { continue }
            return String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self)
        }
        return nil
    }

    /// The averaging state a previous run saved in the data directory, if any.
    func loadAveragingState(for identity: Identity, codec: any ShareCodec) throws -> DurableState? {
        let path = dataDir + "/" + NodeRuntime.averagingStateName
        guard let data = FileManager.default.contents(atPath: path) else { return nil }
        let state: DurableState
        do { state = try DurableState(decoding: Array(data)) } catch {
            throw UserFacingError("\(path) is not a valid averaging state (\(error)); move it away to start averaging afresh")
        }
        guard state.peer == identity.peerID else {
            throw UserFacingError("\(path) belongs to peer \(state.peer.fingerprint), not to this identity (\(identity.peerID.fingerprint)); use that peer's --dir or another --data-dir")
        }
        if let reason = state.incompatibility(with: codec) {
            throw UserFacingError("\(path) was saved with another --compress than '\(compress)': \(reason); restart with the --compress it ran with")
        }
        return state
    }

    /// The vector to average, or nil to run membership only.
    private func loadVector() throws -> [Float]? {
        guard let vector else { return nil }
        if vector.hasPrefix("random:") {
            let (dimension, seed) = try Self.randomSpec(vector)
            var rng = SplitMix64(seed: seed)
            return (0..<dimension).map { _ in Float(rng.next() >> 40) / Float(1 << 24) * 2 - 1 }
        }
        let text: String
        do { text = try String(contentsOfFile: vector, encoding: .utf8) } catch {
            throw UserFacingError("--vector \(vector) cannot be read: \(error.localizedDescription)")
        }
        var values: [Float] = []
        for (i, field) in text.split(whereSeparator: { $0 == "," || $0 == "\n" || $0 == "\r" }).enumerated() {
            let trimmed = field.trimmingCharacters(in: .whitespaces)
            if trimmed.isEmpty { continue }
            guard let v = Float(trimmed), v.isFinite else {
                throw UserFacingError("--vector \(vector): value \(i + 1), '\(trimmed)', is not a finite number")
            }
            values.append(v)
        }
        guard !values.isEmpty else { throw UserFacingError("--vector \(vector) holds no numbers") }
        return values
    }

    /// One line per membership change at `info`, refused input at `warning`, every event at `debug`.
    static func log(_ event: GossipEvent, to logger: Logger) {
        switch event {
        case .membership(let e):
            switch e {
            case .alive(let p): logger.info("member alive", metadata: ["peer": "\(p)"])
            case .suspect(let p): logger.info("member suspected", metadata: ["peer": "\(p)"])
            case .dead(let p): logger.info("member dead", metadata: ["peer": "\(p)"])
            case .left(let p): logger.info("member left", metadata: ["peer": "\(p)"])
            default: logger.debug("\(event)")
            }
        case .sampling(.added(let r)):
            logger.info("peer in view", metadata: ["peer": "\(r.peer)", "address": "\(r.primary)"])
        case .refused(let from, let reason):
            logger.warning("refused a message", metadata: ["from": "\(from)", "reason": "\(reason)"])
        case .release(let e):
            switch e {
            case .stored(let key): logger.info("release stored", metadata: ["release": "\(key)"])
            case .activated(let key, let previous): logger.info("release activated", metadata: ["release": "\(key)", "previous": "\(previous.map { "v\($0)" } ?? "none")"])
            case .rolledBack(let notice, let active): logger.info("release rolled back", metadata: ["release": "\(notice.key)", "active": "\(active.map { "v\($0)" } ?? "none")"])
            case .discarded(let key): logger.debug("release discarded", metadata: ["release": "\(key)"])
            case .fetching(let key): logger.info("release fetching", metadata: ["release": "\(key)"])
            case .chunkKept: logger.trace("\(event)")
            case .refused(let reason, let key, let from):
                logger.warning("refused a release", metadata: ["reason": "\(reason.rawValue)", "release": "\(key.map { "\($0)" } ?? "?")", "from": "\(from?.fingerprint ?? "?")"])
            }
        default:
            logger.debug("\(event)")
        }
    }
}

/// The client side of a node's control socket (`DATA_DIR/control.sock`).
enum ControlClient {
    /// Sends one request line and returns the JSON object the node answers.
    static func request(_ command: String, dataDirectory: String) throws -> [String: Any] {
        let path = dataDirectory + "/" + NodeRuntime.controlSocketName
        let fd = socket(AF_UNIX, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw UserFacingError("cannot open a socket: \(String(cString: strerror(errno)))") }
        defer { close(fd) }
        var address = sockaddr_un()
        address.sun_family = sa_family_t(AF_UNIX)
        let bytes = Array(path.utf8)
        guard bytes.count < MemoryLayout.size(ofValue: address.sun_path) else {
            throw UserFacingError("--data-dir \(dataDirectory): the control socket path is too long; use a shorter directory")
        }
        withUnsafeMutableBytes(of: &address.sun_path) { raw in
            raw.copyBytes(from: bytes)
            raw[bytes.count] = 0
        }
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_un>.size)) }
        }
        guard connected == 0 else {
            throw UserFacingError("no node runs with --data-dir \(dataDirectory) (nothing answers at \(path)); start one with `peer join`")
        }
        var timeout = timeval(tv_sec: 5, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let line = Array((command + "\n").utf8)
        guard line.withUnsafeBytes({ write(fd, $0.baseAddress, $0.count) }) == line.count else {
            throw UserFacingError("the node at \(path) closed the control socket")
        }
        var reply: [UInt8] = []
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = buffer.withUnsafeMutableBytes { read(fd, $0.baseAddress, $0.count) }
            if n <= 0 { break }
            reply += buffer[..<n]
            guard reply.count < 64 << 20 else { break }
        }
        guard let object = try? JSONSerialization.jsonObject(with: Data(reply)) as? [String: Any] else {
            throw UserFacingError("the node at \(path) gave no valid answer (\(reply.count) bytes)")
        }
        return object
    }
}

/// `peer status`: what a running node knows.
struct Status: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Show a running node's state: identity, addresses, members, averaging, learning, traffic, refusals.",
        discussion: """
        Asks the node through its control socket in DIR (mode 0600). Exits 1 if no node runs there. \
        --json prints one JSON object for scripts; --prometheus the Prometheus text format (for a \
        node_exporter textfile collector); --watch refreshes the text view every second until interrupted.
        """
    )

    @Option(name: .customLong("data-dir"), help: "The node's --data-dir.")
    var dataDir: String

    @Flag(name: .long, help: "Print the state as one JSON object (for scripts).")
    var json = false

    @Flag(name: .long, help: "Print the state in the Prometheus text exposition format.")
    var prometheus = false

    @Flag(name: .long, help: "Refresh the text view in place every second, until interrupted.")
    var watch = false

    func validate() throws {
        guard [json, prometheus, watch].filter({ $0 }).count <= 1 else {
            throw ValidationError("give at most one of --json, --prometheus and --watch")
        }
    }

    func run() throws {
        if watch {
            while true {
                let state = try ControlClient.request("status", dataDirectory: dataDir)
                // Home the cursor and clear the screen, then redraw.
                print("\u{1b}[H\u{1b}[2J", terminator: "")
                print(Self.text(state), terminator: "")
                fflush(nil)
                sleep(1)
            }
        }
        let state = try ControlClient.request("status", dataDirectory: dataDir)
        if json {
            let data = try JSONSerialization.data(withJSONObject: state, options: [.sortedKeys])
            print(String(decoding: data, as: UTF8.self))
        } else if prometheus {
            print(Self.prometheusText(state), terminator: "")
        } else {
            print(Self.text(state), terminator: "")
        }
    }

    /// The human-readable view.
    static func text(_ state: [String: Any]) -> String {
        var out = "peer: \(state["peer"] as? String ?? "?")\n"
        out += "addresses: \((state["addresses"] as? [String] ?? []).joined(separator: " "))\n"
        let members = state["members"] as? [[String: Any]] ?? []
        out += "members: \(members.count)\n"
        for m in members { out += "  \(m["peer"] as? String ?? "?") \(m["state"] as? String ?? "?")\n" }
        if let a = state["averaging"] as? [String: Any] {
            out += "averaging: weight \(a["weight"] ?? "?"), estimate norm \(a["norm"] ?? "?"), in flight \(a["inFlight"] ?? "?"), applied \(a["applied"] ?? "?"), sent \(a["sent"] ?? "?")\n"
            if let estimate = a["estimate"] as? [Double] {
                let shown = estimate.prefix(8).map { String(format: "%.6f", $0) }.joined(separator: ", ")
                out += "estimate: \(shown)\(estimate.count > 8 ? ", ... (\(estimate.count) elements)" : "")\n"
            }
        }
        if let l = state["learning"] as? [String: Any] {
            func figure(_ key: String, _ format: String) -> String { (l[key] as? Double).map { String(format: format, $0) } ?? "-" }
            out += "learning: \(l["model"] ?? "?") by \(l["algorithm"] ?? "?"), accuracy \(figure("accuracy", "%.4f")), loss \(figure("loss", "%.4f")), "
                + "rounds \(l["rounds"] ?? "?"), local steps \(l["local_steps"] ?? "?"), model age \(figure("model_age_seconds", "%.1f")) s, "
                + "bytes sent \(l["bytes_sent"] ?? "?"), received \(l["bytes_received"] ?? "?")\((l["joining"] as? Bool) == true ? " (joining)" : "")\n"
        }
        if let r = state["releases"] as? [String: Any], let models = r["models"] as? [String: [String: Any]], !models.isEmpty {
            out += "releases: " + models.sorted { $0.key < $1.key }.map { name, m in
                "\(name) " + ((m["active"] as? Int).map { "v\($0)" } ?? "none") + " (held \((m["held"] as? [Int] ?? []).map(String.init).joined(separator: ",")))"
            }.joined(separator: ", ") + "\n"
        }
        if let s = state["serving"] as? [String: Any] {
            out += "serving: \(s["models"] ?? "?") on \(s["url"] ?? "?"), answered \(s["answered"] ?? 0), refused \(s["refused"] ?? 0), busy \(s["busy"] ?? 0), batches \(s["batches"] ?? 0)\n"
        }
        if let r = state["rejected"] as? [String: Int] {
            out += "rejected: " + r.sorted { $0.key < $1.key }.filter { $0.value > 0 }.map { "\($0.key) \($0.value)" }.joined(separator: ", ") + "\n"
        }
        return out
    }

    /// The Prometheus text exposition of the state, built with swift-prometheus.
    static func prometheusText(_ state: [String: Any]) -> String {
        let registry = PrometheusCollectorRegistry()
        let peer = state["peer"] as? String ?? "unknown"
        func gauge(_ name: String, _ labels: [(String, String)], help: String) -> Gauge {
            registry.makeGauge(descriptor: MetricNameDescriptor(namespace: "murmuration", metricName: name, unitName: "", helpText: help), labels: labels)
        }
        func counter(_ name: String, _ labels: [(String, String)], help: String) -> Counter {
            registry.makeCounter(descriptor: MetricNameDescriptor(namespace: "murmuration", metricName: name, unitName: "total", helpText: help), labels: labels)
        }
        var byState: [String: Int] = ["alive": 0, "suspect": 0, "dead": 0, "left": 0]
        for m in state["members"] as? [[String: Any]] ?? [] {
            if let s = m["state"] as? String { byState[s, default: 0] += 1 }
        }
        for (s, n) in byState.sorted(by: { $0.key < $1.key }) {
            gauge("members", [("peer", peer), ("state", s)], help: "Known peers by membership state").set(Double(n))
        }
        if let a = state["averaging"] as? [String: Any] {
            for (key, help) in [("weight", "Push-sum weight held"), ("inFlight", "Transfers in flight"), ("norm", "Euclidean norm of the estimate")] {
                if let v = a[key] as? Double { gauge("averaging_\(snake(key))", [("peer", peer)], help: help).set(v) }
            }
            for key in ["sent", "applied", "acked", "reclaimed", "rejected", "duplicates"] {
                if let v = a[key] as? Double {
                    counter("averaging_\(snake(key))", [("peer", peer)], help: "Averaging transfers \(key)").increment(by: Int64(v))
                }
            }
        }
        if let l = state["learning"] as? [String: Any] {
            for (key, help) in [("accuracy", "Test accuracy of the peer's model"), ("loss", "Test loss of the peer's model"),
                                ("model_age_seconds", "Seconds since the model last changed"), ("rounds", "Training rounds applied"),
                                ("local_steps", "Local SGD steps applied"), ("bytes_sent", "Bytes sent"), ("bytes_received", "Bytes received")] {
                if let v = l[key] as? Double { gauge("learning_\(key)", [("peer", peer)], help: help).set(v) }
            }
        }
        if let r = state["releases"] as? [String: Any] {
            for (name, m) in (r["models"] as? [String: [String: Any]] ?? [:]).sorted(by: { $0.key < $1.key }) {
                gauge("release_active_version", [("peer", peer), ("model", name)], help: "Active release version of a model (0: none)").set(Double(m["active"] as? Int ?? 0))
            }
            for (reason, n) in (r["refused"] as? [String: Int] ?? [:]).sorted(by: { $0.key < $1.key }) {
                counter("releases_refused", [("peer", peer), ("reason", snake(reason))], help: "Release messages refused by reason").increment(by: Int64(n))
            }
        }
        if let s = state["serving"] as? [String: Any] {
            for key in ["answered", "refused", "busy", "batches", "rows"] {
                counter("serving_\(key)", [("peer", peer)], help: "Prediction server: \(key)").increment(by: Int64(s[key] as? Int ?? 0))
            }
        }
        for (reason, n) in (state["rejected"] as? [String: Int] ?? [:]).sorted(by: { $0.key < $1.key }) {
            counter("rejected", [("peer", peer), ("reason", snake(reason))], help: "Refused input by reason").increment(by: Int64(n))
        }
        for (key, n) in (state["traffic"] as? [String: Int] ?? [:]).sorted(by: { $0.key < $1.key }) {
            gauge(snake(key), [("peer", peer)], help: "Traffic: \(key)").set(Double(n))
        }
        return registry.emitToString()
    }

    /// `camelCase` as `snake_case`, for metric names and labels.
    static func snake(_ name: String) -> String {
        name.reduce(into: "") { out, c in
            if c.isUppercase { out += "_" + c.lowercased() } else { out.append(c) }
        }
    }
}

/// `peer leave`: ask a running node to leave gracefully.
struct Leave: ParsableCommand {
    static let configuration = CommandConfiguration(
        abstract: "Ask a running node to leave the network gracefully and exit.",
        discussion: "Same as SIGTERM: a signed leave notice, the averaging mass handed to a neighbour, then exit 0."
    )

    @Option(name: .customLong("data-dir"), help: "The node's --data-dir.")
    var dataDir: String

    func run() throws {
        let reply = try ControlClient.request("leave", dataDirectory: dataDir)
        printNote("node \(reply["peer"] as? String ?? "?") is leaving")
    }
}
