package degrade

import "time"

// numBuckets is the resolution of a dependency's sliding window: the window
// is a ring of this many buckets, each Window/numBuckets wide.
const numBuckets = 12

type bucket struct {
	epoch    int64 // index of the bucket-wide time slot this bucket counts
	ok, fail uint32
}

// window counts successes and failures over a sliding time window with a
// ring of buckets. Recording and summing are O(numBuckets) with no
// allocation. It is not safe for concurrent use.
type window struct {
	width   int64     // bucket width in nanoseconds
	base    time.Time // slots count from here, on the monotonic clock
	buckets [numBuckets]bucket
}

// newWindow returns a window of d that starts at base. Slots are measured
// with now.Sub(base), which uses the monotonic clock when both times carry
// it, so a step of the wall clock (NTP, a resumed VM) neither wipes the
// window nor keeps old reports in it.
func newWindow(d time.Duration, base time.Time) window {
	return window{width: bucketWidth(d), base: base}
}

func bucketWidth(d time.Duration) int64 {
	w := int64(d) / numBuckets
	if w <= 0 {
		w = 1
	}
	return w
}

// slot returns the index of the bucket-wide time slot of now; never
// negative (a time before base counts in slot 0).
func (w *window) slot(now time.Time) int64 { return max(0, int64(now.Sub(w.base))) / w.width }

func (w *window) record(now time.Time, failed bool) {
	e := w.slot(now)
	b := &w.buckets[uint64(e)%numBuckets]
	if b.epoch != e {
		*b = bucket{epoch: e}
	}
	if failed {
		if b.fail < ^uint32(0) {
			b.fail++
		}
	} else if b.ok < ^uint32(0) {
		b.ok++
	}
}

// counts returns the reports and failures inside the window ending at now.
func (w *window) counts(now time.Time) (total, failed int) {
	e := w.slot(now)
	for i := range w.buckets {
		b := &w.buckets[i]
		if b.epoch > e-numBuckets && b.epoch <= e {
			total += int(b.ok) + int(b.fail)
			failed += int(b.fail)
		}
	}
	return total, failed
}
