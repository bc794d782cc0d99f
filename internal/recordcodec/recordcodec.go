// Package recordcodec encodes the responses and requests that the shared
// idempotency stores (redisstore, pgstore) keep, in a compact binary form that
// round-trips any bytes: header values with obs-text, binary bodies, nil and
// empty headers alike.
//
// Layout (all integers are unsigned varints, strings are length-prefixed):
//
//	response:   version(1) status header body
//	request v1: version(1) method url header body
//	request v2: version(2) method url header flags [caller] [sealed] body
//	flags:      bit 0 a caller follows, bit 1 sealed credentials follow
//	caller:     issuer subject nscopes { scope } reason
//	sealed:     a string
//	header:     nkeys { key nvalues { value } }
//	body:       the remaining bytes
//
// Requests are written in version 2; version 1 is still read.
//
// Decoding rejects truncated or inconsistent input with ErrCorrupt (and a
// response status outside 200-999, which no handler could write). The records
// come from a shared store that someone else may have written, so every count
// is checked against the bytes left before anything is allocated for it, and
// a header's map starts small: the memory decoding takes stays within a small
// multiple of the input's length.
package recordcodec

import (
	"encoding/binary"
	"errors"
	"net/http"
	"slices"
)

// ErrCorrupt is returned for input that is not a valid encoding.
var ErrCorrupt = errors.New("recordcodec: corrupt record")

const version = 1

// EncodeResponse encodes a response; the result shares no memory with body or
// header.
func EncodeResponse(status int, header http.Header, body []byte) []byte {
	b := make([]byte, 0, 16+headerLen(header)+len(body))
	b = append(b, version)
	b = binary.AppendUvarint(b, uint64(max(status, 0)))
	b = appendHeader(b, header)
	return append(b, body...)
}

// DecodeResponse decodes what EncodeResponse encoded. The body is a copy.
func DecodeResponse(b []byte) (status int, header http.Header, body []byte, err error) {
	d := decoder{b: b}
	if d.byte() != version {
		return 0, nil, nil, ErrCorrupt
	}
	s := d.uvarint()
	if s < 200 || s > 999 {
		// A stored response is final: http.ResponseWriter.WriteHeader
		// panics below 100 and treats 1xx as informational.
		d.fail()
	}
	header = d.header()
	if d.err != nil {
		return 0, nil, nil, d.err
	}
	return int(s), header, slices.Clone(d.b), nil
}

// Request is a queued request's parts.
type Request struct {
	Method, URL string
	Header      http.Header
	Body        []byte
	// Caller is the recorded authorization, nil if none.
	Caller *Caller
	// Sealed are sealed credentials, nil if none.
	Sealed []byte
}

// Caller is a queued request's recorded authorization.
type Caller struct {
	Issuer, Subject string
	Scopes          []string
	Reason          string
}

const (
	requestV2  = 2
	flagCaller = 1
	flagSealed = 2
	knownFlags = flagCaller | flagSealed
)

// EncodeRequest encodes a request.
func EncodeRequest(r Request) []byte {
	n := 32 + len(r.Method) + len(r.URL) + headerLen(r.Header) + len(r.Body) + len(r.Sealed)
	if c := r.Caller; c != nil {
		n += len(c.Issuer) + len(c.Subject) + len(c.Reason) + 16
		for _, s := range c.Scopes {
			n += len(s) + 2
		}
	}
	b := make([]byte, 0, n)
	b = append(b, requestV2)
	b = appendString(b, r.Method)
	b = appendString(b, r.URL)
	b = appendHeader(b, r.Header)
	var flags uint64
	if r.Caller != nil {
		flags |= flagCaller
	}
	if r.Sealed != nil {
		flags |= flagSealed
	}
	b = binary.AppendUvarint(b, flags)
	if c := r.Caller; c != nil {
		b = appendString(b, c.Issuer)
		b = appendString(b, c.Subject)
		b = binary.AppendUvarint(b, uint64(len(c.Scopes)))
		for _, s := range c.Scopes {
			b = appendString(b, s)
		}
		b = appendString(b, c.Reason)
	}
	if r.Sealed != nil {
		b = appendString(b, string(r.Sealed))
	}
	return append(b, r.Body...)
}

// DecodeRequest decodes what EncodeRequest encoded (or its version 1). The
// body is a copy.
func DecodeRequest(b []byte) (Request, error) {
	d := decoder{b: b}
	v := d.byte()
	if v != version && v != requestV2 {
		return Request{}, ErrCorrupt
	}
	var r Request
	r.Method = d.string()
	r.URL = d.string()
	r.Header = d.header()
	if v == requestV2 {
		flags := d.uvarint()
		if flags&^knownFlags != 0 {
			d.fail()
		}
		if flags&flagCaller != 0 {
			c := &Caller{Issuer: d.string(), Subject: d.string()}
			if n := d.count(1); n > 0 {
				c.Scopes = make([]string, 0, min(n, 64))
				for range n {
					c.Scopes = append(c.Scopes, d.string())
				}
			}
			c.Reason = d.string()
			r.Caller = c
		}
		if flags&flagSealed != 0 {
			r.Sealed = []byte(d.string())
		}
	}
	if d.err != nil {
		return Request{}, d.err
	}
	r.Body = slices.Clone(d.b)
	return r, nil
}

// EncodeHeader encodes a header alone.
func EncodeHeader(h http.Header) []byte {
	return appendHeader(make([]byte, 0, headerLen(h)), h)
}

// DecodeHeader decodes what EncodeHeader encoded.
func DecodeHeader(b []byte) (http.Header, error) {
	d := decoder{b: b}
	h := d.header()
	if d.err == nil && len(d.b) != 0 {
		d.fail()
	}
	if d.err != nil {
		return nil, d.err
	}
	return h, nil
}

func headerLen(h http.Header) int {
	n := 2
	for k, vs := range h {
		n += len(k) + 4
		for _, v := range vs {
			n += len(v) + 2
		}
	}
	return n
}

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
}

func appendHeader(b []byte, h http.Header) []byte {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	slices.Sort(keys) // deterministic output
	b = binary.AppendUvarint(b, uint64(len(keys)))
	for _, k := range keys {
		b = appendString(b, k)
		vs := h[k]
		b = binary.AppendUvarint(b, uint64(len(vs)))
		for _, v := range vs {
			b = appendString(b, v)
		}
	}
	return b
}

type decoder struct {
	b   []byte
	err error
}

func (d *decoder) fail() {
	if d.err == nil {
		d.err = ErrCorrupt
	}
	d.b = nil
}

func (d *decoder) byte() byte {
	if len(d.b) == 0 {
		d.fail()
		return 0
	}
	c := d.b[0]
	d.b = d.b[1:]
	return c
}

func (d *decoder) uvarint() uint64 {
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.fail()
		return 0
	}
	d.b = d.b[n:]
	return v
}

// count reads a count of items that take at least size bytes each.
func (d *decoder) count(size int) int {
	n := d.uvarint()
	if n > uint64(len(d.b)/size) {
		d.fail()
		return 0
	}
	return int(n)
}

func (d *decoder) string() string {
	n := d.uvarint()
	if n > uint64(len(d.b)) {
		d.fail()
		return ""
	}
	s := string(d.b[:n])
	d.b = d.b[n:]
	return s
}

func (d *decoder) header() http.Header {
	n := d.count(2) // a key's length and its count of values
	if n == 0 {
		return nil
	}
	// The map grows as keys are read: a hint of n would cost some 40 bytes
	// per input byte before one key was checked.
	h := make(http.Header, min(n, 32))
	for range n {
		k := d.string()
		nv := d.count(1)
		if d.err != nil {
			return nil
		}
		if _, dup := h[k]; dup {
			d.fail()
			return nil
		}
		vs := make([]string, nv)
		for j := range vs {
			vs[j] = d.string()
		}
		if d.err != nil {
			return nil
		}
		h[k] = vs
	}
	return h
}
