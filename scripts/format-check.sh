#!/usr/bin/env bash
# Checks that the C sources follow .clang-format (CONVENTIONS.md: checked in
# CI; ctest runs it as style.clang_format). `make format` fixes what it reports.
set -euo pipefail
cd "$(dirname "$0")/.."
command -v clang-format >/dev/null || { echo "format-check: clang-format is needed (apt-get install clang-format)" >&2; exit 1; }
mapfile -t files < <(git ls-files 'src/*.c' 'src/*.h' 'tests/*.c' 'bench/*.c')
bad=()
for f in "${files[@]}"; do
	clang-format --dry-run --Werror "$f" >/dev/null 2>&1 || bad+=("$f")
done
if [ ${#bad[@]} -gt 0 ]; then
	printf 'not formatted (run make format): %s\n' "${bad[@]}" >&2
	exit 1
fi
echo "format-check: ${#files[@]} files follow .clang-format"
