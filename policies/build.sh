#!/usr/bin/env bash
# Builds every policy crate to a reproducible wasm32-unknown-unknown module in policies/wasm/.
#
#   ./build.sh           build and copy each module to wasm/<crate_name>.wasm, printing sizes
#   ./build.sh --check   build into temporary dirs and fail, naming each module, if any differs
#                        from (or is missing from) the committed wasm/ directory; this is what CI runs
#
# Reproducibility: the toolchain is pinned by rust-toolchain.toml, dependencies by Cargo.lock
# (--locked), codegen by the release profile (codegen-units = 1, lto, no debug info), and every
# machine-specific path that could leak into a module (this checkout, the target dir, cargo and
# rustup homes) is remapped to a fixed prefix, so a clone anywhere produces identical bytes.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
POLICIES_DIR=$(pwd -P)
CARGO_HOME=$(cd "${CARGO_HOME:-$HOME/.cargo}" && pwd -P)
RUSTUP_HOME=$(cd "${RUSTUP_HOME:-$HOME/.rustup}" && pwd -P)
TARGET=wasm32-unknown-unknown
# Size budget per module: every evaluation instantiates a module afresh, so bloat is paid per request.
MAX_MODULE_BYTES=$((300 * 1024))

mode=build
case "${1:-}" in
  "") ;;
  --check) mode=check ;;
  *) echo "usage: $0 [--check]" >&2; exit 2 ;;
esac

if [[ $mode == check ]]; then
  TARGET_DIR=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-policies-target.XXXXXX")
  OUT_DIR=$(mktemp -d "${TMPDIR:-/tmp}/portcullis-policies-wasm.XXXXXX")
  trap 'rm -rf "$TARGET_DIR" "$OUT_DIR"' EXIT
else
  TARGET_DIR=$POLICIES_DIR/target
  OUT_DIR=$POLICIES_DIR/wasm
  mkdir -p "$OUT_DIR"
fi
TARGET_DIR=$(cd "$TARGET_DIR" 2>/dev/null && pwd -P || echo "$TARGET_DIR")

# Policy crates are the workspace members built as cdylib; the SDK is a plain library.
crates=()
for manifest in */Cargo.toml; do
  if grep -q 'cdylib' "$manifest"; then
    crates+=("$(dirname "$manifest")")
  fi
done

# Later remappings win, so the target dir (possibly inside this checkout) comes last.
export RUSTFLAGS="--remap-path-prefix=$POLICIES_DIR=/portcullis/policies --remap-path-prefix=$CARGO_HOME=/cargo --remap-path-prefix=$RUSTUP_HOME=/rustup --remap-path-prefix=$TARGET_DIR=/portcullis/target"
export CARGO_TARGET_DIR=$TARGET_DIR
export CARGO_INCREMENTAL=0
export SOURCE_DATE_EPOCH=0

packages=()
for crate in "${crates[@]}"; do packages+=(-p "$crate"); done
cargo build --release --locked --target "$TARGET" "${packages[@]}"

printf '%-28s %10s  %s\n' module bytes sha256
oversized=()
for crate in "${crates[@]}"; do
  name=${crate//-/_}
  cp "$TARGET_DIR/$TARGET/release/$name.wasm" "$OUT_DIR/$name.wasm"
  size=$(stat -c %s "$OUT_DIR/$name.wasm")
  printf '%-28s %10d  %s\n' "$name.wasm" "$size" "$(sha256sum "$OUT_DIR/$name.wasm" | cut -d' ' -f1)"
  (( size <= MAX_MODULE_BYTES )) || oversized+=("$name.wasm ($size bytes)")
done
if (( ${#oversized[@]} )); then
  echo "modules over the $MAX_MODULE_BYTES-byte budget:" >&2
  printf '  %s\n' "${oversized[@]}" >&2
  exit 1
fi

if [[ $mode == check ]]; then
  failed=()
  for crate in "${crates[@]}"; do
    name=${crate//-/_}.wasm
    if [[ ! -f wasm/$name ]]; then
      failed+=("$name (not committed)")
    elif ! cmp -s "$OUT_DIR/$name" "wasm/$name"; then
      failed+=("$name (differs from a fresh build)")
    fi
  done
  for committed in wasm/*.wasm; do
    [[ -e $committed ]] || continue
    [[ -f $OUT_DIR/$(basename "$committed") ]] || failed+=("$(basename "$committed") (no crate builds it)")
  done
  if (( ${#failed[@]} )); then
    echo "policies/wasm is stale; run policies/build.sh and commit the modules:" >&2
    printf '  %s\n' "${failed[@]}" >&2
    exit 1
  fi
  echo "all ${#crates[@]} modules match the committed ones"
fi
