import Foundation
#if canImport(Glibc)
import Glibc
#endif

/// A minimal HTTP/1.1 client on one keep-alive TCP connection (POSIX sockets, Nagle off):
/// it sends prepared requests that carry a Content-Length and reads each response by its
/// Content-Length. Enough to time round trips to our own server with next to no client cost.
final class KeepAliveHTTPClient {
    private let socket: Int32
    /// Bytes received beyond the end of the last response.
    private var pending: [UInt8] = []
    private var chunk = [UInt8](repeating: 0, count: 1 << 16)

    /// Connects to `host` (an IPv4 address) on `port`.
    init(host: String, port: UInt16) throws {
        var address = sockaddr_in()
        address.sin_family = sa_family_t(AF_INET)
        address.sin_port = port.bigEndian
        guard inet_pton(AF_INET, host, &address.sin_addr) == 1 else { throw BenchFailure("\(host) is not an IPv4 address") }
        socket = Glibc.socket(AF_INET, Int32(SOCK_STREAM.rawValue), 0)
        guard socket >= 0 else { throw BenchFailure("socket: \(String(cString: strerror(errno)))") }
        var one: Int32 = 1
        setsockopt(socket, Int32(IPPROTO_TCP), TCP_NODELAY, &one, socklen_t(MemoryLayout<Int32>.size))
        let connected = withUnsafePointer(to: &address) {
            $0.withMemoryRebound(to: sockaddr.self, capacity: 1) { connect(socket, $0, socklen_t(MemoryLayout<sockaddr_in>.size)) }
        }
        guard connected == 0 else {
            let reason = String(cString: strerror(errno))
            close(socket)
            throw BenchFailure("connect to \(host):\(port): \(reason)")
        }
    }

    deinit { close(socket) }

    /// The bytes of `POST path` with a JSON `body`, for ``send(_:)``.
    static func post(_ path: String, host: String, json body: String) -> [UInt8] {
        let body = Array(body.utf8)
        let head = "POST \(path) HTTP/1.1\r\nHost: \(host)\r\nContent-Type: application/json\r\nContent-Length: \(body.count)\r\n\r\n"
        return Array(head.utf8) + body
    }

    /// Sends one prepared request and reads its response: the status code and the body.
    func send(_ request: [UInt8]) throws -> (status: Int, body: [UInt8]) {
        try request.withUnsafeBytes { bytes in
            guard let base = bytes.baseAddress else { return }
            var sent = 0
            while sent < bytes.count {
                let n = Glibc.send(socket, base + sent, bytes.count - sent, Int32(MSG_NOSIGNAL))
                guard n > 0 else { throw BenchFailure("send: \(String(cString: strerror(errno)))") }
                sent += n
            }
        }
        var headerEnd = try readUntilHeaderEnd()
        let head = String(decoding: pending[..<headerEnd], as: UTF8.self)
        let lines = head.split(separator: "\r\n")
        guard let statusLine = lines.first, let status = statusLine.split(separator: " ").dropFirst().first.flatMap({ Int($0) }) else {
            throw BenchFailure("not an HTTP response: \(lines.first ?? "")")
        }
        let lengthLine = lines.first { $0.lowercased().hasPrefix("content-length:") }
        guard let length = lengthLine.flatMap({ Int($0.dropFirst("content-length:".count).trimmingCharacters(in: .whitespaces)) }) else {
            throw BenchFailure("the response has no Content-Length")
        }
        headerEnd += 4
        while pending.count < headerEnd + length { try receive() }
        let body = Array(pending[headerEnd..<(headerEnd + length)])
        pending.removeFirst(headerEnd + length)
        return (status, body)
    }

    /// Where the blank line that ends the response's head starts, reading as needed.
    private func readUntilHeaderEnd() throws -> Int {
        var searched = 0
        while true {
            if pending.count >= 4 {
                for i in max(0, searched - 3)...(pending.count - 4)
                where pending[i] == 13 && pending[i + 1] == 10 && pending[i + 2] == 13 && pending[i + 3] == 10 {
                    return i
                }
                searched = pending.count
            }
            try receive()
        }
    }

    private func receive() throws {
        let n = chunk.withUnsafeMutableBytes { recv(socket, $0.baseAddress, $0.count, 0) }
        guard n > 0 else { throw BenchFailure(n == 0 ? "the server closed the connection" : "recv: \(String(cString: strerror(errno)))") }
        pending += chunk[..<n]
    }
}
