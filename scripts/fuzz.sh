#!/usr/bin/env bash
# Builds and runs the libFuzzer targets under fuzz/. Filled in by the wire-format work.
set -euo pipefail
echo "fuzz: no targets yet"
