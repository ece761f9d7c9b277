#!/usr/bin/env bash
# The main demo (grows with the project). See README.md.
set -euo pipefail
echo "demo: not yet assembled"
