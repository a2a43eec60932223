#!/usr/bin/env bash
# Installs the Python client (and its test deps) into a venv under target/
# and runs its tests against the running control plane and a real berth.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=$root/target/py-venv
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
fi
"$venv/bin/pip" install --quiet --disable-pip-version-check -e "$root/clients/python[test]"
cd "$root/clients/python"
"$venv/bin/python" -m pytest -q
