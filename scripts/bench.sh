#!/usr/bin/env bash
# Runs every benchmark; each prints a table and appends JSON lines to bench-results.jsonl.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.build/release
"$BIN/murmur-bench" all
