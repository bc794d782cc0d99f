// Package recordcodec encodes the responses and requests that the shared
// idempotency stores (redisstore, pgstore) keep, in a compact binary form that
// round-trips any bytes: header values with obs-text, binary bodies, nil and
// empty headers alike.
//
// Layout (all integers are unsigned varints, strings are length-prefixed):
//
//	response: version(1) status header body
//	request:  version(1) method url header body
//	header:   nkeys { key nvalues { value } }
//	body:     the remaining bytes
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

// EncodeRequest encodes a request.
func EncodeRequest(method, url string, header http.Header, body []byte) []byte {
	b := make([]byte, 0, 16+len(method)+len(url)+headerLen(header)+len(body))
	b = append(b, version)
	b = appendString(b, method)
	b = appendString(b, url)
	b = appendHeader(b, header)
	return append(b, body...)
}

// DecodeRequest decodes what EncodeRequest encoded. The body is a copy.
func DecodeRequest(b []byte) (method, url string, header http.Header, body []byte, err error) {
	d := decoder{b: b}
	if d.byte() != version {
		return "", "", nil, nil, ErrCorrupt
	}
	method = d.string()
	url = d.string()
	header = d.header()
	if d.err != nil {
		return "", "", nil, nil, d.err
	}
	return method, url, header, slices.Clone(d.b), nil
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
