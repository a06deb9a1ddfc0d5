package state

import (
	"math/bits"
	"math/rand/v2"
)

// keySet is a partition's in-memory index of its stored keys, by the
// first 64 bits of their hash (prefixOf): never absent for a stored key.
// The exact keyIndex is the first choice; when the store's index budget
// has no room for it, a cuckooFilter, a quarter of its size, takes its
// place (Partition.indexMode).
type keySet interface {
	// has reports whether a key with prefix p may be stored: false means
	// certainly not.
	has(p uint64) bool
	// add counts a newly stored key. false: the set could not take it
	// and no longer answers for every stored key (rebuild it).
	add(p uint64) bool
	// remove uncounts a deleted key. false: p was not counted: the set
	// has lost track (rebuild it).
	remove(p uint64) bool
	// keys returns how many stored keys the set counts.
	keys() int64
	// bytes returns the memory the set holds.
	bytes() int64
}

var (
	_ keySet = (*keyIndex)(nil)
	_ keySet = (*cuckooFilter)(nil)
)

// cuckooFilter is a keySet in about 2.7 bytes a key: a cuckoo filter
// (Fan et al., 2014) of 16-bit fingerprints in buckets of four, each key
// in one of two buckets, the second derived from the first and the
// fingerprint so that a fingerprint can move between them without its
// key. A lookup of an absent key says "may be stored" with a probability
// of about 8/65,536 (it then reads Pebble, which decides); it never says
// absent for a stored key. Deleting removes one copy of the fingerprint
// from either bucket, so that keys sharing a fingerprint and bucket are
// counted, up to eight copies.
//
// Unlike keyIndex it cannot grow: its buckets are chosen for the keys it
// was built for, and when an insertion finds no room after evicting
// maxKicks fingerprints along the way, it has lost one (the last evicted)
// and reports it; the partition then rebuilds it, larger, from Pebble.
//
// The buckets are chosen with a random seed of the filter, so that
// callers, who choose the keys hashed, cannot aim keys at one bucket
// without knowing it.
type cuckooFilter struct {
	buckets []uint64 // four 16-bit fingerprints each; 0: an empty slot
	mask    uint64
	seed    uint64
	n       int64
	rng     *rand.PCG // chooses the slot to evict
}

// maxKicks bounds the evictions of one insertion.
const maxKicks = 500

// cuckooFillFactor is the most load a filter is built for: cuckoo
// filters of four-slot buckets take up to about 95% before insertions
// fail.
const cuckooFillFactor = 0.9

// cuckooBucketsFor returns the bucket count for n keys: a power of two
// that holds them at most cuckooFillFactor full.
func cuckooBucketsFor(n int) int {
	want := int(float64(n)/4/cuckooFillFactor) + 1
	if want < 16 {
		return 16
	}
	return 1 << bits.Len(uint(want-1))
}

// newCuckooFilter returns an empty filter for about n keys.
func newCuckooFilter(n int) *cuckooFilter { return newCuckooBuckets(cuckooBucketsFor(n)) }

// newCuckooBuckets returns an empty filter of size buckets, a power of
// two.
func newCuckooBuckets(size int) *cuckooFilter {
	seed := rand.Uint64()
	return &cuckooFilter{buckets: make([]uint64, size), mask: uint64(size - 1), seed: seed, rng: rand.NewPCG(seed, seed^0xda3e39cb94b95bdb)}
}

// locate returns p's fingerprint (never 0) and its two buckets.
func (f *cuckooFilter) locate(p uint64) (fp uint16, i1, i2 uint64) {
	// splitmix64's finalizer: every bit of p moves both the fingerprint
	// and the bucket (hash prefixes of real keys are uniform, those of
	// tests often are not).
	h := p ^ f.seed
	h ^= h >> 30
	h *= 0xbf58476d1ce4e5b9
	h ^= h >> 27
	h *= 0x94d049bb133111eb
	h ^= h >> 31
	fp = uint16(h)
	if fp == 0 {
		fp = 1
	}
	i1 = (h >> 16) & f.mask
	return fp, i1, f.alt(i1, fp)
}

// alt returns the other bucket of fingerprint fp in bucket i.
func (f *cuckooFilter) alt(i uint64, fp uint16) uint64 {
	return (i ^ (uint64(fp) * 0x5bd1e9955bd1e995)) & f.mask
}

func (f *cuckooFilter) has(p uint64) bool {
	fp, i1, i2 := f.locate(p)
	return bucketHas(f.buckets[i1], fp) || bucketHas(f.buckets[i2], fp)
}

func bucketHas(b uint64, fp uint16) bool {
	for s := 0; s < 4; s++ {
		if uint16(b>>(16*s)) == fp {
			return true
		}
	}
	return false
}

// put puts fp into an empty slot of bucket i, if it has one.
func (f *cuckooFilter) put(i uint64, fp uint16) bool {
	b := f.buckets[i]
	for s := 0; s < 4; s++ {
		if uint16(b>>(16*s)) == 0 {
			f.buckets[i] = b | uint64(fp)<<(16*s)
			return true
		}
	}
	return false
}

func (f *cuckooFilter) add(p uint64) bool {
	fp, i1, i2 := f.locate(p)
	if f.put(i1, fp) || f.put(i2, fp) {
		f.n++
		return true
	}
	i := i1
	if f.rng.Uint64()&1 == 1 {
		i = i2
	}
	for k := 0; k < maxKicks; k++ {
		s := uint(f.rng.Uint64() % 4)
		b := f.buckets[i]
		victim := uint16(b >> (16 * s))
		f.buckets[i] = b&^(0xffff<<(16*s)) | uint64(fp)<<(16*s)
		fp, i = victim, f.alt(i, victim)
		if f.put(i, fp) {
			f.n++
			return true
		}
	}
	return false // fp, evicted, is lost: the filter must be rebuilt
}

func (f *cuckooFilter) remove(p uint64) bool {
	fp, i1, i2 := f.locate(p)
	for _, i := range [2]uint64{i1, i2} {
		b := f.buckets[i]
		for s := 0; s < 4; s++ {
			if uint16(b>>(16*s)) == fp {
				f.buckets[i] = b &^ (0xffff << (16 * s))
				f.n--
				return true
			}
		}
	}
	return false
}

func (f *cuckooFilter) keys() int64  { return f.n }
func (f *cuckooFilter) bytes() int64 { return int64(len(f.buckets)) * 8 }
