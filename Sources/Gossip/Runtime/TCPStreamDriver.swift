import CLibUV

/// A stream connection on an ``EventLoop`` (a TCP socket, or a Unix-domain socket for the
/// control channel): bytes in through ``onRead``, bytes out through ``write(_:)``. It keeps
/// itself alive while the socket is open and releases itself when closed.
public final class StreamConnection {
    /// The libuv handle: a `uv_tcp_t` or a `uv_pipe_t`, both `uv_stream_t`s.
    let raw: UnsafeMutableRawPointer
    var handle: UnsafeMutablePointer<uv_tcp_t> { raw.assumingMemoryBound(to: uv_tcp_t.self) }
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

    /// A TCP socket (`pipe: false`) or a Unix-domain socket (`pipe: true`), not yet connected.
    init(loop: EventLoop, pipe: Bool = false) throws {
        let size = pipe ? MemoryLayout<uv_pipe_t>.size : MemoryLayout<uv_tcp_t>.size
        raw = .allocate(byteCount: size, alignment: 16)
        let rc = pipe ? uv_pipe_init(loop.loop, raw.assumingMemoryBound(to: uv_pipe_t.self), 0)
                      : uv_tcp_init(loop.loop, raw.assumingMemoryBound(to: uv_tcp_t.self))
        guard rc == 0 else {
            raw.deallocate()
            throw UVError(rc, pipe ? "uv_pipe_init" : "uv_tcp_init")
        }
        // Retained until the close callback.
        raw.assumingMemoryBound(to: uv_handle_t.self).pointee.data = Unmanaged.passRetained(self).toOpaque()
    }

    var stream: UnsafeMutablePointer<uv_stream_t> { raw.assumingMemoryBound(to: uv_stream_t.self) }

    static func from(_ p: UnsafeMutableRawPointer?) -> StreamConnection? {
        guard let p, let data = p.assumingMemoryBound(to: uv_handle_t.self).pointee.data else { return nil }
        return Unmanaged<StreamConnection>.fromOpaque(data).takeUnretainedValue()
    }

    /// The remote address of a TCP connection, if the socket has one.
    public var remoteEndpoint: Endpoint? {
        var storage = sockaddr_storage()
        var length = Int32(MemoryLayout<sockaddr_storage>.size)
        let rc = withUnsafeMutableBytes(of: &storage) { b in
            uv_tcp_getpeername(handle, b.baseAddress?.assumingMemoryBound(to: sockaddr.self), &length)
        }
        guard rc == 0 else { return nil }
        return SocketAddress(storage: storage).endpoint
    }

    /// Bytes queued for writing and not yet handed to the kernel.
    public var queuedBytes: Int { uv_stream_get_write_queue_size(stream) }

    /// Starts delivering received bytes to ``onRead``.
    public func startReading() throws {
        let rc = uv_read_start(stream, { _, suggested, buf in
            guard let buf else { return }
            let size = max(suggested, 65_536)
            buf.pointee = uv_buf_init(UnsafeMutablePointer<CChar>.allocate(capacity: size), UInt32(size))
        }, { s, nread, buf in
            defer { buf?.pointee.base?.deallocate() }
            guard let connection = StreamConnection.from(UnsafeMutableRawPointer(s)), !connection.closing else { return }
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

    /// Stops delivering received bytes until ``startReading()``; what arrives meanwhile waits
    /// in the kernel, and TCP's flow control holds the sender back.
    public func stopReading() {
        guard !closing else { return }
        uv_read_stop(stream)
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
            if status < 0, let s = req.pointee.handle, let connection = StreamConnection.from(UnsafeMutableRawPointer(s)) {
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

    /// Stops reading at once, then closes the socket after queued writes; ``onClose`` runs when
    /// done. No ``onRead`` is delivered after this call, so nothing buffers bytes for a dead connection.
    public func close() {
        guard !closing else { return }
        closing = true
        uv_read_stop(stream)
        let shutdown = UnsafeMutablePointer<uv_shutdown_t>.allocate(capacity: 1)
        let rc = uv_shutdown(shutdown, stream) { req, _ in
            if let s = req?.pointee.handle, let connection = StreamConnection.from(UnsafeMutableRawPointer(s)) {
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
            let connection = Unmanaged<StreamConnection>.fromOpaque(data).takeRetainedValue()
            h.pointee.data = nil
            connection.onClose?()
            connection.onClose = nil
            connection.onRead = nil
            connection.raw.deallocate()
        }
    }

    /// Connects to `host:port`; `completion` receives the connection or the error.
    public static func connect(loop: EventLoop, host: String, port: UInt16, from source: String? = nil,
                               completion: @escaping (Result<StreamConnection, UVError>) -> Void) throws {
        let address = try SocketAddress(host: host, port: port)
        let connection = try StreamConnection(loop: loop)
        if let source {
            let local = try SocketAddress(host: source, port: 0)
            let bound = local.withSockaddr { uv_tcp_bind(connection.handle, $0, 0) }
            guard bound == 0 else {
                connection.closeHandle()
                throw UVError(bound, "uv_tcp_bind")
            }
        }
        let request = UnsafeMutablePointer<uv_connect_t>.allocate(capacity: 1)
        request.pointee.data = Unmanaged.passRetained(ConnectBox(completion)).toOpaque()
        let rc = address.withSockaddr { sa in
            uv_tcp_connect(request, connection.handle, sa) { req, status in
                guard let req else { return }
                defer { req.deallocate() }
                guard let data = req.pointee.data else { return }
                let box = Unmanaged<ConnectBox>.fromOpaque(data).takeRetainedValue()
                guard let s = req.pointee.handle, let connection = StreamConnection.from(UnsafeMutableRawPointer(s)) else { return }
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
        let completion: (Result<StreamConnection, UVError>) -> Void
        init(_ completion: @escaping (Result<StreamConnection, UVError>) -> Void) { self.completion = completion }
    }
}

/// A listening socket (TCP, or a Unix-domain socket for the control channel) that hands each
/// accepted connection to ``onAccept``.
public final class StreamListener {
    private let raw: UnsafeMutableRawPointer
    private var handle: UnsafeMutablePointer<uv_tcp_t> { raw.assumingMemoryBound(to: uv_tcp_t.self) }
    private let isPipe: Bool
    private let onAccept: (StreamConnection) -> Void
    private let loop: EventLoop
    /// Pending-connection queue length passed to `listen(2)`; small because a node accepts
    /// few concurrent model transfers.
    public static let backlog: Int32 = 64

    /// Binds TCP `host:port` and starts listening.
    public convenience init(loop: EventLoop, host: String, port: UInt16, onAccept: @escaping (StreamConnection) -> Void) throws {
        let address = try SocketAddress(host: host, port: port)
        try self.init(loop: loop, pipe: false, what: Endpoint(host: host, port: port).description, onAccept: onAccept) { raw in
            address.withSockaddr { uv_tcp_bind(raw.assumingMemoryBound(to: uv_tcp_t.self), $0, 0) }
        }
    }

    /// Binds the Unix-domain socket at `path` and starts listening. The socket file is made
    /// with mode 0600 (only this user may connect); an existing file at `path` is refused.
    public convenience init(loop: EventLoop, unixPath path: String, onAccept: @escaping (StreamConnection) -> Void) throws {
        let previous = umask(0o177)
        defer { umask(previous) }
        try self.init(loop: loop, pipe: true, what: path, onAccept: onAccept) { raw in
            uv_pipe_bind(raw.assumingMemoryBound(to: uv_pipe_t.self), path)
        }
    }

    private init(loop: EventLoop, pipe: Bool, what: String, onAccept: @escaping (StreamConnection) -> Void,
                 bind: (UnsafeMutableRawPointer) -> Int32) throws {
        self.loop = loop
        self.onAccept = onAccept
        isPipe = pipe
        raw = .allocate(byteCount: pipe ? MemoryLayout<uv_pipe_t>.size : MemoryLayout<uv_tcp_t>.size, alignment: 16)
        var rc = pipe ? uv_pipe_init(loop.loop, raw.assumingMemoryBound(to: uv_pipe_t.self), 0)
                      : uv_tcp_init(loop.loop, raw.assumingMemoryBound(to: uv_tcp_t.self))
        guard rc == 0 else {
            raw.deallocate()
            throw UVError(rc, pipe ? "uv_pipe_init" : "uv_tcp_init")
        }
        raw.assumingMemoryBound(to: uv_handle_t.self).pointee.data = Unmanaged.passUnretained(self).toOpaque()
        rc = bind(raw)
        if rc == 0 {
            rc = uv_listen(raw.assumingMemoryBound(to: uv_stream_t.self), Self.backlog) { server, status in
                guard status >= 0, let server, let data = server.pointee.data else { return }
                let listener = Unmanaged<StreamListener>.fromOpaque(data).takeUnretainedValue()
                guard let client = try? StreamConnection(loop: listener.loop, pipe: listener.isPipe) else { return }
                if uv_accept(server, client.stream) == 0 {
                    listener.onAccept(client)
                } else {
                    client.close()
                }
            }
        }
        guard rc == 0 else {
            close()
            throw UVError(rc, "listen on \(what)")
        }
    }

    /// The port actually bound (useful with port 0).
    public var port: UInt16 { SocketAddress.bound { uv_tcp_getsockname(handle, $0, $1) }?.port ?? 0 }

    /// Stops listening.
    public func close() {
        let h = raw.assumingMemoryBound(to: uv_handle_t.self)
        guard h.pointee.data != nil else { return }
        h.pointee.data = nil
        uv_close(h) { h in
            UnsafeMutableRawPointer(h)?.deallocate()
        }
    }
}

extension StreamListener {
    /// A UDP socket and a TCP listener on one port of `host`. With port 0 the UDP socket picks
    /// a free port, which another process may hold for TCP: both are then tried again on
    /// another port, up to eight times.
    public static func bindPair(loop: EventLoop, host: String, port: UInt16,
                                onAccept: @escaping (StreamConnection) -> Void) throws -> (udp: UDPSocket, tcp: StreamListener) {
        var attempts = 0
        while true {
            let socket = try UDPSocket(loop: loop, host: host, port: port)
            do {
                return (socket, try StreamListener(loop: loop, host: host, port: socket.port, onAccept: onAccept))
            } catch let error as UVError where error.code == Int32(UV_EADDRINUSE.rawValue) && port == 0 && attempts < 8 {
                socket.close()
                attempts += 1
            }
        }
    }
}
