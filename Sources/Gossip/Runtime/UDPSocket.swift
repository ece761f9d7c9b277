import CLibUV
#if canImport(Glibc)
import Glibc
#endif

/// A bound UDP socket on an ``EventLoop``: datagrams in through ``onReceive``, out through
/// ``send(_:to:)``. Sends are queued by libuv; the bytes queued but not yet on the wire are
/// bounded by ``maxQueuedBytes``, beyond which a send is dropped and counted (a datagram may be
/// lost anyway, and the protocol retransmits what matters).
public final class UDPSocket {
    private let handle: UnsafeMutablePointer<uv_udp_t>
    private var closed = false
    /// Called with each datagram and the address it came from.
    public var onReceive: (([UInt8], Endpoint) -> Void)?
    /// Most bytes waiting in libuv's send queue. 4 MiB holds thousands of membership datagrams.
    public static let maxQueuedBytes = 4 << 20
    /// Datagrams dropped because the send queue was full or the send failed.
    public private(set) var dropped = 0
    public private(set) var sent = 0
    public private(set) var received = 0

    /// Binds `host:port` (port 0 picks one) and starts receiving. With `shared`, other sockets
    /// may bind the same address (every peer on a host receives the LAN beacons' group port).
    public init(loop: EventLoop, host: String, port: UInt16, shared: Bool = false) throws {
        handle = .allocate(capacity: 1)
        var rc = uv_udp_init(loop.loop, handle)
        guard rc == 0 else {
            handle.deallocate()
            throw UVError(rc, "uv_udp_init")
        }
        handle.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        let address = try SocketAddress(host: host, port: port)
        rc = address.withSockaddr { uv_udp_bind(handle, $0, shared ? UInt32(UV_UDP_REUSEADDR.rawValue) : 0) }
        if rc == 0 {
            rc = uv_udp_recv_start(handle, { _, suggested, buf in
                guard let buf else { return }
                let size = max(suggested, 65_536)
                buf.pointee = uv_buf_init(UnsafeMutablePointer<CChar>.allocate(capacity: size), UInt32(size))
            }, { h, nread, buf, addr, _ in
                defer { buf?.pointee.base?.deallocate() }
                guard nread > 0, let h, let data = h.pointee.data, let base = buf?.pointee.base, let addr else { return }
                let socket = Unmanaged<UDPSocket>.fromOpaque(data).takeUnretainedValue()
                var storage = sockaddr_storage()
                let length = addr.pointee.sa_family == sa_family_t(AF_INET6) ? MemoryLayout<sockaddr_in6>.size : MemoryLayout<sockaddr_in>.size
                withUnsafeMutableBytes(of: &storage) { $0.copyMemory(from: UnsafeRawBufferPointer(start: addr, count: length)) }
                guard let from = SocketAddress(storage: storage).endpoint else { return }
                socket.received += 1
                socket.onReceive?(Array(UnsafeRawBufferPointer(start: base, count: nread)), from)
            })
        }
        guard rc == 0 else {
            close()
            throw UVError(rc, "bind UDP \(Endpoint(host: host, port: port))")
        }
    }

    /// The port actually bound.
    public var port: UInt16 { SocketAddress.bound { uv_udp_getsockname(handle, $0, $1) }?.port ?? 0 }

    /// Queues `bytes` for `endpoint` (a numeric address). Dropped and counted when the queue is
    /// full or the address does not parse.
    public func send(_ bytes: [UInt8], to endpoint: Endpoint) {
        guard !closed, uv_udp_get_send_queue_size(handle) + bytes.count <= Self.maxQueuedBytes,
              let address = try? SocketAddress(host: endpoint.host, port: endpoint.port) else {
            dropped += 1
            return
        }
        let request = UnsafeMutablePointer<uv_udp_send_t>.allocate(capacity: 1)
        let storage = UnsafeMutablePointer<CChar>.allocate(capacity: max(1, bytes.count))
        bytes.withUnsafeBytes { UnsafeMutableRawBufferPointer(start: storage, count: bytes.count).copyMemory(from: $0) }
        request.pointee.data = UnsafeMutableRawPointer(storage)
        var buf = uv_buf_init(storage, UInt32(bytes.count))
        let rc = address.withSockaddr { sa in
            uv_udp_send(request, handle, &buf, 1, sa) { req, _ in
                req?.pointee.data?.deallocate()
                req?.deallocate()
            }
        }
        if rc != 0 {
            storage.deallocate()
            request.deallocate()
            dropped += 1
        } else {
            sent += 1
        }
    }

    /// Sends multicast datagrams out of the interface with address `interface` only, to the
    /// local network (TTL 1), and loops them back to other sockets of this host.
    public func multicast(through interface: String) throws {
        var rc = uv_udp_set_multicast_interface(handle, interface)
        if rc == 0 { rc = uv_udp_set_multicast_ttl(handle, 1) }
        if rc == 0 { rc = uv_udp_set_multicast_loop(handle, 1) }
        guard rc == 0 else { throw UVError(rc, "multicast through \(interface)") }
    }

    /// Receives the multicast `group` on the interface with address `interface`.
    public func join(group: String, interface: String) throws {
        let rc = uv_udp_set_membership(handle, group, interface, UV_JOIN_GROUP)
        guard rc == 0 else { throw UVError(rc, "join multicast group \(group) on \(interface)") }
    }

    /// Stops receiving and closes the socket.
    public func close() {
        guard !closed else { return }
        closed = true
        uv_udp_recv_stop(handle)
        handle.pointee.data = nil
        uv_close(UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_handle_t.self)) { h in
            UnsafeMutableRawPointer(h)?.deallocate()
        }
    }
}
