#!/usr/bin/env bash
# Real fuzzing with libFuzzer (clang from Debian). Builds every tests/fuzz/fuzz_*.c
# target with ASan+UBSan and coverage instrumentation in $BUILD (default
# build-fuzz) and runs each for $SECONDS_PER_TARGET seconds (default 60).
#
#   scripts/fuzz.sh                     all targets
#   scripts/fuzz.sh fuzz_token          one target
#   SECONDS_PER_TARGET=600 scripts/fuzz.sh
#
# New inputs go to $BUILD/fuzz-corpus/<target>/ (the checked-in seeds in
# tests/fuzz/corpus/<target>/ are read, never written); crashes are written as
# $BUILD/fuzz-artifacts/<target>-crash-*. Copy a crash into
# tests/fuzz/corpus/<target>/ once fixed, so the regression run keeps it.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build-fuzz}
SECS=${SECONDS_PER_TARGET:-60}
JOBS=${JOBS:-2}
command -v clang >/dev/null || { echo "fuzz.sh: clang is needed (apt-get install clang)" >&2; exit 1; }

if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for f in tests/fuzz/fuzz_*.c; do targets+=("$(basename "$f" .c)"); done
fi

CC=clang cmake -S . -B "$BUILD" -DCMAKE_BUILD_TYPE=Debug -DTALLY_SANITIZE=ON -DTALLY_LIBFUZZER=ON \
  -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link" >/dev/null
cmake --build "$BUILD" -j "$JOBS" --target "${targets[@]}"

mkdir -p "$BUILD/fuzz-artifacts"
status=0
for t in "${targets[@]}"; do
  bin=$(find "$BUILD" -type f -name "$t" -perm -u+x | head -n1)
  mkdir -p "$BUILD/fuzz-corpus/$t"
  echo "== $t for ${SECS}s"
  if ! "$bin" -max_total_time="$SECS" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
      -artifact_prefix="$BUILD/fuzz-artifacts/$t-" "$BUILD/fuzz-corpus/$t" "tests/fuzz/corpus/$t"; then
    echo "fuzz.sh: $t FAILED (see $BUILD/fuzz-artifacts/)" >&2
    status=1
  fi
done
exit $status
