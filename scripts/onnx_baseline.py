#!/usr/bin/env python3
"""ONNX Runtime baseline for the deployment benchmark.

Reads the MLP that `murmur-bench deployment` trained (its normaliser, weights and biases, the
test images and our own predicted classes: one JSON header line, then little-endian arrays),
builds the same network as an ONNX graph with onnx.helper (Sub, Mul, MatMul + Add, Relu,
MatMul + Add, Softmax, ArgMax), and runs it with onnxruntime on one thread, sequentially:
batch-1 latency (p50 and p99 of many calls, after a warm-up), predictions per second at
batch 1,000, and how often its classes agree with ours on the test images. The same for the
graph quantized to int8 by onnxruntime's dynamic quantization, when that works. Prints one
JSON object. Installs onnxruntime and onnx with pip if they are missing.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time


def ensure_packages(modules_and_packages):
    """Imports each module, installing its package with pip (--user) first when it is missing."""
    import importlib
    missing = []
    for module, package in modules_and_packages:
        try:
            importlib.import_module(module)
        except ImportError:
            missing.append(package)
    if not missing:
        return
    print(f"installing {' '.join(missing)} with pip", file=sys.stderr)
    base = [sys.executable, "-m", "pip", "install", "--quiet", "--user"] + missing
    if subprocess.call(base) != 0:
        subprocess.check_call(base + ["--break-system-packages"])
    import site
    sys.path.insert(0, site.getusersitepackages())
    importlib.invalidate_caches()


def read_arrays(path):
    """The header and the named arrays of the file the benchmark wrote."""
    import numpy as np
    with open(path, "rb") as f:
        data = f.read()
    end = data.index(b"\n")
    header = json.loads(data[:end])
    offset = end + 1
    arrays = {}
    for entry in header["arrays"]:
        dtype = np.dtype(entry["dtype"])
        count = int(np.prod(entry["shape"]))
        arrays[entry["name"]] = np.frombuffer(data, dtype=dtype, count=count, offset=offset).reshape(entry["shape"])
        offset += count * dtype.itemsize
    if offset != len(data):
        raise SystemExit(f"{path}: {len(data) - offset} bytes left after the arrays the header names")
    return header, arrays


def build_graph(header, arrays):
    """The MLP as an ONNX model: input [N, features] -> class [N], probabilities [N, classes]."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper
    features = int(arrays["offsets"].shape[0])
    classes = int(header["classes"])
    initializers = [numpy_helper.from_array(arrays["offsets"].astype(np.float32), "offsets"),
                    numpy_helper.from_array(arrays["scales"].astype(np.float32), "scales")]
    nodes = [helper.make_node("Sub", ["input", "offsets"], ["centred"]),
             helper.make_node("Mul", ["centred", "scales"], ["h0"])]
    layers = int(header["layers"])
    for layer in range(layers):
        # Our weights are out x in, row-major; MatMul takes in x out.
        weights = np.ascontiguousarray(arrays[f"layer{layer}.weights"].T.astype(np.float32))
        initializers += [numpy_helper.from_array(weights, f"w{layer}"),
                         numpy_helper.from_array(arrays[f"layer{layer}.biases"].astype(np.float32), f"b{layer}")]
        nodes += [helper.make_node("MatMul", [f"h{layer}", f"w{layer}"], [f"m{layer}"]),
                  helper.make_node("Add", [f"m{layer}", f"b{layer}"], [f"z{layer}"])]
        if layer < layers - 1:
            nodes.append(helper.make_node("Relu", [f"z{layer}"], [f"h{layer + 1}"]))
    logits = f"z{layers - 1}"
    nodes += [helper.make_node("Softmax", [logits], ["probabilities"], axis=1),
              helper.make_node("ArgMax", [logits], ["class"], axis=1, keepdims=0)]
    graph = helper.make_graph(
        nodes, "murmuration_mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, features])],
        [helper.make_tensor_value_info("class", TensorProto.INT64, [None]),
         helper.make_tensor_value_info("probabilities", TensorProto.FLOAT, [None, classes])],
        initializer=initializers)
    # Opset 17 and IR version 8: understood by every onnxruntime of the last years.
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="murmur-bench")
    model.ir_version = 8
    return model


def session(model_bytes):
    """An onnxruntime session on one thread, sequential execution, all graph optimisations."""
    import onnxruntime as ort
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model_bytes, options, providers=["CPUExecutionProvider"])


def measure(sess, test, ours, calls, warmup, batch, repeats):
    """Batch-1 latency percentiles, throughput at `batch`, and agreement with our classes."""
    import numpy as np
    samples = [np.ascontiguousarray(test[i:i + 1]) for i in range(min(256, len(test)))]
    for i in range(warmup):
        sess.run(None, {"input": samples[i % len(samples)]})
    times = np.empty(calls, dtype=np.int64)
    clock = time.perf_counter_ns
    for i in range(calls):
        sample = samples[i % len(samples)]
        start = clock()
        sess.run(None, {"input": sample})
        times[i] = clock() - start
    block = np.ascontiguousarray(test[:batch])
    for _ in range(3):
        sess.run(None, {"input": block})
    best = float("inf")
    for _ in range(repeats):
        start = clock()
        sess.run(None, {"input": block})
        best = min(best, clock() - start)
    predicted = np.concatenate([sess.run(["class"], {"input": np.ascontiguousarray(test[i:i + batch])})[0]
                                for i in range(0, len(test), batch)])
    return {
        "latency_p50_us": float(np.percentile(times, 50)) / 1e3,
        "latency_p99_us": float(np.percentile(times, 99)) / 1e3,
        "latency_calls": calls,
        "throughput_per_second": batch / (best / 1e9),
        "throughput_batch": batch,
        "throughput_repeats": repeats,
        "agreement_with_ours": float((predicted == ours).mean()),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", required=True, help="the file murmur-bench deployment wrote")
    parser.add_argument("--calls", type=int, default=10_000, help="timed batch-1 calls")
    parser.add_argument("--warmup", type=int, default=1_000, help="untimed batch-1 calls first")
    parser.add_argument("--batch", type=int, default=1_000, help="rows of the throughput batch")
    parser.add_argument("--repeats", type=int, default=20, help="throughput: the best of this many batches")
    args = parser.parse_args()

    ensure_packages([("onnxruntime", "onnxruntime"), ("onnx", "onnx")])
    import numpy as np
    import onnx
    import onnxruntime as ort

    header, arrays = read_arrays(args.weights)
    test = arrays["test.features"]
    model = build_graph(header, arrays)
    onnx.checker.check_model(model)
    fp32 = measure(session(model.SerializeToString()), test, arrays["fp32.classes"],
                   args.calls, args.warmup, args.batch, args.repeats)
    result = {
        "library": f"onnxruntime {ort.__version__}",
        "onnx": onnx.__version__,
        "numpy": np.__version__,
        "threads": 1,
        "graph": "Sub, Mul, MatMul+Add, Relu, MatMul+Add, Softmax, ArgMax; opset 17",
        "test_samples": int(len(test)),
        "fp32": fp32,
    }
    # int8: onnxruntime's own dynamic quantization (weights int8 per output channel,
    # activations quantized per call), the counterpart of our int8 path.
    try:
        import logging
        logging.disable(logging.WARNING)  # its advice to pre-process the graph does not apply to two layers
        from onnxruntime.quantization import QuantType, quantize_dynamic
        with tempfile.TemporaryDirectory() as folder:
            source, target = os.path.join(folder, "fp32.onnx"), os.path.join(folder, "int8.onnx")
            onnx.save(model, source)
            quantize_dynamic(source, target, weight_type=QuantType.QInt8, per_channel=True)
            with open(target, "rb") as f:
                quantized = f.read()
        result["int8"] = measure(session(quantized), test, arrays["int8.classes"],
                                 args.calls, args.warmup, args.batch, args.repeats)
        result["int8"]["method"] = "onnxruntime.quantization.quantize_dynamic, QInt8 weights per channel"
    except Exception as error:  # the fp32 figures stand on their own
        result["int8_error"] = f"{type(error).__name__}: {error}"
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
