#!/usr/bin/env bash
# Install the server tests' Python clients (tests/server-requirements.txt: `openai`, pinned with
# its closure) into .venv-server/ at the repo root. Idempotent (a stamp of the requirements);
# prints nothing when already installed. Never fails the caller: without PyPI the openai client
# test is skipped with a note (curl and wrk still test the server).
set -uo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
VENV="${AC_SERVER_VENV:-$ROOT/.venv-server}"
REQ="$ROOT/tests/server-requirements.txt"
STAMP="$VENV/.attncache-requirements.sha256"
want="$(cat "$REQ" | sha256sum | cut -d' ' -f1)"
if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$want" && -x "$VENV/bin/python" ]]; then
    exit 0
fi
echo "setup_server_tests: installing the pinned openai client into $VENV" >&2
[[ -x "$VENV/bin/python" ]] || python3 -m venv "$VENV" || { echo "setup_server_tests: no venv" >&2; exit 0; }
if PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_INPUT=1 "$VENV/bin/python" -m pip install -q --no-deps -r "$REQ" &&
    "$VENV/bin/python" -c 'import openai' 2>/dev/null; then
    echo "$want" > "$STAMP"
else
    echo "setup_server_tests: install failed: the openai client test will be skipped" >&2
fi
exit 0
