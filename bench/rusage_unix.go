//go:build unix

package bench

import (
	"os"
	"runtime"
	"syscall"
	"time"
)

// rusageOf returns an exited process's CPU time (user + system) and peak
// RSS in bytes: Maxrss is KiB on Linux and the BSDs, bytes on Darwin.
func rusageOf(ps *os.ProcessState) (time.Duration, int64) {
	ru, ok := ps.SysUsage().(*syscall.Rusage)
	if !ok || ru == nil {
		return 0, 0
	}
	cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	rss := int64(ru.Maxrss)
	if runtime.GOOS != "darwin" && runtime.GOOS != "ios" {
		rss <<= 10
	}
	return cpu, rss
}
