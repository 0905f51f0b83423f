#!/bin/sh
# Creates .venv-moto (git-ignored) with moto's server and boto3, for the EBS tests
# and `scripts/bench.sh ebs`. Idempotent: does nothing when the venv already works.
set -eu
here=$(cd "$(dirname "$0")/.." && pwd)
venv=${MOTO_VENV:-$here/.venv-moto}
if [ -x "$venv/bin/python" ] && "$venv/bin/python" -c 'import moto.server, boto3' 2>/dev/null; then
    exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check 'moto[server]' boto3
"$venv/bin/python" -c 'import moto.server, boto3'
echo "moto venv ready: $venv"
