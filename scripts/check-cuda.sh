#!/usr/bin/env bash
# Compiles the CUDA backend (native/cuda/*.cu) for sm_80 and sm_90 with ptxas' report on, prints
# each kernel's registers, stack and spills, and fails on a compile error or on any spill
# (spill stores or loads > 0) in a GEMM or attention kernel, naming the kernel. Spills elsewhere
# are printed as warnings. Needs nvcc only: no GPU, no CMake. Without nvcc it says so and exits 0.
#
#   scripts/check-cuda.sh               compile and check (CI runs this before the tests)
#   scripts/check-cuda.sh --parse LOG   check a saved `ptxas -v` log instead of compiling
#   NVCC_THREADS=n                      nvcc -t n (default 1: the two targets one after the other)
set -uo pipefail
cd "$(dirname "$0")/.."

# Strict kernels: demangled names matching this must not spill.
STRICT='gemm|attention'

# ptxas -v log on stdin -> one line per kernel and target: arch regs stack stores loads name.
parse_ptxas() {
  awk '
    /Compiling entry function/ {
      match($0, /entry function \x27[^\x27]*\x27/); name = substr($0, RSTART + 16, RLENGTH - 17)
      match($0, /for \x27[^\x27]*\x27/); arch = substr($0, RSTART + 5, RLENGTH - 6)
      key = arch SUBSEP name
      if (!(key in seen)) { seen[key] = 1; order[++n] = key; archs[key] = arch; names[key] = name }
      current = key
      next
    }
    /bytes stack frame/ && current != "" {
      for (i = 1; i <= NF; i++) {
        if ($(i + 1) == "bytes" && $(i + 2) == "stack") stack[current] = $i
        if ($(i + 1) == "bytes" && $(i + 2) == "spill" && $(i + 3) ~ /^stores/) stores[current] = $i
        if ($(i + 1) == "bytes" && $(i + 2) == "spill" && $(i + 3) ~ /^loads/) loads[current] = $i
      }
      next
    }
    /Used [0-9]+ registers/ && current != "" {
      for (i = 1; i <= NF; i++) if ($i == "Used") regs[current] = $(i + 1)
      next
    }
    END {
      for (k = 1; k <= n; k++) {
        key = order[k]
        printf "%s %s %s %s %s %s\n", archs[key], (key in regs) ? regs[key] : "?", (key in stack) ? stack[key] : 0,
          (key in stores) ? stores[key] : 0, (key in loads) ? loads[key] : 0, names[key]
      }
    }'
}

# Demangled, without the namespaces and parameter lists (the name is the last field).
pretty_names() {
  if command -v c++filt > /dev/null; then c++filt; else cat; fi |
    sed -E 's/ernie::cuda::(\(anonymous namespace\)::)?//g; s/^(([^ ]+ ){5})void /\1/; s/\(.*$//'
}

# Reads a ptxas log on stdin; prints the table and the verdict; returns 1 on a strict spill.
check_log() {
  local table failed=0 strict=0 all=0
  table=$(parse_ptxas | pretty_names)
  if [ -z "$table" ]; then
    echo "check-cuda: FAIL: no kernel found in the ptxas output"
    return 1
  fi
  printf '%-6s %5s %6s %9s %9s  %s\n' arch regs stack spill-st spill-ld kernel
  while read -r arch regs stack stores loads name; do
    printf '%-6s %5s %6s %9s %9s  %s\n' "$arch" "$regs" "$stack" "$stores" "$loads" "$name"
  done <<< "$table"
  while read -r arch regs stack stores loads name; do
    all=$((all + 1))
    if [[ "$name" =~ $STRICT ]]; then
      strict=$((strict + 1))
      if [ "$stores" != 0 ] || [ "$loads" != 0 ]; then
        echo "check-cuda: FAIL: $name ($arch) spills: $stores bytes spill stores, $loads bytes spill loads ($regs registers)"
        failed=1
      fi
    elif [ "$stores" != 0 ] || [ "$loads" != 0 ]; then
      echo "check-cuda: warning: $name ($arch) spills: $stores bytes spill stores, $loads bytes spill loads"
    fi
  done <<< "$table"
  if [ "$failed" -ne 0 ]; then return 1; fi
  echo "check-cuda: OK: $strict GEMM and attention kernel builds, none spills ($all kernel builds in all)"
}

if [ "${1:-}" = "--parse" ]; then
  if [ $# -ne 2 ] || [ ! -r "$2" ]; then
    echo "usage: $0 --parse PTXAS_LOG" >&2
    exit 2
  fi
  check_log < "$2"
  exit $?
fi

NVCC=$(command -v nvcc || true)
if [ -z "$NVCC" ] && [ -x /usr/local/cuda/bin/nvcc ]; then NVCC=/usr/local/cuda/bin/nvcc; fi
if [ -z "$NVCC" ]; then
  echo "check-cuda: nvcc not found: the CUDA backend was not compiled (nothing to check)"
  exit 0
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
echo "check-cuda: $("$NVCC" --version | grep -o 'release [0-9.]*' | head -1), sm_80 and sm_90, -Xptxas -v"
status=0
for source in native/cuda/*.cu; do
  name=$(basename "$source" .cu)
  if ! "$NVCC" -t "${NVCC_THREADS:-1}" -std=c++17 -O3 -Inative -c "$source" -o "$tmp/$name.o" \
      -gencode arch=compute_80,code=sm_80 -gencode arch=compute_90,code=sm_90 -Xptxas -v > "$tmp/$name.log" 2>&1; then
    grep -v '^ptxas info\|^    [0-9]* bytes stack' "$tmp/$name.log" | head -40
    echo "check-cuda: FAIL: $source does not compile"
    status=1
  fi
  cat "$tmp/$name.log" >> "$tmp/all.log"
done
check_log < "$tmp/all.log" || status=1
exit $status
