package degrade

import (
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"unicode"
	"unicode/utf8"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/internal/httpx"
)

func TestGateEveryTierEveryMode(t *testing.T) {
	type want struct {
		status int
		by     string // "next", "queue" or "" (refused)
	}
	// tier via X-Tier header: read, write, critical.
	tierOf := func(r *http.Request) Tier {
		switch r.Header.Get("X-Tier") {
		case "read":
			return Read
		case "write":
			return Write
		case "bogus":
			return Tier(42)
		}
		return Critical
	}
	cases := []struct {
		mode      Mode
		tier      string
		withQueue bool
		want      want
	}{
		{Normal, "read", true, want{200, "next"}},
		{Normal, "write", true, want{200, "next"}},
		{Normal, "critical", true, want{200, "next"}},
		{Degraded, "read", true, want{200, "next"}},
		{Degraded, "write", true, want{202, "queue"}},
		{Degraded, "write", false, want{200, "next"}},
		{Degraded, "critical", true, want{503, ""}},
		{Degraded, "critical", false, want{503, ""}},
		{Degraded, "bogus", true, want{503, ""}},
		{ReadOnly, "read", true, want{200, "next"}},
		{ReadOnly, "write", true, want{202, "queue"}},
		{ReadOnly, "write", false, want{503, ""}},
		{ReadOnly, "critical", true, want{503, ""}},
		{ReadOnly, "critical", false, want{503, ""}},
	}
	for _, tc := range cases {
		name := tc.mode.String() + "/" + tc.tier
		if !tc.withQueue {
			name += "/no-queue"
		}
		t.Run(name, func(t *testing.T) {
			cfg := Config{Tier: tierOf}
			if tc.withQueue {
				cfg.Queue = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
					w.Header().Set("X-By", "queue")
					w.WriteHeader(http.StatusAccepted)
				})
			}
			c := New(cfg)
			defer c.Close()
			if tc.mode != Normal {
				c.Force(tc.mode, "drill <b>")
			}
			srv := httptest.NewServer(c.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("X-By", "next")
				_, _ = io.WriteString(w, "ok")
			})))
			defer srv.Close()

			req, err := http.NewRequest(http.MethodPost, srv.URL+"/x", strings.NewReader("{}"))
			require.NoError(t, err)
			req.Header.Set("X-Tier", tc.tier)
			resp, err := srv.Client().Do(req)
			require.NoError(t, err)
			defer resp.Body.Close()
			body, _ := io.ReadAll(resp.Body)

			assert.Equal(t, tc.want.status, resp.StatusCode)
			assert.Equal(t, tc.want.by, resp.Header.Get("X-By"))
			if tc.mode == Normal {
				assert.Empty(t, resp.Header.Values(httpx.HeaderDegraded))
			} else {
				assert.Equal(t, tc.mode.String(), resp.Header.Get(httpx.HeaderDegraded))
			}
			if tc.want.status == 503 {
				assert.Equal(t, "30", resp.Header.Get("Retry-After"))
				assert.Equal(t, "application/problem+json", resp.Header.Get("Content-Type"))
				var p map[string]any
				require.NoError(t, json.Unmarshal(body, &p))
				assert.Equal(t, tc.mode.String(), p["mode"])
				assert.Equal(t, "drill <b>", p["reason"])
				assert.Equal(t, float64(503), p["status"])
				assert.Contains(t, p["type"], "service-")
				assert.Contains(t, p["detail"], tc.mode.String())
			}
		})
	}
}

func TestGateDefaultTier(t *testing.T) {
	c := New(Config{RetryAfter: 90 * 1e9})
	defer c.Close()
	c.Force(ReadOnly, "")
	h := c.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	for _, m := range []string{"GET", "HEAD", "OPTIONS", "TRACE"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(m, "/", nil))
		assert.Equal(t, 200, rec.Code, m)
	}
	for _, m := range []string{"POST", "PUT", "PATCH", "DELETE", "get"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(m, "/", nil))
		assert.Equal(t, 503, rec.Code, m)
		assert.Equal(t, "90", rec.Header().Get("Retry-After"))
	}
}

func TestAdminHandler(t *testing.T) {
	c := New(Config{})
	defer c.Close()
	srv := httptest.NewServer(c.AdminHandler())
	defer srv.Close()
	do := func(method, ctype, body string) (*http.Response, map[string]any) {
		req, err := http.NewRequest(method, srv.URL, strings.NewReader(body))
		require.NoError(t, err)
		if ctype != "" {
			req.Header.Set("Content-Type", ctype)
		}
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		defer resp.Body.Close()
		var m map[string]any
		_ = json.NewDecoder(resp.Body).Decode(&m)
		return resp, m
	}

	resp, m := do("PUT", "application/json", `{"mode":"read-only","reason":"incident\r\n42"}`)
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, "read-only", m["mode"])
	assert.Equal(t, true, m["forced"])
	assert.Equal(t, ReadOnly, c.Mode())
	assert.Equal(t, "incident42", c.Reason(), "control characters removed")

	resp, _ = do("POST", "application/json; charset=utf-8", `{"mode":"auto"}`)
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, Normal, c.Mode())

	resp, _ = do("POST", "application/json", `{"mode":"degraded","reason":"`+strings.Repeat("é", 300)+`"}`)
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, Degraded, c.Mode())
	assert.LessOrEqual(t, len(c.Reason()), maxReasonLen)
	assert.Equal(t, strings.Repeat("é", maxReasonLen/2), c.Reason())

	resp, _ = do("DELETE", "", "")
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, Normal, c.Mode())

	// Refused: a form (CSRF), a bad mode, junk, a huge body, another method.
	resp, m = do("POST", "application/x-www-form-urlencoded", `mode=read-only`)
	assert.Equal(t, 415, resp.StatusCode)
	assert.Equal(t, float64(415), m["status"])
	resp, _ = do("POST", "text/plain", `{"mode":"read-only"}`)
	assert.Equal(t, 415, resp.StatusCode)
	resp, _ = do("PUT", "application/json", `{"mode":"panic"}`)
	assert.Equal(t, 400, resp.StatusCode)
	resp, _ = do("PUT", "application/json", `{"mode":`)
	assert.Equal(t, 400, resp.StatusCode)
	resp, _ = do("PUT", "application/json", `{"mode":"read-only","reason":"`+strings.Repeat("a", 5000)+`"}`)
	assert.Equal(t, 413, resp.StatusCode)
	resp, _ = do("PATCH", "application/json", `{"mode":"read-only"}`)
	assert.Equal(t, 405, resp.StatusCode)
	assert.Equal(t, Normal, c.Mode(), "no refused request changed the mode")

	resp, m = do("GET", "", "")
	assert.Equal(t, 200, resp.StatusCode)
	assert.Equal(t, "normal", m["mode"])
}

// FuzzAdminRequest sends arbitrary bodies to the admin handler: it never
// crashes, and a reason it accepts is valid UTF-8 without control
// characters and at most 200 bytes.
func FuzzAdminRequest(f *testing.F) {
	f.Add(`{"mode":"read-only","reason":"incident"}`)
	f.Add(`{"mode":"auto"}`)
	f.Add(`{"mode":"degraded","reason":"\u0000\r\n\u2028é"}`)
	f.Add(`[]`)
	f.Add(`{"dependency":"payments","state":"down","reason":"\u202eevil\u2066"}`)
	f.Add(`{"dependency":"pay\u200bments","state":"up"}`)
	f.Fuzz(func(t *testing.T, body string) {
		c := New(Config{})
		defer c.Close()
		req := httptest.NewRequest(http.MethodPut, "/admin", strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		rec := httptest.NewRecorder()
		c.AdminHandler().ServeHTTP(rec, req)
		if rec.Code != 200 && rec.Code != 400 && rec.Code != 413 {
			t.Fatalf("status %d", rec.Code)
		}
		for name, d := range c.Status().Dependencies {
			for _, ch := range name + d.ForcedReason {
				if invisible(ch) {
					t.Fatalf("invisible character in %q", name+d.ForcedReason)
				}
			}
		}
		r := c.Reason()
		if len(r) > maxReasonLen || !utf8.ValidString(r) {
			t.Fatalf("bad reason %q", r)
		}
		for _, ch := range r {
			if unicode.IsControl(ch) || invisible(ch) {
				t.Fatalf("control or invisible character in %q", r)
			}
		}
	})
}
