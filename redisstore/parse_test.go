package redisstore

import (
	"net/http"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/internal/recordcodec"
)

func TestParseMember(t *testing.T) {
	seq, ms, key, ok := parseMember("12:1700000000000:a:b:c")
	require.True(t, ok)
	assert.Equal(t, uint64(12), seq)
	assert.Equal(t, int64(1700000000000), ms)
	assert.Equal(t, "a:b:c", key, "keys may contain colons")
	for _, bad := range []string{"", "12", "12:x:k", "x:1:k", "12:1", "-1:1:k"} {
		_, _, _, ok := parseMember(bad)
		assert.False(t, ok, "%q", bad)
	}
}

func TestParseReply(t *testing.T) {
	rs := string(recordcodec.EncodeResponse(201, http.Header{"A": {"b"}}, []byte("x")))
	flag, rec, sq, err := parseReplySeq([]any{int64(1), "2", "fp", nil, "3", nil, "1700000000000000", rs, nil, "m", "4"})
	require.NoError(t, err)
	assert.Equal(t, int64(1), flag)
	assert.Equal(t, "m", sq)
	assert.Equal(t, idempotency.StateDone, rec.State)
	assert.Equal(t, uint64(3), rec.Fence)
	assert.Equal(t, int64(1700000000000000), rec.Created.UnixMicro())
	require.NotNil(t, rec.Response)
	assert.Equal(t, 201, rec.Response.Status)
	assert.Equal(t, 4, rec.Attempts)

	for name, v := range map[string][]any{
		"empty":     {},
		"flag type": {"1"},
		"length":    {int64(1), "2"},
		"state":     {int64(0), "7", "fp", nil, "1", nil, "1", nil, nil, nil, nil},
		"fence":     {int64(0), "1", "fp", "o", "-1", "1", "1", nil, nil, nil, nil},
		"time":      {int64(0), "1", "fp", "o", "1", "soon", "1", nil, nil, nil, nil},
		"response":  {int64(0), "2", "fp", nil, "1", nil, "1", "\x09", nil, nil, nil},
		"request":   {int64(0), "3", "fp", nil, "1", nil, "1", nil, "\x01\x09", nil, nil},
		"attempts":  {int64(0), "3", "fp", nil, "1", nil, "1", nil, nil, nil, "-1"},
	} {
		_, _, _, err := parseReplySeq(v)
		assert.Error(t, err, name)
	}
}

// FuzzParseReply feeds what Redis could hold under a record's fields (a
// damaged or foreign hash) to the parser: errors are fine, panics are not.
func FuzzParseReply(f *testing.F) {
	f.Add("2", "fp", "", "1", "", "1", string(recordcodec.EncodeResponse(200, nil, nil)), "", "1:2:k", "")
	f.Add("3", "fp", "o", "9", "17", "1", "", string(recordcodec.EncodeRequest(recordcodec.Request{Method: "POST", URL: "/", Body: []byte("b"),
		Caller: &recordcodec.Caller{Subject: "s"}})), "x", "2")
	f.Fuzz(func(t *testing.T, st, fp, ow, fe, lu, cr, rs, rq, member, at string) {
		opt := func(s string) any {
			if s == "" {
				return nil
			}
			return s
		}
		_, _, _, _ = parseReplySeq([]any{int64(1), st, fp, opt(ow), opt(fe), opt(lu), opt(cr), opt(rs), opt(rq), opt(member), opt(at)})
		_, _, _, _ = parseMember(member)
	})
}
