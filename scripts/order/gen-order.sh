#!/bin/bash
# gen-order.sh WORKSPACE TARGET_DIR ORDER_OUT [ITERATIONS]
# Builds the mesh crate once keeping its objects (cargo rustc -C save-temps), then iterates
# ordloop.py. Needs perf, curl, taskset, and a release mesh-bench in TARGET_DIR (backend).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd); WS=$1; TD=$2; OUT=$(realpath -m "$3"); IT=${4:-60}
WORK=$(mktemp -d /tmp/gen-order.XXXXXX)
(cd "$WS" && CARGO_TARGET_DIR=$TD cargo build --release -p mesh-bench >&2 && \
 CARGO_TARGET_DIR=$TD cargo rustc --release --bin mesh -- -C save-temps --print link-args > "$WORK/linkargs.txt")
python3 "$HERE/prep_relink.py" "$WORK/linkargs.txt" "$WORK"
rm -f "$OUT"
MESH_BENCH=$TD/release/mesh-bench python3 "$HERE/ordloop.py" "$WORK/relink.sh" "$IT" "$OUT"
echo "order file: $OUT ($(wc -l < "$OUT") functions); work dir $WORK" >&2
