#!/usr/bin/env bash
# Rewrite constraints.txt: the exact versions a fresh, unconstrained `pip install -e ".[test]"` resolves
# to today (within pyproject.toml's ranges). Run: scripts/refresh_constraints.sh
# PYTHON=python3.12 resolves for another interpreter. Then run the suite on the new set (bash .ci/run)
# before committing it. jax/jaxlib (the JAX-backend test) resolve together with the rest and are listed;
# torch is not: .ci/run installs it on its own (a local wheel on CI).
set -euo pipefail
cd "$(dirname "$0")/.."

python="${PYTHON:-python3}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
"$python" -m venv "$tmp/venv"
"$tmp/venv/bin/pip" install --quiet -e ".[test]" jax jaxlib  # one resolve: jax may not move TF's numpy
{
  echo "# Exact versions CI tested (scripts/refresh_constraints.sh wrote this with $("$tmp/venv/bin/python" -V))."
  echo "# Use: pip install -c constraints.txt -e \".[test]\""
  # not finegrain itself (editable), nothing installed from a local path or URL, no torch stack
  "$tmp/venv/bin/pip" freeze --exclude-editable \
    | grep -v -e ' @ ' -e '^pkg[-_]resources==' \
    | grep -v -i -E '^(torch|torchvision|torchaudio|triton|nvidia-[a-z0-9-]+)==' \
    || true
} > "$tmp/constraints.txt"
for pin in tensorflow jax jaxlib; do  # refuse to write a file missing a pin .ci/run relies on
  grep -q "^$pin==" "$tmp/constraints.txt" || { echo "no $pin pin resolved; constraints.txt left as it is" >&2; exit 1; }
done
mv "$tmp/constraints.txt" constraints.txt
echo "wrote constraints.txt ($(grep -c '==' constraints.txt) pins)"
