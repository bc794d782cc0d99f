package idempotency

import (
	"crypto/rand"
	"encoding/hex"
	"testing"
)

func TestEncodeHexIsHexEncode(t *testing.T) {
	all := make([]byte, 256)
	for i := range all {
		all[i] = byte(i)
	}
	check := func(src []byte) {
		t.Helper()
		got := make([]byte, 2*len(src))
		encodeHex(got, src)
		if want := hex.EncodeToString(src); string(got) != want {
			t.Fatalf("encodeHex(%x) = %s", src, got)
		}
	}
	check(all)
	for range 1000 {
		src := make([]byte, 32)
		_, _ = rand.Read(src)
		check(src)
	}
}

func FuzzEncodeHex(f *testing.F) {
	f.Add([]byte{0, 9, 10, 15, 16, 0x9f, 0xa0, 0xff})
	f.Fuzz(func(t *testing.T, src []byte) {
		src = src[:len(src)/4*4]
		if len(src) == 0 {
			return
		}
		got := make([]byte, 2*len(src))
		encodeHex(got, src)
		if want := hex.EncodeToString(src); string(got) != want {
			t.Fatalf("encodeHex(%x) = %s, want %s", src, got, want)
		}
	})
}
