package consumer

import (
	"context"
	"time"
)

// Failing closed on a full disk.
//
// Pebble must never meet a full file system with changes it has to keep:
// a write that fails there can take the process down (its WAL rotation
// has panicked on ENOSPC), and a process that restarts into the same full
// disk is a crash loop, not a stop. So the loop checks the room left on
// the state's file system before every transaction (no transaction open:
// what was decided so far is committed or aborted as usual, and its state
// is in memory or in Pebble already). Below Options.MinFreeSpace it
// pauses its fetches, decides nothing, answers /readyz 503
// (Processor.Ready) and reports it (Observer.DiskFull, a log line), then
// looks again every diskRecheck. Once the room is back above the floor
// plus a tenth of it (so that it does not flap at the edge), it resumes
// the fetches from where it stopped: nothing was decided meanwhile, so
// nothing is lost or decided twice.

// diskRecheck is how often a paused loop looks at the room left.
const diskRecheck = time.Second

// lowOnDisk reports whether the loop must not decide records now: the
// state's file system is below the floor. It pauses or resumes c's
// fetches on a change. A free space that cannot be read never stops the
// loop (logged once): the floor is a guard, not a precondition.
func (p *Processor) lowOnDisk(c client) bool {
	floor := p.opts.MinFreeSpace
	if floor <= 0 {
		return false
	}
	avail, err := p.freeSpace()
	if err != nil {
		if msg := err.Error(); msg != p.spaceErr {
			p.spaceErr = msg
			p.log.Warn().Err(err).Msg("reading the room left on the state's file system: state.min_free_space not enforced")
		}
		return false
	}
	full := p.diskFull.Load()
	switch {
	case !full && avail < uint64(floor):
		p.diskFull.Store(true)
		p.obs.DiskFull(true)
		c.PauseFetchTopics(p.inputs()...)
		p.log.Error().Uint64("avail_bytes", avail).Int64("min_free_space", floor).
			Msg("state disk below min_free_space: deciding nothing until it has room again (free space on state_dir's file system, or raise its size)")
		return true
	case full && avail >= uint64(floor+floor/10):
		p.diskFull.Store(false)
		p.obs.DiskFull(false)
		c.ResumeFetchTopics(p.inputs()...)
		p.log.Info().Uint64("avail_bytes", avail).Int64("min_free_space", floor).Msg("state disk has room again: deciding records")
		return false
	}
	return full
}

// freeSpace returns the bytes available on the state's file system.
func (p *Processor) freeSpace() (uint64, error) {
	if p.opts.FreeSpace != nil {
		return p.opts.FreeSpace()
	}
	sp, err := p.opts.Store.Space()
	return sp.Avail, err
}

// waitDisk waits diskRecheck, or less: until ctx ends or a key request
// wakes the loop.
func (p *Processor) waitDisk(ctx context.Context) {
	wctx, cancel := context.WithTimeout(ctx, diskRecheck)
	defer cancel()
	p.armWake(cancel)
	<-wctx.Done()
	p.setWake(nil)
}
