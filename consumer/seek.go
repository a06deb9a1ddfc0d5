package consumer

import (
	"math"
	"strconv"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// A cold restore (an empty state) need not read a partition's changelog
// records whose keys have all retired: those of transactions whose
// watermark was at least a window (ttl + lateness) below the partition's
// watermark now. Each partition's changelog records say where those end,
// in time:
//
//   - Every changelog record of a partition's transaction carries the same
//     timestamp, the partition's clock for it: the wall clock, but always
//     above the clock of the partition's transaction before (seekClock).
//     Within one owner of the partition the timestamps of its records
//     never go down, in offset order too, since its transactions follow
//     one another.
//   - The owner keeps points (clock, watermark) of its transactions, one a
//     second. A point whose watermark is a window below the partition's
//     now says: every record of the partition with a timestamp at or below
//     its clock is of a transaction whose keys have retired, by the
//     window, since an entry stored in a transaction expires by its
//     watermark + ttl. The marker of each transaction carries, in its
//     HeaderSeek, the clock past the newest such point (0: none yet).
//   - The points are the owner's own, of its own clock, and start anew
//     with each owner: records of an earlier owner are of transactions
//     before the new owner's first, so they retire no later than its
//     points say, whatever its clock was; carried over, an earlier owner's
//     seek could be above the new owner's clock, which would skip its live
//     records. A new owner's markers say 0 until a window of event time
//     has passed.
//
// A cold restore finds the partition's latest marker near the end of the
// changelog (restoreSeek) and, if its seek is set, starts reading at the
// first changelog record at or after that time (ListOffsets by
// timestamp: every record before it is older). Kafka Streams does the
// same for windowed stores (KAFKA-13499), from the changelog's latest
// timestamp; a kdedup changelog partition holds several input
// partitions, of streams whose event times need not agree, so the seek
// is the partition's own.

// HeaderSeek is the header of a changelog marker that gives, as a decimal
// Unix millisecond timestamp, where a cold restore of the partition may
// start reading the changelog (see seekPoints).
const HeaderSeek = "kdedup.seek"

// seekPoints are an owner's points (clock, watermark) of a partition's
// transactions, oldest first, and the seek they give.
type seekPoints struct {
	clock  int64 // the clock of the partition's latest transaction (ms)
	points []seekPoint
	seek   int64 // 0: none yet
}

type seekPoint struct{ clock, watermark int64 }

// seekPointEvery spaces the points: a window of 8 hours holds 28,800 of
// them, 460 KB a partition.
const seekPointEvery = time.Second

// next returns the clock of a new transaction of the partition: now, or
// one millisecond above the last one's.
func (s *seekPoints) next(now time.Time) int64 {
	s.clock = max(now.UnixMilli(), s.clock+1)
	return s.clock
}

// observe records the transaction of clock s.clock ending at watermark
// wm and returns the seek: the clock after the newest point at least
// window below wm, 0 if none.
func (s *seekPoints) observe(wm int64, window time.Duration) int64 {
	if wm == math.MinInt64 {
		return s.seek
	}
	if n := len(s.points); n == 0 || s.clock-s.points[n-1].clock >= seekPointEvery.Milliseconds() {
		s.points = append(s.points, seekPoint{clock: s.clock, watermark: wm})
	}
	cutoff := wm - window.Milliseconds()
	drop := 0
	for drop < len(s.points) && s.points[drop].watermark <= cutoff {
		s.seek = s.points[drop].clock + 1
		drop++
	}
	if drop > 0 {
		s.points = append(s.points[:0], s.points[drop:]...)
	}
	return s.seek
}

// seekHeaders returns the headers of a marker with seek, none without.
func seekHeaders(seek int64) []kgo.RecordHeader {
	if seek <= 0 {
		return nil
	}
	return []kgo.RecordHeader{{Key: HeaderSeek, Value: strconv.AppendInt(nil, seek, 10)}}
}
