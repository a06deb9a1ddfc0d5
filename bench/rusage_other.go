//go:build !unix

package bench

import (
	"os"
	"time"
)

// rusageOf reports nothing where the system has no rusage.
func rusageOf(ps *os.ProcessState) (time.Duration, int64) { return 0, 0 }
