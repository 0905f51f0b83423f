#!/bin/sh
# Creates .venv-moto (git-ignored), the tests' Python peers: moto's server and boto3 for
# the EBS tests and `scripts/bench.sh ebs`, pyte (a terminal emulator) for the serial
# console tests. Idempotent: does nothing when the venv already works.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${MOTO_VENV:-$here/.venv-moto}
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import moto.server, boto3, pyte' 2>/dev/null; then
    exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]' boto3 pyte
"$venv/bin/python" -c 'import moto.server, boto3, pyte'
echo "moto venv ready: $venv"
