package recordcodec

import (
	"bytes"
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestResponseRoundTrip(t *testing.T) {
	for _, tc := range []struct {
		status int
		header http.Header
		body   []byte
	}{
		{201, http.Header{"Content-Type": {"application/json"}, "X-Multi": {"a", "b, c", ""}, "X-Bin": {"\xff\x00é"}}, []byte(`{"id":1}`)},
		{204, nil, nil},
		{400, http.Header{"Empty": {}}, []byte{0, 1, 2, 0xff}},
	} {
		b := EncodeResponse(tc.status, tc.header, tc.body)
		status, header, body, err := DecodeResponse(b)
		require.NoError(t, err)
		assert.Equal(t, tc.status, status)
		assert.Equal(t, tc.header, header)
		assert.True(t, bytes.Equal(tc.body, body))
	}
}

func TestRequestRoundTrip(t *testing.T) {
	h := http.Header{"X-Multi": {"1", "2"}}
	for _, in := range []Request{
		{Method: "PATCH", URL: "/a?b=%20c", Header: h, Body: []byte{0, 0xfe}},
		{Method: "POST", URL: "/o", Header: h, Body: []byte("x"),
			Caller: &Caller{Issuer: "https://idp", Subject: "alice", Scopes: []string{"read", "write"}, Reason: "stale-keys"},
			Sealed: []byte{1, 2, 3}},
		{Method: "POST", URL: "/o", Caller: &Caller{Subject: "bob"}, Sealed: []byte{}},
	} {
		got, err := DecodeRequest(EncodeRequest(in))
		require.NoError(t, err)
		assert.Equal(t, in.Method, got.Method)
		assert.Equal(t, in.URL, got.URL)
		assert.Equal(t, in.Header, got.Header)
		assert.True(t, bytes.Equal(in.Body, got.Body))
		assert.Equal(t, in.Caller, got.Caller)
		assert.Equal(t, in.Sealed, got.Sealed)
	}
	// Version 1, as written before callers were recorded, still reads.
	v1 := append([]byte{1, 4}, "POST\x02/x\x00body"...)
	got, err := DecodeRequest(v1)
	require.NoError(t, err)
	assert.Equal(t, Request{Method: "POST", URL: "/x", Body: []byte("body")}, got)
}

func TestHeaderRoundTrip(t *testing.T) {
	h := http.Header{"Authorization": {"Bearer x"}, "Cookie": {"a=1", "b=2"}}
	got, err := DecodeHeader(EncodeHeader(h))
	require.NoError(t, err)
	assert.Equal(t, h, got)
	_, err = DecodeHeader(append(EncodeHeader(h), 0))
	assert.ErrorIs(t, err, ErrCorrupt, "trailing bytes")
}

func TestDecodeCorrupt(t *testing.T) {
	good := EncodeResponse(200, http.Header{"A": {"b"}}, []byte("x"))
	// Every truncation before the body is corrupt (the body may be cut freely).
	for i := range len(good) - 1 {
		_, _, _, err := DecodeResponse(good[:i])
		assert.ErrorIs(t, err, ErrCorrupt, "truncated at %d", i)
	}
	_, _, _, err := DecodeResponse([]byte{2, 0, 0})
	assert.ErrorIs(t, err, ErrCorrupt, "unknown version")
	_, _, _, err = DecodeResponse([]byte{1, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01})
	assert.ErrorIs(t, err, ErrCorrupt, "huge status")
	_, _, _, err = DecodeResponse([]byte{1, 200, 1, 0xff, 0xff, 0xff, 0xff, 0x0f})
	assert.ErrorIs(t, err, ErrCorrupt, "huge header count")
	// Duplicate header keys are refused.
	dup := []byte{1, 0xc8, 0x01, 2, 1, 'A', 0, 1, 'A', 0}
	_, _, _, err = DecodeResponse(dup)
	assert.ErrorIs(t, err, ErrCorrupt)
	for _, status := range []int{0, 99, 100, 103, 199, 1000} {
		_, _, _, err = DecodeResponse(EncodeResponse(status, nil, nil))
		assert.ErrorIs(t, err, ErrCorrupt, "status %d is not a final response", status)
	}
	_, err = DecodeRequest([]byte{1, 5, 'G'})
	assert.ErrorIs(t, err, ErrCorrupt, "method longer than input")
	_, err = DecodeRequest([]byte{2, 0, 0, 0, 4})
	assert.ErrorIs(t, err, ErrCorrupt, "unknown flag")
	_, err = DecodeRequest([]byte{2, 0, 0, 0, 1, 0, 0, 0xff, 0xff, 0x03})
	assert.ErrorIs(t, err, ErrCorrupt, "huge scope count")
}

func FuzzDecode(f *testing.F) {
	f.Add(EncodeResponse(200, http.Header{"A": {"b", "c"}}, []byte("body")))
	f.Add(EncodeRequest(Request{Method: "POST", URL: "/x", Header: http.Header{"K": {"v"}}, Body: []byte{0}}))
	f.Add(EncodeRequest(Request{Method: "POST", Caller: &Caller{Subject: "s", Scopes: []string{"a"}}, Sealed: []byte{9}}))
	f.Add([]byte{1})
	f.Add(EncodeHeader(http.Header{"Authorization": {"Bearer x"}}))
	f.Fuzz(func(t *testing.T, b []byte) {
		if h, err := DecodeHeader(b); err == nil {
			h2, err := DecodeHeader(EncodeHeader(h))
			require.NoError(t, err)
			assert.Equal(t, h, h2)
		}
		if status, h, body, err := DecodeResponse(b); err == nil {
			again := EncodeResponse(status, h, body)
			s2, h2, b2, err := DecodeResponse(again)
			require.NoError(t, err)
			assert.Equal(t, status, s2)
			assert.Equal(t, h, h2)
			assert.True(t, bytes.Equal(body, b2))
		}
		if r, err := DecodeRequest(b); err == nil {
			r2, err := DecodeRequest(EncodeRequest(r))
			require.NoError(t, err)
			assert.Equal(t, []any{r.Method, r.URL, r.Header, r.Caller, r.Sealed}, []any{r2.Method, r2.URL, r2.Header, r2.Caller, r2.Sealed})
			assert.True(t, bytes.Equal(r.Body, r2.Body))
		}
	})
}
