#!/usr/bin/env bash
# Fetch all (or the named) data sets through the finegrain CLI; stops at the first failure.
# Usage: scripts/download_datasets.sh [NAME...]      (names: food101 flowers102 cub200 cars196 aircraft pets sop)
# Environment: FINEGRAIN_DATA_DIR moves the data dir; FINEGRAIN_MANUAL_DIR is passed as --manual-dir;
# FINEGRAIN (default: `finegrain` on PATH) is the command to run.
set -euo pipefail

FINEGRAIN="${FINEGRAIN:-finegrain}"
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  names=(food101 flowers102 cub200 cars196 aircraft pets sop)
fi
extra=()
if [ -n "${FINEGRAIN_MANUAL_DIR:-}" ]; then
  extra=(--manual-dir "$FINEGRAIN_MANUAL_DIR")
fi
for name in "${names[@]}"; do
  echo "== $name"
  "$FINEGRAIN" fetch "$name" "${extra[@]}"
done
