package idempotency

import (
	"crypto/rand"
	"encoding/hex"
	"net/http"
	"unsafe"
)

// Transport is an http.RoundTripper that gives every guarded request
// without an Idempotency-Key a fresh random one (a version 4 UUID from
// crypto/rand, sent as an RFC 9651 string), so that a retrying transport
// below it may retry the request safely: every attempt below carries the same
// key. Place it above (outside) the retrying transport:
//
//	client := &http.Client{Transport: &idempotency.Transport{Base: &retry.Transport{}}}
//
// A request that already has the header is sent unchanged, so a caller that
// re-sends a request itself sets the key itself. Its zero value is usable.
// It is safe for concurrent use.
type Transport struct {
	// Base sends the requests. If nil, http.DefaultTransport is used.
	Base http.RoundTripper
	// Methods are the methods that get a key. If nil, POST and PATCH.
	Methods []string
}

var _ http.RoundTripper = (*Transport)(nil)

// RoundTrip implements http.RoundTripper. It does not modify req: a keyed
// copy is sent.
func (t *Transport) RoundTrip(req *http.Request) (*http.Response, error) {
	base := t.Base
	if base == nil {
		base = http.DefaultTransport
	}
	if !t.guards(req.Method) || len(req.Header[HeaderKey]) > 0 {
		return base.RoundTrip(req)
	}
	// A shallow copy with its own header, as oauth2.Transport makes: the
	// rest of the request (URL, Body, GetBody) is shared, not modified.
	// The copy, the key's value slice and the key's bytes are one
	// allocation; the header map is the only other.
	k := new(keyedRequest)
	k.req = *req
	k.req.Header = make(http.Header, len(req.Header)+1)
	for name, v := range req.Header {
		k.req.Header[name] = v // the slices are not modified, only the map
	}
	k.quote[0], k.quote[len(k.quote)-1] = '"', '"'
	newKey(k.quote[1:len(k.quote)-1], &k.random)
	// The bytes are never written again: the string may share them.
	k.value[0] = unsafe.String(&k.quote[0], len(k.quote))
	k.req.Header[HeaderKey] = k.value[:] // full: an append by a later layer copies
	return base.RoundTrip(&k.req)
}

// keyedRequest is the keyed copy of a request that Transport sends.
type keyedRequest struct {
	req    http.Request
	value  [1]string
	quote  [38]byte // the key as an RFC 9651 string: a UUID in double quotes
	random [16]byte // the key's bits
}

func (t *Transport) guards(method string) bool {
	if t.Methods == nil {
		return method == http.MethodPost || method == http.MethodPatch
	}
	for _, m := range t.Methods {
		if m == method {
			return true
		}
	}
	return false
}

// NewKey returns a fresh idempotency key: a random (version 4) UUID.
func NewKey() string {
	var s [36]byte
	var b [16]byte
	newKey(s[:], &b)
	return string(s[:])
}

// newKey writes a random UUID to s (36 bytes), drawing its bits into b
// (which the race detector's build makes crypto/rand.Read move to the
// heap when it is a local).
func newKey(s []byte, b *[16]byte) {
	_, _ = rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	hex.Encode(s[0:8], b[0:4])
	s[8] = '-'
	hex.Encode(s[9:13], b[4:6])
	s[13] = '-'
	hex.Encode(s[14:18], b[6:8])
	s[18] = '-'
	hex.Encode(s[19:23], b[8:10])
	s[23] = '-'
	hex.Encode(s[24:36], b[10:])
}
