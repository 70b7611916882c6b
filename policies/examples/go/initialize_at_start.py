#!/usr/bin/env python3
"""Makes a Go wasip1 reactor (-buildmode=c-shared) initialize itself when it is instantiated.

Go's runtime must run `_initialize` before any //go:wasmexport function (WASI's reactor
convention: the host calls it once after instantiation). Portcullis' `core` transport does not
call `_initialize` (yet), so this rewrites the module: the `_initialize` export becomes the
module's start function (a start function runs during instantiation, with the WASI imports
already linked), and the export is removed so that no host can run it a second time.

Usage: initialize_at_start.py IN.wasm OUT.wasm
"""
import sys

EXPORT_SECTION, START_SECTION = 7, 8


def leb128(n):
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def read_leb128(data, pos):
    result = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def sections(module):
    pos = 8
    while pos < len(module):
        section_id = module[pos]
        size, start = read_leb128(module, pos + 1)
        yield section_id, module[start:start + size]
        pos = start + size


def without_initialize(exports):
    """The export section's payload without `_initialize`, and that function's index."""
    count, pos = read_leb128(exports, 0)
    kept, initialize = [], None
    for _ in range(count):
        start = pos
        name_len, pos = read_leb128(exports, pos)
        name = exports[pos:pos + name_len]
        kind = exports[pos + name_len]
        index, pos = read_leb128(exports, pos + name_len + 1)
        if name == b"_initialize" and kind == 0:
            initialize = index
        else:
            kept.append(exports[start:pos])
    return leb128(len(kept)) + b"".join(kept), initialize


def main(source, target):
    with open(source, "rb") as f:
        module = f.read()
    if module[:8] != b"\0asm\1\0\0\0":
        sys.exit(f"{source}: not a WebAssembly module")
    out, initialize = bytearray(module[:8]), None
    for section_id, payload in sections(module):
        if section_id == START_SECTION:
            sys.exit(f"{source}: already has a start function")
        if section_id == EXPORT_SECTION:
            payload, initialize = without_initialize(payload)
        out += bytes([section_id]) + leb128(len(payload)) + payload
        if section_id == EXPORT_SECTION and initialize is not None:
            start = leb128(initialize)
            out += bytes([START_SECTION]) + leb128(len(start)) + start
    if initialize is None:
        sys.exit(f"{source}: exports no _initialize function")
    with open(target, "wb") as f:
        f.write(out)


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], sys.argv[2])
