#!/usr/bin/env python3
"""scikit-learn baseline for the learner benchmark.

Loads the same gzip IDX files as `peer train --data fashion-mnist` with numpy, scales pixels
to [0, 1], trains MLPClassifier(hidden_layer_sizes=(128,), solver='adam', batch_size=200,
max_iter=10) -- scikit-learn's default solver and batch size; 10 iterations = 10 epochs --
and prints one JSON object: wall time of the fit, test accuracy and the settings used.
Installs scikit-learn with pip if it is missing.
"""
import argparse
import gzip
import json
import os
import subprocess
import sys
import time
import warnings


def ensure_sklearn():
    try:
        import sklearn  # noqa: F401
    except ImportError:
        print("installing scikit-learn with pip", file=sys.stderr)
        base = [sys.executable, "-m", "pip", "install", "--quiet", "--user", "scikit-learn"]
        if subprocess.call(base) != 0:
            subprocess.check_call(base + ["--break-system-packages"])
        import site
        import importlib
        sys.path.insert(0, site.getusersitepackages())
        importlib.invalidate_caches()


def read_idx(path):
    import numpy as np
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rb") as f:
        data = f.read()
    if data[0] != 0 or data[1] != 0 or data[2] != 8:
        raise SystemExit(f"{path}: not an unsigned-byte IDX file")
    ndims = data[3]
    dims = [int.from_bytes(data[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndims)]
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndims).reshape(dims)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data-dir", default="/usr/share/datasets/fashion-mnist")
    parser.add_argument("--hidden", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--batch", type=int, default=200)
    parser.add_argument("--solver", default="adam", choices=["adam", "sgd"])
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    ensure_sklearn()
    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    def load(prefix):
        x = read_idx(os.path.join(args.data_dir, f"{prefix}-images-idx3-ubyte.gz"))
        y = read_idx(os.path.join(args.data_dir, f"{prefix}-labels-idx1-ubyte.gz"))
        return x.reshape(len(x), -1).astype(np.float64) / 255.0, y

    x_train, y_train = load("train")
    x_test, y_test = load("t10k")
    model = MLPClassifier(hidden_layer_sizes=(args.hidden,), solver=args.solver, batch_size=args.batch,
                          max_iter=args.epochs, random_state=args.seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # 10 epochs is the point, not convergence
        start = time.perf_counter()
        model.fit(x_train, y_train)
        fit_seconds = time.perf_counter() - start
    accuracy = float((model.predict(x_test) == y_test).mean())
    import sklearn
    print(json.dumps({
        "library": f"scikit-learn {sklearn.__version__}",
        "model": f"MLPClassifier(hidden_layer_sizes=({args.hidden},), solver='{args.solver}')",
        "epochs": args.epochs, "batch_size": args.batch, "dtype": "float64",
        "fit_seconds": round(fit_seconds, 3), "test_accuracy": accuracy,
        "train_samples": int(len(x_train)), "test_samples": int(len(x_test)),
    }))


if __name__ == "__main__":
    main()
