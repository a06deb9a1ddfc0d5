package consumer

import (
	"context"
	"sync/atomic"
	"testing"
	"time"
)

// diskObserver records the DiskFull reports.
type diskObserver struct {
	nopObserver
	full chan bool
}

func (o *diskObserver) DiskFull(full bool) { o.full <- full }

// TestDiskFullPauses: below the free space floor the loop decides
// nothing (however many records wait) and is not ready; once the room is
// back it decides them all, each once.
func TestDiskFullPauses(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	rc := newRunCluster(t, 3, 2)
	var free atomic.Uint64
	var checks atomic.Int64
	free.Store(1 << 30)
	obs := &diskObserver{full: make(chan bool, 8)}
	p, _ := rc.startProc(t, t.TempDir(), "a", obs, func(o *Options) {
		o.MinFreeSpace = 64 << 20
		o.FreeSpace = func() (uint64, error) { checks.Add(1); return free.Load(), nil }
	})
	if err := rc.produce(ctx, 0, 10); err != nil {
		t.Fatal(err)
	}
	rc.waitOutputs(ctx, t, 10, 0)

	free.Store(32 << 20) // below the floor
	select {
	case full := <-obs.full:
		if !full {
			t.Fatal("DiskFull(false) first")
		}
	case <-ctx.Done():
		t.Fatal("the loop never noticed the full disk")
	}
	if p.Ready() {
		t.Error("ready while the disk is full")
	}
	if err := rc.produce(ctx, 0, 10); err != nil {
		t.Fatal(err)
	}
	if err := rc.produce(ctx, 1, 10); err != nil {
		t.Fatal(err)
	}
	// Three more looks at the disk (one a second): the records have had
	// time to be decided, and must not have been.
	for at := checks.Load(); checks.Load() < at+3; {
		select {
		case <-ctx.Done():
			t.Fatal("the paused loop stopped looking at the disk")
		case <-time.After(50 * time.Millisecond): // checks is polled: no event to wait on
		}
	}
	rc.waitOutputs(ctx, t, 10, 0) // fails on more than 10

	free.Store(64<<20 + 1) // above the floor, not above it by a tenth: still paused
	for at := checks.Load(); checks.Load() < at+2; {
		select {
		case <-ctx.Done():
			t.Fatal("the paused loop stopped looking at the disk")
		case <-time.After(50 * time.Millisecond): // as above
		}
	}
	if p.Ready() {
		t.Error("resumed at the edge of the floor: it must not flap")
	}
	free.Store(1 << 30)
	select {
	case full := <-obs.full:
		if full {
			t.Fatal("DiskFull(true) again")
		}
	case <-ctx.Done():
		t.Fatal("the loop never resumed")
	}
	rc.waitOutputs(ctx, t, 30, 2*time.Second)
	for !p.Ready() {
		select {
		case <-ctx.Done():
			t.Fatal("never ready after the disk had room again")
		case <-time.After(20 * time.Millisecond): // Ready is polled
		}
	}
}
