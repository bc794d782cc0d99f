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
	h := http.Header{"Authorization": {"Bearer x"}, "X-Multi": {"1", "2"}}
	b := EncodeRequest("PATCH", "/a?b=%20c", h, []byte{0, 0xfe})
	m, u, header, body, err := DecodeRequest(b)
	require.NoError(t, err)
	assert.Equal(t, "PATCH", m)
	assert.Equal(t, "/a?b=%20c", u)
	assert.Equal(t, h, header)
	assert.Equal(t, []byte{0, 0xfe}, body)
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
	_, _, _, _, err = DecodeRequest([]byte{1, 5, 'G'})
	assert.ErrorIs(t, err, ErrCorrupt, "method longer than input")
}

func FuzzDecode(f *testing.F) {
	f.Add(EncodeResponse(200, http.Header{"A": {"b", "c"}}, []byte("body")))
	f.Add(EncodeRequest("POST", "/x", http.Header{"K": {"v"}}, []byte{0}))
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		if status, h, body, err := DecodeResponse(b); err == nil {
			again := EncodeResponse(status, h, body)
			s2, h2, b2, err := DecodeResponse(again)
			require.NoError(t, err)
			assert.Equal(t, status, s2)
			assert.Equal(t, h, h2)
			assert.True(t, bytes.Equal(body, b2))
		}
		if m, u, h, body, err := DecodeRequest(b); err == nil {
			m2, u2, h2, b2, err := DecodeRequest(EncodeRequest(m, u, h, body))
			require.NoError(t, err)
			assert.Equal(t, []any{m, u, h}, []any{m2, u2, h2})
			assert.True(t, bytes.Equal(body, b2))
		}
	})
}
