// Command gencerts writes a throw-away certificate authority and broker
// and client certificates (package testcerts) into a directory, for the
// TLS listener of the real-broker tests (scripts/kafka.sh):
//
//	go run ./internal/testcerts/gencerts DIR
package main

import (
	"fmt"
	"os"

	"github.com/kdedup/kdedup/internal/testcerts"
)

func main() {
	if len(os.Args) != 2 {
		fmt.Fprintln(os.Stderr, "usage: gencerts DIR")
		os.Exit(2)
	}
	if err := os.MkdirAll(os.Args[1], 0o700); err != nil {
		fmt.Fprintln(os.Stderr, "gencerts:", err)
		os.Exit(1)
	}
	if _, err := testcerts.Generate(os.Args[1]); err != nil {
		fmt.Fprintln(os.Stderr, "gencerts:", err)
		os.Exit(1)
	}
}
