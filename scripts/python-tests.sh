#!/usr/bin/env bash
# The Python clients (qdrant-client, LangChain, LlamaIndex), unmodified from PyPI, against a
# real node: tests/python. Creates target/py/venv when missing, installs
# tests/python/requirements.txt when it changed, and runs pytest against $VEKTAGRAF_BIN
# (default target/release/vektagraf, built when missing). The last line is in cargo's format
# (`test result: ok. N passed; M failed; 0 ignored`) so scripts/test.sh counts these tests.
set -euo pipefail
cd "$(dirname "$0")/.."

venv=target/py/venv
req=tests/python/requirements.txt
stamp=$venv/.requirements-installed

if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv"
fi
if [ ! -f "$stamp" ] || [ "$req" -nt "$stamp" ]; then
    "$venv/bin/pip" install -q --disable-pip-version-check -r "$req"
    touch "$stamp"
fi

if [ -z "${VEKTAGRAF_BIN:-}" ]; then
    VEKTAGRAF_BIN=target/release/vektagraf
    [ -x "$VEKTAGRAF_BIN" ] || cargo build --release -p vektagraf --locked
elif [ ! -x "$VEKTAGRAF_BIN" ]; then
    echo "VEKTAGRAF_BIN=$VEKTAGRAF_BIN is not an executable" >&2
    exit 1
fi
VEKTAGRAF_BIN=$(cd "$(dirname "$VEKTAGRAF_BIN")" && pwd)/$(basename "$VEKTAGRAF_BIN")
export VEKTAGRAF_BIN

# Nothing may reach the network for models or telemetry; no bytecode in the source tree.
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 ANONYMIZED_TELEMETRY=False DO_NOT_TRACK=1
export PYTHONDONTWRITEBYTECODE=1

# Arguments go to pytest (e.g. a file, `-k filter`, `-x`); by default the whole suite.
if [ $# -eq 0 ]; then set -- tests/python; fi
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
