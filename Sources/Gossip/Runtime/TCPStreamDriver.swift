import CLibUV

/// A TCP connection on an ``EventLoop``: bytes in through ``onRead``, bytes out through
/// ``write(_:)``. It keeps itself alive while the socket is open and releases itself when closed.
public final class TCPConnection {
    let handle: UnsafeMutablePointer<uv_tcp_t>
    /// Called with each chunk of received bytes.
    public var onRead: (([UInt8]) -> Void)?
    /// Called once when the stream ends: nil for a clean end of stream, else the error.
    public var onEnd: ((UVError?) -> Void)?
    /// Called once after the handle closed.
    public var onClose: (() -> Void)?
    private var closing = false
    /// Bytes written to / read from the socket.
    public private(set) var bytesWritten = 0
    public private(set) var bytesRead = 0

    init(loop: EventLoop) throws {
        handle = .allocate(capacity: 1)
        let rc = uv_tcp_init(loop.loop, handle)
        guard rc == 0 else {
            handle.deallocate()
            throw UVError(rc, "uv_tcp_init")
        }
        // Retained until the close callback.
        handle.pointee.data = Unmanaged.passRetained(self).toOpaque()
    }

    var stream: UnsafeMutablePointer<uv_stream_t> { UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_stream_t.self) }

    static func from(_ p: UnsafeMutableRawPointer?) -> TCPConnection? {
        guard let p, let data = p.assumingMemoryBound(to: uv_handle_t.self).pointee.data else { return nil }
        return Unmanaged<TCPConnection>.fromOpaque(data).takeUnretainedValue()
    }

    /// Starts delivering received bytes to ``onRead``.
    public func startReading() throws {
        let rc = uv_read_start(stream, { _, suggested, buf in
            guard let buf else { return }
            let size = max(suggested, 65_536)
            buf.pointee = uv_buf_init(UnsafeMutablePointer<CChar>.allocate(capacity: size), UInt32(size))
        }, { s, nread, buf in
            defer { buf?.pointee.base?.deallocate() }
            guard let connection = TCPConnection.from(UnsafeMutableRawPointer(s)) else { return }
            if nread > 0, let base = buf?.pointee.base {
                connection.bytesRead += nread
                let bytes = UnsafeRawBufferPointer(start: base, count: nread)
                connection.onRead?(Array(bytes))
            } else if nread < 0 {
                let end = connection.onEnd
                connection.onEnd = nil
                end?(Int32(nread) == UV_EOF.rawValue ? nil : UVError(Int32(nread), "read"))
                connection.close()
            }
        })
        guard rc == 0 else { throw UVError(rc, "uv_read_start") }
    }

    /// Queues `bytes` for writing (copied).
    public func write(_ bytes: [UInt8]) {
        guard !closing, !bytes.isEmpty else { return }
        let request = UnsafeMutablePointer<uv_write_t>.allocate(capacity: 1)
        let storage = UnsafeMutablePointer<CChar>.allocate(capacity: bytes.count)
        bytes.withUnsafeBytes { UnsafeMutableRawBufferPointer(start: storage, count: bytes.count).copyMemory(from: $0) }
        request.pointee.data = UnsafeMutableRawPointer(storage)
        var buf = uv_buf_init(storage, UInt32(bytes.count))
        bytesWritten += bytes.count
        let rc = uv_write(request, stream, &buf, 1) { req, status in
            guard let req else { return }
            req.pointee.data?.deallocate()
            if status < 0, let s = req.pointee.handle, let connection = TCPConnection.from(UnsafeMutableRawPointer(s)) {
                let end = connection.onEnd
                connection.onEnd = nil
                end?(UVError(status, "write"))
                connection.close()
            }
            req.deallocate()
        }
        if rc != 0 {
            storage.deallocate()
            request.deallocate()
            let end = onEnd
            onEnd = nil
            end?(UVError(rc, "uv_write"))
            close()
        }
    }

    /// Closes the socket after queued writes; ``onClose`` runs when done.
    public func close() {
        guard !closing else { return }
        closing = true
        let shutdown = UnsafeMutablePointer<uv_shutdown_t>.allocate(capacity: 1)
        let rc = uv_shutdown(shutdown, stream) { req, _ in
            if let s = req?.pointee.handle, let connection = TCPConnection.from(UnsafeMutableRawPointer(s)) {
                connection.closeHandle()
            }
            req?.deallocate()
        }
        if rc != 0 {
            shutdown.deallocate()
            closeHandle()
        }
    }

    private func closeHandle() {
        uv_close(UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_handle_t.self)) { h in
            guard let h, let data = h.pointee.data else { return }
            let connection = Unmanaged<TCPConnection>.fromOpaque(data).takeRetainedValue()
            h.pointee.data = nil
            connection.onClose?()
            connection.onClose = nil
            connection.onRead = nil
            connection.handle.deallocate()
        }
    }

    /// Connects to `host:port`; `completion` receives the connection or the error.
    public static func connect(loop: EventLoop, host: String, port: UInt16,
                               completion: @escaping (Result<TCPConnection, UVError>) -> Void) throws {
        let address = try SocketAddress(host: host, port: port)
        let connection = try TCPConnection(loop: loop)
        let request = UnsafeMutablePointer<uv_connect_t>.allocate(capacity: 1)
        request.pointee.data = Unmanaged.passRetained(ConnectBox(completion)).toOpaque()
        let rc = address.withSockaddr { sa in
            uv_tcp_connect(request, connection.handle, sa) { req, status in
                guard let req else { return }
                defer { req.deallocate() }
                guard let data = req.pointee.data else { return }
                let box = Unmanaged<ConnectBox>.fromOpaque(data).takeRetainedValue()
                guard let s = req.pointee.handle, let connection = TCPConnection.from(UnsafeMutableRawPointer(s)) else { return }
                if status < 0 {
                    connection.closeHandle()
                    box.completion(.failure(UVError(status, "connect")))
                } else {
                    box.completion(.success(connection))
                }
            }
        }
        if rc != 0 {
            if let data = request.pointee.data { Unmanaged<ConnectBox>.fromOpaque(data).release() }
            request.deallocate()
            connection.closeHandle()
            throw UVError(rc, "uv_tcp_connect")
        }
    }

    private final class ConnectBox {
        let completion: (Result<TCPConnection, UVError>) -> Void
        init(_ completion: @escaping (Result<TCPConnection, UVError>) -> Void) { self.completion = completion }
    }
}

/// A listening TCP socket that hands each accepted connection to ``onAccept``.
public final class TCPListener {
    private let handle: UnsafeMutablePointer<uv_tcp_t>
    private let onAccept: (TCPConnection) -> Void
    private let loop: EventLoop
    /// Pending-connection queue length passed to `listen(2)`; small because a node accepts
    /// few concurrent model transfers.
    public static let backlog: Int32 = 64

    /// Binds `host:port` and starts listening.
    public init(loop: EventLoop, host: String, port: UInt16, onAccept: @escaping (TCPConnection) -> Void) throws {
        self.loop = loop
        self.onAccept = onAccept
        handle = .allocate(capacity: 1)
        var rc = uv_tcp_init(loop.loop, handle)
        guard rc == 0 else {
            handle.deallocate()
            throw UVError(rc, "uv_tcp_init")
        }
        handle.pointee.data = Unmanaged.passUnretained(self).toOpaque()
        let address = try SocketAddress(host: host, port: port)
        rc = address.withSockaddr { uv_tcp_bind(handle, $0, 0) }
        if rc == 0 {
            rc = uv_listen(UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_stream_t.self), Self.backlog) { server, status in
                guard status >= 0, let server, let data = server.pointee.data else { return }
                let listener = Unmanaged<TCPListener>.fromOpaque(data).takeUnretainedValue()
                guard let client = try? TCPConnection(loop: listener.loop) else { return }
                if uv_accept(server, client.stream) == 0 {
                    listener.onAccept(client)
                } else {
                    client.close()
                }
            }
        }
        guard rc == 0 else {
            close()
            throw UVError(rc, "listen on \(host):\(port)")
        }
    }

    /// The port actually bound (useful with port 0).
    public var port: UInt16 {
        var storage = sockaddr_storage()
        var length = Int32(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutableBytes(of: &storage) { raw in
            uv_tcp_getsockname(handle, raw.baseAddress?.assumingMemoryBound(to: sockaddr.self), &length)
        }
        guard rc == 0 else { return 0 }
        return withUnsafeBytes(of: storage) { raw in
            let sin = raw.load(as: sockaddr_in.self)
            return UInt16(bigEndian: sin.sin_port)
        }
    }

    /// Stops listening.
    public func close() {
        guard handle.pointee.data != nil else { return }
        handle.pointee.data = nil
        uv_close(UnsafeMutableRawPointer(handle).assumingMemoryBound(to: uv_handle_t.self)) { h in
            UnsafeMutableRawPointer(h)?.deallocate()
        }
    }
}
