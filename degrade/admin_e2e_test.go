package degrade

import (
	"bytes"
	"encoding/json"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type lockedBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuf) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

func adminDo(t *testing.T, url, method, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return resp.StatusCode, b
}

// Issue 14 point 6: the admin reason loses invisible and bidi characters,
// in the status and in refusal bodies.
func TestAdminStripsInvisibleAndBidi(t *testing.T) {
	c := New(Config{AuditLog: slog.New(slog.DiscardHandler)})
	defer c.Close()
	admin := httptest.NewServer(c.AdminHandler())
	defer admin.Close()
	api := httptest.NewServer(c.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {})))
	defer api.Close()

	evil := "IdP \u202Eincident\u202C \u2066 4711\u2069\u200B\u200D\uFEFF\u2028\u00AD\U000E0041 done"
	body, _ := json.Marshal(AdminRequest{Mode: "read-only", Reason: evil})
	code, status := adminDo(t, admin.URL, http.MethodPut, string(body))
	require.Equal(t, 200, code, string(status))
	var st Status
	require.NoError(t, json.Unmarshal(status, &st))
	assert.Equal(t, "IdP incident  4711 done", st.Reason)

	resp, err := http.Post(api.URL, "application/json", strings.NewReader("{}"))
	require.NoError(t, err)
	refusal, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	require.Equal(t, 503, resp.StatusCode)
	var p map[string]any
	require.NoError(t, json.Unmarshal(refusal, &p))
	assert.Equal(t, "IdP incident  4711 done", p["reason"])
	for _, r := range []rune{0x202E, 0x2066, 0x200B, 0xFEFF, 0x2028, 0xAD, 0xE0041} {
		assert.NotContains(t, string(refusal), string(r))
		assert.NotContains(t, p["detail"], string(r))
	}

	// A dependency name with invisible characters is refused, not cleaned
	// into another name.
	code, _ = adminDo(t, admin.URL, http.MethodPut, `{"dependency":"pay\u200Bments","state":"down"}`)
	assert.Equal(t, 400, code)
}

// Issue 14 point 4: a per-dependency kill switch, audited.
func TestAdminDependencySwitch(t *testing.T) {
	audit := &lockedBuf{}
	c := New(Config{
		Dependencies: map[string]Mode{"payments": Degraded, "idp": ReadOnly},
		AuditLog:     slog.New(slog.NewJSONHandler(audit, nil)),
	})
	defer c.Close()
	admin := httptest.NewServer(c.AdminHandler())
	defer admin.Close()

	code, b := adminDo(t, admin.URL, http.MethodPost, `{"dependency":"payments","state":"down","reason":"disable payments: PSP incident"}`)
	require.Equal(t, 200, code, string(b))
	var st Status
	require.NoError(t, json.Unmarshal(b, &st))
	assert.Equal(t, Degraded, st.Mode)
	assert.False(t, st.Forced, "the mode follows the dependency, it is not forced")
	assert.True(t, st.Dependencies["payments"].Down)
	assert.Equal(t, "down", st.Dependencies["payments"].Forced)
	assert.Equal(t, "payments: forced down: disable payments: PSP incident", st.Reason)
	assert.Contains(t, audit.String(), `"action":"force-dependency-down"`)
	assert.Contains(t, audit.String(), `"dependency":"payments"`)
	assert.Contains(t, audit.String(), `"by":"admin 127.0.0.1:`)

	// Forced up: the IdP's failures are ignored.
	for range 20 {
		c.Report("idp", io.ErrUnexpectedEOF)
	}
	require.Equal(t, ReadOnly, c.Mode())
	code, _ = adminDo(t, admin.URL, http.MethodPut, `{"dependency":"idp","state":"up","reason":"false alarm"}`)
	require.Equal(t, 200, code)
	assert.Equal(t, Degraded, c.Mode(), "idp forced up; payments still forced down")
	c.SetDown("payments", false, "")
	assert.Equal(t, Degraded, c.Mode(), "SetDown does not lift an operator's switch")

	code, _ = adminDo(t, admin.URL, http.MethodPut, `{"dependency":"payments","state":"auto"}`)
	require.Equal(t, 200, code)
	code, _ = adminDo(t, admin.URL, http.MethodPut, `{"dependency":"idp","state":"auto"}`)
	require.Equal(t, 200, code)
	assert.Equal(t, ReadOnly, c.Mode(), "released: the IdP's failures count again")
	assert.Contains(t, audit.String(), `"action":"release-dependency"`)

	code, _ = adminDo(t, admin.URL, http.MethodPut, `{"dependency":"idp","state":"sideways"}`)
	assert.Equal(t, 400, code)
}
