// Command team-and-registry is the Portcullis example policy in Go as a WASI command
// (GOOS=wasip1 GOARCH=wasm, a plain `main`), run by the wasi transport: the operation is the first
// argument (`validate` or `validate-settings`, as Kubewarden passes it), the input is stdin and
// the answer goes to stdout. The policy itself is package policy, shared with the reactor.
package main

import (
	"fmt"
	"io"
	"os"

	"portcullis.example/team-and-registry/policy"
)

func main() {
	input, err := io.ReadAll(os.Stdin)
	if err != nil {
		fmt.Fprintln(os.Stderr, "reading stdin:", err)
		os.Exit(1)
	}
	var output []byte
	switch operation := argument(); operation {
	case "validate":
		output = policy.Judge(input)
	case "validate-settings":
		output = policy.SettingsVerdict(input)
	default:
		fmt.Fprintf(os.Stderr, "unknown operation %q: expected validate or validate-settings\n", operation)
		os.Exit(2)
	}
	if _, err := os.Stdout.Write(output); err != nil {
		fmt.Fprintln(os.Stderr, "writing stdout:", err)
		os.Exit(1)
	}
}

// argument is the operation, os.Args[1], or "" when there is none.
func argument() string {
	if len(os.Args) < 2 {
		return ""
	}
	return os.Args[1]
}
