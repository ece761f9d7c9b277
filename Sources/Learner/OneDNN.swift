import CDNNL
import Synchronization

/// Batched inference through oneDNN (Debian's `libdnnl`): its matmul primitive, whose kernels
/// it picks at run time for the CPU it runs on (AVX-512, AVX2, VNNI on x86; NEON on arm), with
/// each layer's weights reordered once into the layout those kernels read fastest.
///
/// ``Predictor`` uses it for batches of at least ``minimumRows`` samples; below that the call
/// overhead (about 10 µs) outweighs the gain and OpenBLAS and the int8 kernel run instead.
/// fp32 layers add the bias and the ReLU inside the primitive. int8 layers multiply int8 by
/// int8 into exact Int32 sums, which ``Predictor`` dequantizes exactly as ``Int8Kernel`` does,
/// so both paths give the same answers to the bit.
public enum OneDNN {
    /// Batches this large or larger go through oneDNN.
    static let minimumRows = 32

    /// The CPU engine, created once; nil if oneDNN could not create one (the BLAS and int8
    /// kernel paths then serve every batch).
    static let engine: Engine? = Engine()

    /// Threads each call may use: a program's decision, made once (1 by default, like
    /// ``BLAS/setThreadCount(_:)``). oneDNN runs on OpenMP, whose thread count belongs to the
    /// calling thread, so every call sets it on its own thread.
    public static func setThreadCount(_ count: Int) { threads.store(max(1, count), ordering: .relaxed) }

    /// The thread count calls use.
    public static var threadCount: Int { threads.load(ordering: .relaxed) }

    private static let threads = Atomic<Int>(1)

    /// Whether batches run through oneDNN on this machine, and its version, for reports.
    public static var summary: String {
        guard engine != nil, let v = dnnl_version()?.pointee else { return "oneDNN unavailable: OpenBLAS and the int8 kernel serve every batch" }
        return "oneDNN \(v.major).\(v.minor).\(v.patch) for batches of \(minimumRows) or more, \(threadCount) thread\(threadCount == 1 ? "" : "s")"
    }

    /// A oneDNN CPU engine.
    final class Engine: @unchecked Sendable {
        let handle: dnnl_engine_t

        init?() {
            omp_set_num_threads(Int32(clamping: OneDNN.threadCount))
            var engine: dnnl_engine_t?
            guard dnnl_engine_create(&engine, dnnl_cpu, 0) == dnnl_success, let engine else { return nil }
            handle = engine
        }

        deinit { dnnl_engine_destroy(handle) }
    }

    /// One dense layer as a matmul primitive over any number of rows: `source` rows ×
    /// `inputs` times the weights (inputs × outputs) into rows × `outputs`, row-major.
    /// Immutable once built; oneDNN primitives may run on several threads at once.
    final class Layer: @unchecked Sendable {
        enum Kind {
            /// fp32 in and out, the bias added and, if `relu`, a ReLU applied in the primitive.
            case float(relu: Bool)
            /// int8 in, exact Int32 sums out; no bias (the caller dequantizes).
            case int8

            /// The element types of the rows in and out.
            var types: (in: dnnl_data_type_t, out: dnnl_data_type_t) {
                switch self {
                case .float: return (dnnl_f32, dnnl_f32)
                case .int8: return (dnnl_s8, dnnl_s32)
                }
            }
        }

        let inputs: Int
        let outputs: Int
        let kind: Kind
        private let engine: Engine
        private let primitive: dnnl_primitive_t
        /// The reordered weights and the bias, in memory this layer owns.
        private let weights: dnnl_memory_t
        private let weightBuffer: UnsafeMutableRawPointer
        private let bias: dnnl_memory_t?
        private let biasBuffer: UnsafeMutablePointer<Float>?

        /// A layer whose `weights` are `outputs` rows of `inputs` values (the model's layout),
        /// Float for `.float` and Int8 for `.int8`; nil if oneDNN refuses any step.
        init?(inputs: Int, outputs: Int, kind: Kind, weights plain: UnsafeRawPointer, bias plainBias: UnsafePointer<Float>?) {
            guard let engine = OneDNN.engine else { return nil }
            // A primitive sizes its work for the threads its creating thread may use.
            omp_set_num_threads(Int32(clamping: OneDNN.threadCount))
            self.inputs = inputs
            self.outputs = outputs
            self.kind = kind
            self.engine = engine
            let (inType, outType) = kind.types
            let k = Int64(inputs), n = Int64(outputs), anyRows = Int64.min // DNNL_RUNTIME_DIM_VAL
            guard let source = Self.descriptor([anyRows, k], inType, dnnl_ab),
                  let chosen = Self.descriptor([k, n], inType, dnnl_format_tag_any),
                  // The model stores outputs × inputs: the inputs × outputs matrix, transposed.
                  let stored = Self.descriptor([k, n], inType, dnnl_ba),
                  let destination = Self.descriptor([anyRows, n], outType, dnnl_ab)
            else { return nil }
            var biasDescriptor: dnnl_memory_desc_t?
            var attributes: dnnl_primitive_attr_t?
            guard dnnl_primitive_attr_create(&attributes) == dnnl_success, let attributes else { return nil }
            defer { dnnl_primitive_attr_destroy(attributes) }
            if case .float(let relu) = kind {
                biasDescriptor = Self.descriptor([1, n], dnnl_f32, dnnl_ab)
                guard biasDescriptor != nil else { return nil }
                if relu {
                    var postOps: dnnl_post_ops_t?
                    guard dnnl_post_ops_create(&postOps) == dnnl_success, let postOps else { return nil }
                    defer { dnnl_post_ops_destroy(postOps) }
                    guard dnnl_post_ops_append_eltwise(postOps, 1, dnnl_eltwise_relu, 0, 0) == dnnl_success,
                          dnnl_primitive_attr_set_post_ops(attributes, postOps) == dnnl_success else { return nil }
                }
            }
            var description = dnnl_matmul_desc_t()
            var src = source, wei = chosen, dst = destination
            let initialised: dnnl_status_t
            if var b = biasDescriptor {
                initialised = dnnl_matmul_desc_init(&description, &src, &wei, &b, &dst)
            } else {
                initialised = dnnl_matmul_desc_init(&description, &src, &wei, nil, &dst)
            }
            guard initialised == dnnl_success else { return nil }
            var primitiveDescription: dnnl_primitive_desc_t?
            guard dnnl_primitive_desc_create(&primitiveDescription, &description, attributes, engine.handle, nil) == dnnl_success,
                  let primitiveDescription else { return nil }
            defer { dnnl_primitive_desc_destroy(primitiveDescription) }
            guard let layout = dnnl_primitive_desc_query_md(primitiveDescription, dnnl_query_weights_md, 0) else { return nil }
            weightBuffer = .allocate(byteCount: max(1, dnnl_memory_desc_get_size(layout)), alignment: 64)
            var packed: dnnl_memory_t?
            guard dnnl_memory_create(&packed, layout, engine.handle, weightBuffer) == dnnl_success, let packed else {
                weightBuffer.deallocate()
                return nil
            }
            weights = packed
            var built: dnnl_primitive_t?
            guard Self.reorder(from: stored, UnsafeMutableRawPointer(mutating: plain), into: packed, layout, engine),
                  dnnl_primitive_create(&built, primitiveDescription) == dnnl_success, let built else {
                dnnl_memory_destroy(packed)
                weightBuffer.deallocate()
                return nil
            }
            primitive = built
            if var b = biasDescriptor, let plainBias {
                let copy = UnsafeMutablePointer<Float>.allocate(capacity: outputs)
                copy.update(from: plainBias, count: outputs)
                var memory: dnnl_memory_t?
                guard dnnl_memory_create(&memory, &b, engine.handle, copy) == dnnl_success, let memory else {
                    copy.deallocate()
                    dnnl_primitive_destroy(built)
                    dnnl_memory_destroy(packed)
                    weightBuffer.deallocate()
                    return nil
                }
                bias = memory
                biasBuffer = copy
            } else {
                bias = nil
                biasBuffer = nil
            }
        }

        deinit {
            dnnl_primitive_destroy(primitive)
            dnnl_memory_destroy(weights)
            weightBuffer.deallocate()
            if let bias { dnnl_memory_destroy(bias) }
            biasBuffer?.deallocate()
        }

        /// Runs the layer on `rows` rows at `source` into `destination`; false if oneDNN
        /// failed (the caller then computes the rows another way).
        func run(rows: Int, source: UnsafeRawPointer, destination: UnsafeMutableRawPointer) -> Bool {
            omp_set_num_threads(Int32(clamping: OneDNN.threadCount))
            let (inType, outType) = kind.types
            guard var src = Self.descriptor([Int64(rows), Int64(inputs)], inType, dnnl_ab),
                  var dst = Self.descriptor([Int64(rows), Int64(outputs)], outType, dnnl_ab) else { return false }
            var input: dnnl_memory_t?, output: dnnl_memory_t?, stream: dnnl_stream_t?
            defer {
                if let input { dnnl_memory_destroy(input) }
                if let output { dnnl_memory_destroy(output) }
                if let stream { dnnl_stream_destroy(stream) }
            }
            guard dnnl_memory_create(&input, &src, engine.handle, UnsafeMutableRawPointer(mutating: source)) == dnnl_success,
                  dnnl_memory_create(&output, &dst, engine.handle, destination) == dnnl_success,
                  dnnl_stream_create(&stream, engine.handle, UInt32(dnnl_stream_default_flags.rawValue)) == dnnl_success,
                  let stream else { return false }
            var arguments = [dnnl_exec_arg_t(arg: DNNL_ARG_SRC, memory: input), dnnl_exec_arg_t(arg: DNNL_ARG_WEIGHTS, memory: weights),
                             dnnl_exec_arg_t(arg: DNNL_ARG_DST, memory: output)]
            if let bias { arguments.append(dnnl_exec_arg_t(arg: DNNL_ARG_BIAS, memory: bias)) }
            return dnnl_primitive_execute(primitive, stream, Int32(arguments.count), arguments) == dnnl_success
                && dnnl_stream_wait(stream) == dnnl_success
        }

        private static func descriptor(_ dims: [Int64], _ type: dnnl_data_type_t, _ tag: dnnl_format_tag_t) -> dnnl_memory_desc_t? {
            var descriptor = dnnl_memory_desc_t()
            guard dnnl_memory_desc_init_by_tag(&descriptor, Int32(dims.count), dims, type, tag) == dnnl_success else { return nil }
            return descriptor
        }

        /// Copies `plain` (laid out as `plainLayout`) into `target`, reordering it.
        private static func reorder(from plainLayout: dnnl_memory_desc_t, _ plain: UnsafeMutableRawPointer,
                                    into target: dnnl_memory_t, _ targetLayout: UnsafePointer<dnnl_memory_desc_t>, _ engine: Engine) -> Bool {
            var layout = plainLayout
            var source: dnnl_memory_t?, description: dnnl_primitive_desc_t?, reorder: dnnl_primitive_t?, stream: dnnl_stream_t?
            defer {
                if let source { dnnl_memory_destroy(source) }
                if let reorder { dnnl_primitive_destroy(reorder) }
                if let description { dnnl_primitive_desc_destroy(description) }
                if let stream { dnnl_stream_destroy(stream) }
            }
            guard dnnl_memory_create(&source, &layout, engine.handle, plain) == dnnl_success,
                  dnnl_reorder_primitive_desc_create(&description, &layout, engine.handle, targetLayout, engine.handle, nil) == dnnl_success,
                  let description, dnnl_primitive_create(&reorder, description) == dnnl_success, let reorder,
                  dnnl_stream_create(&stream, engine.handle, UInt32(dnnl_stream_default_flags.rawValue)) == dnnl_success, let stream
            else { return false }
            let arguments = [dnnl_exec_arg_t(arg: DNNL_ARG_FROM, memory: source), dnnl_exec_arg_t(arg: DNNL_ARG_TO, memory: target)]
            omp_set_num_threads(Int32(clamping: OneDNN.threadCount))
            return dnnl_primitive_execute(reorder, stream, 2, arguments) == dnnl_success && dnnl_stream_wait(stream) == dnnl_success
        }
    }
}
