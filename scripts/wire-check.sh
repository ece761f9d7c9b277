#!/usr/bin/env bash
# Runs the independent Python re-implementation in docs/wire.md's appendix against the
# document's own hex vectors (the Swift tests check the same vectors against the code), so the
# document cannot drift from the code. Installs PyNaCl with pip when it is missing, into a
# virtual environment under .build (never committed).
set -euo pipefail
cd "$(dirname "$0")/.."

python=python3
if ! "$python" -c 'import nacl' 2>/dev/null; then
  venv=.build/wire-check-venv
  if [ ! -x "$venv/bin/python" ] || ! "$venv/bin/python" -c 'import nacl' 2>/dev/null; then
    echo "wire-check: installing PyNaCl into $venv"
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check pynacl
  fi
  python=$venv/bin/python
fi

program=$(sed -n '/^```python$/,/^```$/p' docs/wire.md | sed '1d;$d')
if [ -z "$program" ]; then
  echo "wire-check: no python block in docs/wire.md" >&2
  exit 1
fi
if ! output=$(printf '%s\n' "$program" | "$python" - 2>&1); then
  printf '%s\n' "$output" >&2
  echo "wire-check: docs/wire.md's vectors and its own specification disagree (lines marked BAD above)" >&2
  exit 1
fi
echo "wire-check: $(printf '%s\n' "$output" | grep -c '^OK') vectors of docs/wire.md reproduced independently with PyNaCl"
