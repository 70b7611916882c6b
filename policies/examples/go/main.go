// Command team-and-registry is the Portcullis example policy in Go, built as a WASI reactor that
// exports ABI v1 with //go:wasmexport (GOOS=wasip1 GOARCH=wasm -buildmode=c-shared).
//
// The policy itself is package policy; this file is only the ABI v1 glue.
package main

import (
	"unsafe"

	"portcullis.example/team-and-registry/policy"
)

// main is never called: a reactor's exports are called after _initialize.
func main() {}

// The host writes the input into the buffer allocate returned and reads the output of the last
// call; both are kept in globals so the garbage collector keeps them while the host uses them.
var input, output []byte

// address is where a slice's bytes start in linear memory (wasm addresses fit in 32 bits).
func address(b []byte) int32 {
	return int32(uintptr(unsafe.Pointer(unsafe.SliceData(b))))
}

//go:wasmexport allocate
func allocate(n int32) int32 {
	input = make([]byte, n)
	return address(input)
}

// respond keeps out alive and packs its location: pointer in the high 32 bits, length in the low.
func respond(out []byte) int64 {
	output = out
	return int64(address(output))<<32 | int64(len(output))
}

//go:wasmexport validate
func validate(ptr, n int32) int64 {
	return respond(policy.Judge(received(ptr, n)))
}

//go:wasmexport validate_settings
func validateSettings(ptr, n int32) int64 {
	return respond(policy.SettingsVerdict(received(ptr, n)))
}

// received is the input the host wrote at ptr, which must be the buffer allocate returned.
func received(ptr, n int32) []byte {
	if ptr != address(input) || int(n) > len(input) || n < 0 {
		return nil
	}
	return input[:n]
}
