import ArgumentParser
import Foundation
import Gossip

/// A `HOST:PORT` from the command line. Its syntax is checked before the command does
/// anything; its host name is resolved when the command starts.
struct HostPort: CustomStringConvertible {
    /// A host name or a numeric address, without the brackets of `[IPv6]:PORT`.
    let host: String
    let port: UInt16

    init(host: String, port: UInt16) {
        self.host = host
        self.port = port
    }

    /// Parses `HOST:PORT` or `[IPv6]:PORT` given to `flag`; a usage error says what form is expected.
    init(parsing text: String, flag: String) throws {
        let form = "\(flag) expects HOST:PORT, e.g. 127.0.0.1:7000, localhost:7000 or [::1]:7000"
        let hostPart: Substring, portPart: Substring
        if text.hasPrefix("[") {
            guard let close = text.firstIndex(of: "]"), text[text.index(after: close)...].hasPrefix(":") else {
                throw ValidationError("\(form); got '\(text)'")
            }
            hostPart = text[text.index(after: text.startIndex)..<close]
            portPart = text[text.index(close, offsetBy: 2)...]
        } else {
            guard let colon = text.lastIndex(of: ":") else { throw ValidationError("\(form); got '\(text)', which has no port") }
            hostPart = text[..<colon]
            portPart = text[text.index(after: colon)...]
            guard !hostPart.contains(":") else {
                throw ValidationError("\(flag): write an IPv6 address in brackets, e.g. [\(hostPart)]:\(portPart); got '\(text)'")
            }
        }
        guard !hostPart.isEmpty else { throw ValidationError("\(form); got '\(text)', which has no host") }
        guard let port = UInt16(portPart) else {
            throw ValidationError("\(flag): port must be a number from 0 to 65535; got '\(portPart)' in '\(text)'")
        }
        self.init(host: String(hostPart), port: port)
    }

    /// `host:port`, or `[host]:port` for an IPv6 address, as it would be typed back.
    var description: String { host.contains(":") ? "[\(host)]:\(port)" : "\(host):\(port)" }

    /// The same endpoint with its host resolved to a numeric address (IPv4 preferred, as
    /// `localhost` on most machines is both); a name that does not resolve is an error.
    func resolved() throws -> HostPort {
        var hints = addrinfo()
        hints.ai_family = AF_UNSPEC
        hints.ai_socktype = Int32(SOCK_STREAM.rawValue)
        var list: UnsafeMutablePointer<addrinfo>?
        let rc = getaddrinfo(host, nil, &hints, &list)
        guard rc == 0, let list else {
            throw UserFacingError("cannot resolve host '\(host)': \(String(cString: gai_strerror(rc))); check the name or give a numeric address")
        }
        defer { freeaddrinfo(list) }
        var candidates: [UnsafeMutablePointer<addrinfo>] = []
        var next: UnsafeMutablePointer<addrinfo>? = list
        while let entry = next {
            candidates.append(entry)
            next = entry.pointee.ai_next
        }
        let chosen = candidates.first { $0.pointee.ai_family == AF_INET } ?? list
        var name = [CChar](repeating: 0, count: Int(NI_MAXHOST))
        guard getnameinfo(chosen.pointee.ai_addr, chosen.pointee.ai_addrlen, &name, socklen_t(name.count), nil, 0, NI_NUMERICHOST) == 0 else {
            throw UserFacingError("cannot resolve host '\(host)' to a numeric address")
        }
        return HostPort(host: String(decoding: name.prefix { $0 != 0 }.map { UInt8(bitPattern: $0) }, as: UTF8.self), port: port)
    }
}

/// A libuv error without the name of the call that failed: "connection refused (ECONNREFUSED)".
func reason(_ error: Error) -> String {
    guard let uv = error as? UVError else { return "\(error)" }
    let text = uv.description
    return text.hasPrefix(uv.operation + ": ") ? String(text.dropFirst(uv.operation.count + 2)) : text
}
