package idempotency

import (
	"net/http"
	"testing"
)

func TestSameStored(t *testing.T) {
	x := New(Config{Store: NewMemoryStore(MemoryConfig{})})
	defer x.cfg.Store.(*MemoryStore).Close()
	ct := http.Header{"Content-Type": {"application/json"}}
	both := http.Header{"Content-Type": {"application/json"}, "Location": {"/orders/1"}}
	for _, c := range []struct {
		name   string
		stored http.Header
		h      http.Header
		want   bool
	}{
		{"same", ct, http.Header{"Content-Type": {"application/json"}}, true},
		{"other value", ct, http.Header{"Content-Type": {"text/plain"}}, false},
		{"more values", ct, http.Header{"Content-Type": {"application/json", "x"}}, false},
		{"other key, same count", ct, http.Header{"X-Other": {"application/json"}}, false},
		{"and one not stored", ct, http.Header{"Content-Type": {"application/json"}, "Set-Cookie": {"s=1"}}, true},
		{"one stored missing, one not stored", both, http.Header{"Content-Type": {"application/json"}, "X-Internal": {"1"}}, false},
		{"one stored more", ct, http.Header{"Content-Type": {"application/json"}, "Location": {"/orders/1"}}, false},
		{"both", both, http.Header{"Location": {"/orders/1"}, "Content-Type": {"application/json"}}, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			x.lastHeader.Store(nil)
			stored, size := x.storedHeader(c.stored) // caches it
			if size != headerSize(stored) {
				t.Fatalf("size %d, want %d", size, headerSize(stored))
			}
			if got := x.sameStored(x.lastHeader.Load(), c.h); got != c.want {
				t.Errorf("sameStored = %v, want %v", got, c.want)
			}
			got, _ := x.storedHeader(c.h)
			if shared := len(got) > 0 && sameMap(got, stored); shared != c.want {
				t.Errorf("storedHeader shared the stored copy: %v, want %v", shared, c.want)
			}
		})
	}
}

// sameMap reports whether a and b are one map.
func sameMap(a, b http.Header) bool {
	if len(a) != len(b) {
		return false
	}
	for k := range a {
		a[k+"-probe"] = nil
		_, ok := b[k+"-probe"]
		delete(a, k+"-probe")
		return ok
	}
	return false
}
