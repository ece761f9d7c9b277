import Foundation
import Testing

/// A minimal HTTP/1.1 client on a POSIX socket: one request per connection.
enum HTTP {
    struct Reply {
        var status: Int
        var body: Data
        var json: [String: Any]? { try? JSONSerialization.jsonObject(with: body) as? [String: Any] }
    }

    /// A socket connected to 127.0.0.1:`port`, reads timing out after 10 s.
    static func connected(port: UInt16) throws -> Int32 {
        let fd = socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard fd >= 0 else { throw POSIXError(.EMFILE) }
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        address.sin_addr.s_addr = inet_addr("127.0.0.1")
        var timeout = timeval(tv_sec: 10, tv_usec: 0)
        setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &timeout, socklen_t(MemoryLayout<timeval>.size))
        let connected = withUnsafePointer(to: &address) { $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(fd, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) } }
        guard connected == 0 else {
            close(fd)
            throw POSIXError(.ECONNREFUSED)
        }
        return fd
    }

    static func request(_ method: String, port: UInt16, path: String, body: Data = Data()) throws -> Reply {
        let fd = try connected(port: port)
        defer { close(fd) }
        var message = Data("\(method) \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\nConnection: close\r\n\r\n".utf8)
        message.append(body)
        var sent = 0
        while sent < message.count {
            let n = message.withUnsafeBytes { send(fd, $0.baseAddress! + sent, $0.count - sent, Int32(MSG_NOSIGNAL)) }
            // A server may answer (413) and close before it has read a large body.
            if n <= 0 { break }
            sent += n
        }
        var reply = Data()
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            let n = read(fd, &buffer, buffer.count)
            if n <= 0 { break }
            reply.append(contentsOf: buffer[..<n])
        }
        guard let headerEnd = reply.range(of: Data("\r\n\r\n".utf8)),
              let statusLine = String(data: reply[..<headerEnd.lowerBound], encoding: .utf8)?.split(separator: "\r\n").first,
              let status = Int(statusLine.split(separator: " ").dropFirst().first ?? "") else {
            throw POSIXError(.EBADMSG)
        }
        return Reply(status: status, body: reply[headerEnd.upperBound...])
    }

    /// The status and body of the answer to `POST path` on an open keep-alive connection `fd`,
    /// read by its Content-Length.
    static func post(_ path: String, body: Data, on fd: Int32) throws -> Reply {
        let message = Data("POST \(path) HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n\r\n".utf8) + body
        guard message.withUnsafeBytes({ send(fd, $0.baseAddress, $0.count, Int32(MSG_NOSIGNAL)) }) == message.count else { throw POSIXError(.EPIPE) }
        var reply = Data()
        var buffer = [UInt8](repeating: 0, count: 65_536)
        while true {
            if let headerEnd = reply.range(of: Data("\r\n\r\n".utf8)), let head = String(data: reply[..<headerEnd.lowerBound], encoding: .utf8) {
                let lines = head.split(separator: "\r\n")
                guard let status = lines.first.flatMap({ Int($0.split(separator: " ").dropFirst().first ?? "") }),
                      let length = lines.first(where: { $0.lowercased().hasPrefix("content-length:") }).flatMap({ Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) })
                else { throw POSIXError(.EBADMSG) }
                if reply.count >= headerEnd.upperBound + length {
                    return Reply(status: status, body: reply[headerEnd.upperBound..<(headerEnd.upperBound + length)])
                }
            }
            let n = read(fd, &buffer, buffer.count)
            guard n > 0 else { throw POSIXError(.ECONNRESET) }
            reply.append(contentsOf: buffer[..<n])
        }
    }

    /// A KServe v2 inference request for `rows` of 784 features.
    static func inferBody(_ rows: [[Float]], id: String = "r") -> Data {
        let object: [String: Any] = ["id": id, "inputs": [["name": "input", "datatype": "FP32", "shape": [rows.count, rows.first?.count ?? 0],
                                                        "data": rows.flatMap { $0 }.map(Double.init)]]]
        return (try? JSONSerialization.data(withJSONObject: object)) ?? Data()
    }
}

/// The first `count` Fashion-MNIST test images, as raw pixel values.
func fashionImages(_ count: Int) throws -> [[Float]] {
    let gunzip = Process()
    gunzip.executableURL = URL(fileURLWithPath: "/bin/gzip")
    gunzip.arguments = ["-dc", "/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz"]
    let pipe = Pipe()
    gunzip.standardOutput = pipe
    try gunzip.run()
    let data = pipe.fileHandleForReading.readDataToEndOfFile()
    gunzip.waitUntilExit()
    let bytes = [UInt8](data)
    return (0..<count).map { i in (0..<784).map { Float(bytes[16 + i * 784 + $0]) } }
}

/// What `peer predict` says each of `images` is, with the model file `model`.
func predictedClasses(_ model: String, _ images: [[Float]], in scratch: Scratch) throws -> [Int] {
    let csv = try scratch.write("images.csv", images.map { $0.map { String(Int($0)) }.joined(separator: ",") }.joined(separator: "\n"))
    let result = try CommandRunner.peer("predict", "--model", model, "--input", csv, in: scratch.url)
    #expect(result.status == 0, "\(result.stderr)")
    return result.stdout.split(separator: "\n").compactMap { $0.split(separator: "\t").last.flatMap { Int($0) } }
}

func classes(_ reply: HTTP.Reply) -> [Int]? {
    let outputs = reply.json?["outputs"] as? [[String: Any]]
    return outputs?.first { $0["name"] as? String == "class" }?["data"] as? [Int]
}

func probabilities(_ reply: HTTP.Reply) -> [Double]? {
    let outputs = reply.json?["outputs"] as? [[String: Any]]
    return outputs?.first { $0["name"] as? String == "probabilities" }?["data"] as? [Double]
}

@Suite("serving predictions over HTTP", .serialized)
struct ServingTests {
    /// The port in "serving predictions on http://HOST:PORT/v2".
    static func servingPort(_ process: RunningCommand) throws -> UInt16 {
        let line = try #require(process.waitForStderrLine(containing: "serving predictions on http://"), "\(process.stderrSoFar)")
        let address = try #require(line.components(separatedBy: "http://").last?.split(separator: "/").first)
        return try #require(address.split(separator: ":").last.flatMap { UInt16($0) })
    }

    @Test("peer serve answers KServe v2 requests like peer predict, refuses bad ones with 4xx and keeps serving, and swaps in a rewritten model file")
    func serveAModelFile() throws {
        let net = try PeerNetwork()
        try ReleaseTests.trainModels(net)
        let images = try fashionImages(32)
        let expected1 = try predictedClasses("m1.model", images, in: net.scratch)
        let expected2 = try predictedClasses("m2.model", images, in: net.scratch)
        try FileManager.default.copyItem(atPath: net.scratch.path("m1.model"), toPath: net.scratch.path("served.model"))
        let server = try CommandRunner.start("peer", ["serve", "--model", "served.model", "--listen", "127.0.0.1:0", "--max-body", "200000"], in: net.scratch.url)
        defer { if server.process.isRunning { kill(server.process.processIdentifier, SIGKILL) } }
        let port = try Self.servingPort(server)

        #expect(try HTTP.request("GET", port: port, path: "/v2/health/ready").status == 200)
        let metadata = try HTTP.request("GET", port: port, path: "/v2/models/served")
        #expect(metadata.status == 200)
        #expect(((metadata.json?["inputs"] as? [[String: Any]])?.first?["shape"] as? [Int]) == [-1, 784])
        let answer = try HTTP.request("POST", port: port, path: "/v2/models/served/infer", body: HTTP.inferBody(images, id: "first"))
        #expect(answer.status == 200, "\(String(decoding: answer.body, as: UTF8.self))")
        #expect(classes(answer) == expected1)
        #expect(answer.json?["id"] as? String == "first")
        let p = try #require(probabilities(answer))
        #expect(p.count == 32 * 10)
        for row in 0..<32 { #expect(abs(p[(row * 10)..<(row * 10 + 10)].reduce(0, +) - 1) < 1e-4) }

        // Bad requests: each a 4xx naming the problem.
        let tooBig = try HTTP.request("POST", port: port, path: "/v2/models/served/infer", body: Data(repeating: 32, count: 300_000))
        #expect(tooBig.status == 413)
        let malformed = try HTTP.request("POST", port: port, path: "/v2/models/served/infer", body: Data("{\"inputs\": 3}".utf8))
        #expect(malformed.status == 400)
        #expect((malformed.json?["error"] as? String)?.contains("inputs") == true)
        let wrongShape = try HTTP.request("POST", port: port, path: "/v2/models/served/infer", body: HTTP.inferBody([[1, 2, 3]]))
        #expect(wrongShape.status == 400)
        #expect((wrongShape.json?["error"] as? String)?.contains("[BATCH, 784]") == true)
        let unknown = try HTTP.request("POST", port: port, path: "/v2/models/nothing/infer", body: HTTP.inferBody(images))
        #expect(unknown.status == 404)
        #expect(try HTTP.request("POST", port: port, path: "/v2/models/served/infer", body: HTTP.inferBody(images)).status == 200)

        // A rewritten file: the new model answers after the next check, whole.
        let replacement = try Data(contentsOf: URL(fileURLWithPath: net.scratch.path("m2.model")))
        try replacement.write(to: URL(fileURLWithPath: net.scratch.path("served.model")), options: .atomic)
        #expect(server.waitForStderrLine(containing: "reloaded") != nil, "\(server.stderrSoFar)")
        #expect(classes(try HTTP.request("POST", port: port, path: "/v2/models/served/infer", body: HTTP.inferBody(images))) == expected2)
        server.process.interrupt()
        #expect(try server.wait().status == 0)
    }

    @Test("peer serve answers one request after another on one keep-alive connection at once, not a delayed acknowledgement (40 ms) later, and prints only its URL on standard output")
    func keepAliveRequestsAreAnsweredAtOnce() throws {
        let scratch = try Scratch()
        let trained = try CommandRunner.peer("train", "--data", "fashion-mnist", "--model", "mlp:16", "--epochs", "1", "--out", "m.model", in: scratch.url)
        #expect(trained.status == 0, "\(trained.stderr)")
        let server = try CommandRunner.start("peer", ["serve", "--model", "m.model", "--listen", "127.0.0.1:0", "--batch-window", "0"], in: scratch.url)
        defer { if server.process.isRunning { kill(server.process.processIdentifier, SIGKILL) } }
        let port = try Self.servingPort(server)
        let fd = try HTTP.connected(port: port)
        defer { close(fd) }
        let body = HTTP.inferBody(try fashionImages(1))
        var seconds: [Double] = []
        for _ in 0..<20 {
            let start = Date()
            let reply = try HTTP.post("/v2/models/m/infer", body: body, on: fd)
            seconds.append(Date().timeIntervalSince(start))
            #expect(reply.status == 200)
        }
        // With Nagle's algorithm on the server's socket, every answer after the first took over 40 ms.
        let median = seconds.sorted()[seconds.count / 2]
        #expect(median < 0.02, "round trips: \(seconds.map { String(format: "%.1f ms", $0 * 1000) })")
        server.process.interrupt()
        let result = try server.wait()
        #expect(result.status == 0)
        #expect(result.stdout == "http://127.0.0.1:\(port)\n", "standard output: \(result.stdout.prefix(300))")
    }

    @Test("a training peer with --serve serves its own model as local, swapped in as it trains")
    func trainingPeerServesItsOwnModel() throws {
        let net = try PeerNetwork()
        try net.start(0, extra: ["--serve", "127.0.0.1:0", "--no-beacons", "--eval-interval", "1"],
                      workload: ["--data", "fashion-mnist", "--model", "softmax", "--normalize", "none", "--train-interval", "20"])
        let port = try Self.servingPort(try #require(net.processes[0]))
        let deadline = Date().addingTimeInterval(60)
        var ready = try HTTP.request("GET", port: port, path: "/v2/models/local/ready")
        while ready.status != 200 && Date() < deadline {
            usleep(300_000)
            ready = try HTTP.request("GET", port: port, path: "/v2/models/local/ready")
        }
        #expect(ready.status == 200, "the training peer never served its model")
        let first = try #require(ready.json?["version"] as? String)
        #expect(first.hasPrefix("round "))
        let images = try fashionImages(8)
        let answer = try HTTP.request("POST", port: port, path: "/v2/models/local/infer", body: HTTP.inferBody(images))
        #expect(answer.status == 200 && classes(answer)?.count == 8, "\(String(decoding: answer.body, as: UTF8.self))")
        // A later checkpoint replaces it.
        var later = first
        while later == first && Date() < deadline {
            usleep(300_000)
            later = try HTTP.request("GET", port: port, path: "/v2/models/local/ready").json?["version"] as? String ?? first
        }
        #expect(later != first, "the served model did not follow training")
        #expect((try net.status(0)["serving"] as? [String: Any])?["answered"] as? Int == 1)
        // Standard output stays the peer's ID alone: the server's address goes to standard error.
        let peer = try #require(net.processes[0])
        peer.process.interrupt()
        let stdout = try peer.wait().stdout.split(separator: "\n")
        #expect(stdout.count == 1 && stdout.first?.count == 64, "\(stdout)")
    }

    @Test("a client sending requests continuously to peer join --serve while three releases activate and one is rolled back sees no failed request, each answer from one whole model")
    func servingThroughARollingSwap() throws {
        let net = try PeerNetwork()
        let publisher = try ReleaseTests.publisher(net)
        try ReleaseTests.trainModels(net)
        // Each version a fine-tuning of the one before, far enough apart to tell them apart.
        for version in 2...4 {
            let tuned = try CommandRunner.peer("train", "--data", "fashion-mnist", "--model", "mlp:128", "--epochs", "1", "--init-model", "m\(version - 1).model",
                                               "--lr", "0.02", "--momentum", "0", "--seed", "\(version)", "--out", "m\(version).model", in: net.scratch.url)
            #expect(tuned.status == 0, "\(tuned.stderr)")
        }
        let images = try fashionImages(256)
        var expected: [String: [Int]] = [:]
        for v in 1...4 { expected["\(v)"] = try predictedClasses("m\(v).model", images, in: net.scratch) }
        #expect(Set(expected.values).count == 4, "the four models should tell at least one of the 256 images apart")

        let trust = ["--publisher", publisher, "--no-beacons"]
        try net.start(0, extra: trust, workload: [])
        // A 10 ms window: decoding a request's JSON takes milliseconds when the test run keeps
        // both cores busy, and with 1 ms one CI run saw all 478 requests in 478 batches.
        try net.start(1, extra: trust + ["--serve", "127.0.0.1:0", "--batch-window", "10000"], workload: [])
        let port = try Self.servingPort(try #require(net.processes[1]))
        #expect(try net.waitUntil([0, 1], seconds: 30) { members($0).values.filter { $0 == "alive" }.count == 1 })
        func publish(_ v: Int) throws {
            let r = try CommandRunner.peer("publish", "m\(v).model", "--name", "fashion", "--version", "\(v)", "--data-dir", "d0", in: net.scratch.url)
            #expect(r.status == 0, "\(r.stderr)")
        }
        try publish(1)
        #expect(try net.waitUntil([1], seconds: 30) { release($0, "fashion").active == 1 })

        // Four clients, each sending batches of 8 images in turn until told to stop.
        let stop = Mutexed(false)
        let log = Mutexed<[(status: Int, version: String?, offset: Int, classes: [Int]?, sent: Date)]>([])
        let group = DispatchGroup()
        for client in 0..<4 {
            DispatchQueue.global().async(group: group) {
                var offset = client * 8
                while !stop.get() {
                    let rows = Array(images[offset..<(offset + 8)])
                    let sent = Date()
                    let reply = try? HTTP.request("POST", port: port, path: "/v2/models/fashion/infer", body: HTTP.inferBody(rows))
                    let entry = (status: reply?.status ?? -1, version: reply?.json?["model_version"] as? String, offset: offset,
                                 classes: reply.flatMap(classes), sent: sent)
                    log.update { $0.append(entry) }
                    offset = (offset + 32) % images.count
                }
            }
        }
        for v in 2...4 {
            usleep(1_500_000)
            try publish(v)
            #expect(try net.waitUntil([1], seconds: 30) { release($0, "fashion").active == v })
        }
        usleep(1_000_000)
        #expect(try CommandRunner.peer("rollback", "fashion", "4", "--data-dir", "d0", in: net.scratch.url).status == 0)
        #expect(try net.waitUntil([1], seconds: 30) { release($0, "fashion").active == 3 })
        let rolledBack = Date()
        usleep(1_500_000)
        stop.set(true)
        group.wait()

        let answers = log.get()
        let failed = answers.filter { $0.status != 200 }
        let versions = answers.compactMap(\.version)
        print("rolling swap: \(answers.count) requests, \(failed.count) failed; versions seen in order: \(versions.reduce(into: [String]()) { if $0.last != $1 { $0.append($1) } })")
        #expect(answers.count > 50)
        #expect(failed.isEmpty, "failed: \(failed.prefix(5))")
        #expect(Set(versions) == ["1", "2", "3", "4"])
        // Every answer is exactly what its model version says of those images.
        let mismatched = answers.filter { a in a.classes != a.version.flatMap { expected[$0] }.map { Array($0[a.offset..<(a.offset + 8)]) } }
        #expect(mismatched.isEmpty, "\(mismatched.count) answers match no whole model, e.g. \(mismatched.prefix(3))")
        // Four clients at once: micro-batches held several requests.
        let serving = try #require(try net.status(1)["serving"] as? [String: Any])
        let batches = serving["batches"] as? Int ?? 0, answered = serving["answered"] as? Int ?? 0
        print("micro-batching: \(answered) requests in \(batches) batches")
        #expect(answered >= answers.count && batches > 0 && batches < answered, "\(serving)")
        // Requests sent once the peer said it runs version 3 again are answered by version 3.
        let late = answers.filter { $0.sent > rolledBack }
        #expect(!late.isEmpty && late.allSatisfy { $0.version == "3" }, "\(late.map(\.version))")
    }
}

/// A value shared between threads (a test's own, so the tests need no project module).
final class Mutexed<Value>: @unchecked Sendable {
    private var value: Value
    private let lock = NSLock()
    init(_ value: Value) { self.value = value }
    func get() -> Value { lock.withLock { value } }
    func set(_ v: Value) { lock.withLock { value = v } }
    func update(_ body: (inout Value) -> Void) { lock.withLock { body(&value) } }
}
