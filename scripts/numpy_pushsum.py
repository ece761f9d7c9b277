#!/usr/bin/env python3
"""numpy/scipy baseline for the averaging benchmark: push-sum gossip, vectorised.

The same work as `netsim average` without the network: a ring plus --links random links per
node (undirected, no self-loops or repeats, like Graph.addCluster), vectors drawn like
netsim's (1 + k / 2^18, k uniform in 0..<2^20) weighted by Pareto sample counts
(floor(10 / U^(1/1.2)), capped at 10^6, like SampleCounts.pareto; same law, other draws).
Each round every node sends half of its (value, weight) to one neighbour chosen uniformly
and keeps half (PushSumAverager.Settings.shareFraction = 0.5: the share is v/2, w/2 whatever
the degree); receivers add what they get; a node's estimate is value / weight. Rounds are
synchronous and lossless: one push per node per round, as netsim's ticks (one push per node
per 200 ms tick, acknowledged within the tick when nothing is lost).

--values float32 (default): the (N, D) value matrix is float32, weights float64.
--values float64: the simulator's own arithmetic -- PushSumAverager keeps v in Double and
    sends each share as Float(v * f / s) with s = 2^floor(log2(w * f)), taking exactly
    Double(share) * s out of v and adding exactly that to the receiver.

Scatter-add of the sent halves: a CSC matrix with one 1 per column (row = the receiver),
times the (N, D) matrix (scipy's csc_matvecs scatters row i into row target[i]). Measured
on one core (numpy 2.4, scipy 1.17), per round: 100,000 x 100 float32 -- sparse 18 ms,
np.add.at 118 ms; 10,000 x 7,850 -- sparse 76 ms, np.add.at 720 ms. So sparse is the
default; --scatter add.at keeps the other for re-measuring.

Every --metrics-every rounds (and after the last) the error is measured like netsim's:
the largest over nodes of max_k |estimate_k - mean_k| / max_k |mean_k|, against the
sample-weighted mean computed in float64 from the initial vectors.

Prints one JSON line: sizes, wall seconds of the whole run (imports, setup, loop),
loop_seconds (the rounds including their metric passes, as netsim times its rounds with
their per-round metric), node_rounds_per_second = nodes * rounds / loop_seconds,
peak_rss_bytes (getrusage ru_maxrss * 1024), final_max_relative_error, and the errors.

Runs on one core: OMP_NUM_THREADS, OPENBLAS_NUM_THREADS, MKL_NUM_THREADS default to 1 here
(set before numpy is imported; the loop uses no BLAS anyway). Installs numpy and scipy with
pip if they are missing, as sklearn_baseline.py does (--user, else
--break-system-packages); nothing is committed.

Example: scripts/numpy_pushsum.py --nodes 100000 --dimension 100 --rounds 200 --metrics-every 10
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_var, "1")

import argparse
import json
import resource
import subprocess
import sys
import time

START = time.perf_counter()


def ensure_deps():
    try:
        import numpy  # noqa: F401
        import scipy.sparse  # noqa: F401
    except ImportError:
        print("installing numpy and scipy with pip", file=sys.stderr)
        base = [sys.executable, "-m", "pip", "install", "--quiet", "--user", "numpy", "scipy"]
        if subprocess.call(base) != 0:
            subprocess.check_call(base + ["--break-system-packages"])
        import site
        import importlib
        sys.path.insert(0, site.getusersitepackages())
        importlib.invalidate_caches()


def build_graph(np, n, links, rng):
    """CSR adjacency (indptr, indices) of a ring plus `links` random links per node."""
    nodes = np.arange(n, dtype=np.int64)
    a = np.concatenate([nodes, np.repeat(nodes, links)])
    b = np.concatenate([(nodes + 1) % n, rng.integers(0, n, size=n * links, dtype=np.int64)])
    keep = a != b
    lo, hi = np.minimum(a[keep], b[keep]), np.maximum(a[keep], b[keep])
    pairs = np.unique(lo * n + hi)
    lo, hi = pairs // n, pairs % n
    src, dst = np.concatenate([lo, hi]), np.concatenate([hi, lo])
    order = np.lexsort((dst, src))  # by node, each node's neighbours ascending
    indptr = np.zeros(n + 1, dtype=np.int64)
    np.cumsum(np.bincount(src, minlength=n), out=indptr[1:])
    return indptr, dst[order]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--dimension", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=100)
    parser.add_argument("--links", type=int, default=4)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--metrics-every", type=int, default=1)
    parser.add_argument("--values", choices=["float32", "float64"], default="float32")
    parser.add_argument("--scatter", choices=["sparse", "add.at"], default="sparse")
    args = parser.parse_args()
    n, d = args.nodes, args.dimension
    if n < 2 or d < 1 or args.rounds < 1 or args.metrics_every < 1 or not 0 <= args.links < n:
        parser.error("need --nodes >= 2, --dimension >= 1, --rounds >= 1, --metrics-every >= 1, 0 <= --links < --nodes")

    ensure_deps()
    import numpy as np
    import scipy
    import scipy.sparse as sp

    rng = np.random.default_rng(args.seed)
    indptr, indices = build_graph(np, n, args.links, rng)
    degree = np.diff(indptr)
    first = indptr[:-1]

    u = 1.0 - rng.random(n)  # uniform in (0, 1]
    weights = np.minimum(1e6, np.floor(10.0 / u ** (1 / 1.2)))

    # Vectors and mass, block by block so no (N, D) float64 temporary is made here.
    dtype = np.float32 if args.values == "float32" else np.float64
    values = np.empty((n, d), dtype=dtype)
    mean = np.zeros(d)
    block = max(1, (1 << 22) // d)
    for s in range(0, n, block):
        e = min(n, s + block)
        x = rng.integers(0, 1 << 20, size=(e - s, d), dtype=np.int32).astype(np.float32)
        x *= np.float32(1 / (1 << 18))
        x += np.float32(1)
        mean += weights[s:e] @ x.astype(np.float64)
        np.multiply(x, weights[s:e, None], out=values[s:e], casting="same_kind")
    mean /= weights.sum()
    scale_of_mean = np.abs(mean).max()

    def max_relative_error():
        worst = 0.0
        for s in range(0, n, block):
            e = min(n, s + block)
            est = values[s:e].astype(np.float64)
            est /= weights[s:e, None]
            est -= mean
            worst = max(worst, float(np.abs(est).max()))
        return worst / scale_of_mean

    ones = np.ones(n, dtype=dtype)
    columns = np.arange(n + 1, dtype=np.int64)
    if args.values == "float64":
        share32 = np.empty((n, d), dtype=np.float32)
        sent = np.empty((n, d), dtype=np.float64)
    elif args.scatter == "add.at":
        sent = np.empty((n, d), dtype=np.float32)

    errors = []
    loop_start = time.perf_counter()
    for r in range(1, args.rounds + 1):
        target = indices[first + rng.integers(0, degree)]
        if args.values == "float32":
            values *= np.float32(0.5)
            if args.scatter == "sparse":
                # Column i holds one 1 in row target[i]: P @ values scatters row i to target[i].
                to = sp.csc_matrix((ones, target, columns), shape=(n, n))
                values += to @ values
            else:
                np.copyto(sent, values)
                np.add.at(values, target, sent)
            sent_weight = weights * 0.5
        else:
            sent_weight = weights * 0.5
            scale = np.ldexp(1.0, np.frexp(sent_weight)[1] - 1)  # 2^floor(log2(w/2))
            np.multiply(values, (0.5 / scale)[:, None], out=sent)
            np.copyto(share32, sent, casting="same_kind")  # the Float on the wire
            np.multiply(share32, scale[:, None], out=sent)  # exactly the mass it moves
            values -= sent
            if args.scatter == "sparse":
                to = sp.csc_matrix((ones, target, columns), shape=(n, n))
                values += to @ sent
            else:
                np.add.at(values, target, sent)
        weights -= sent_weight
        weights += np.bincount(target, weights=sent_weight, minlength=n)
        if r % args.metrics_every == 0 or r == args.rounds:
            errors.append([r, max_relative_error()])
    loop_seconds = time.perf_counter() - loop_start

    print(json.dumps({
        "nodes": n, "dimension": d, "rounds": args.rounds, "links": args.links, "seed": args.seed,
        "metrics_every": args.metrics_every, "values": args.values, "scatter": args.scatter,
        "library": f"numpy {np.__version__}, scipy {scipy.__version__}",
        "seconds": round(time.perf_counter() - START, 3),
        "loop_seconds": round(loop_seconds, 3),
        "node_rounds_per_second": n * args.rounds / loop_seconds,
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "final_max_relative_error": errors[-1][1],
        "errors": errors,
    }))


if __name__ == "__main__":
    main()
