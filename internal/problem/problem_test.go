package problem

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestWrite(t *testing.T) {
	tests := []struct {
		name       string
		p          Problem
		wantStatus int
		wantType   string
		wantTitle  string
		wantHeader map[string]string
	}{
		{
			name:       "zero value is a 500 about:blank",
			wantStatus: 500,
			wantType:   "about:blank",
			wantTitle:  "Internal Server Error",
		},
		{
			name:       "slug gets the base, retry-after rounds up",
			p:          Problem{Type: "circuit-open", Status: 503, Title: "Circuit open", RetryAfter: 1500 * time.Millisecond},
			wantStatus: 503,
			wantType:   TypeBase + "circuit-open",
			wantTitle:  "Circuit open",
			wantHeader: map[string]string{"Retry-After": "2"},
		},
		{
			name:       "absolute URI kept, www-authenticate set",
			p:          Problem{Type: "https://example.com/p", Status: 401, WWWAuthenticate: `Bearer error="invalid_token"`},
			wantStatus: 401,
			wantType:   "https://example.com/p",
			wantTitle:  "Unauthorized",
			wantHeader: map[string]string{"WWW-Authenticate": `Bearer error="invalid_token"`},
		},
		{
			name:       "tiny retry-after is at least one second",
			p:          Problem{Type: "x", Status: 429, RetryAfter: time.Millisecond},
			wantStatus: 429,
			wantType:   TypeBase + "x",
			wantTitle:  "Too Many Requests",
			wantHeader: map[string]string{"Retry-After": "1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			rec.Header().Set("Content-Length", "99")
			rec.Header().Set("Holdfast-Degraded", "kept")
			Write(rec, tt.p)

			assert.Equal(t, tt.wantStatus, rec.Code)
			assert.Equal(t, ContentType, rec.Header().Get("Content-Type"))
			assert.Equal(t, "no-store", rec.Header().Get("Cache-Control"))
			assert.Equal(t, "nosniff", rec.Header().Get("X-Content-Type-Options"))
			assert.Empty(t, rec.Header().Get("Content-Length"))
			assert.Equal(t, "kept", rec.Header().Get("Holdfast-Degraded"))
			for k, v := range tt.wantHeader {
				assert.Equal(t, v, rec.Header().Get(k), k)
			}
			if _, ok := tt.wantHeader["Retry-After"]; !ok {
				assert.Empty(t, rec.Header().Get("Retry-After"))
			}

			var body map[string]any
			require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body))
			assert.Equal(t, tt.wantType, body["type"])
			assert.Equal(t, tt.wantTitle, body["title"])
			assert.Equal(t, float64(tt.wantStatus), body["status"])
		})
	}
}

func TestWriteExtensionsCannotOverrideStandardMembers(t *testing.T) {
	rec := httptest.NewRecorder()
	Write(rec, Problem{
		Type:     "mode",
		Status:   http.StatusServiceUnavailable,
		Detail:   "read-only",
		Instance: "/orders",
		Extensions: map[string]any{
			"status": 200, "type": "evil", "title": "evil", "mode": "read-only",
		},
	})
	var body map[string]any
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body))
	assert.Equal(t, float64(503), body["status"])
	assert.Equal(t, TypeBase+"mode", body["type"])
	assert.Equal(t, "Service Unavailable", body["title"])
	assert.Equal(t, "read-only", body["detail"])
	assert.Equal(t, "/orders", body["instance"])
	assert.Equal(t, "read-only", body["mode"])
}

func TestWriteUnencodableExtensionFallsBack(t *testing.T) {
	rec := httptest.NewRecorder()
	Write(rec, Problem{Type: "x", Status: 400, Extensions: map[string]any{"bad": make(chan int)}})
	var body map[string]any
	require.NoError(t, json.Unmarshal(rec.Body.Bytes(), &body))
	assert.Equal(t, float64(400), body["status"])
	assert.NotContains(t, body, "bad")
}

func TestRetryAfterValue(t *testing.T) {
	assert.Equal(t, "1", RetryAfterValue(0))
	assert.Equal(t, "1", RetryAfterValue(-time.Second))
	assert.Equal(t, "30", RetryAfterValue(30*time.Second))
	assert.Equal(t, "31", RetryAfterValue(30*time.Second+time.Nanosecond))
}

func BenchmarkWrite(b *testing.B) {
	b.ReportAllocs()
	p := Problem{Type: "circuit-open", Status: 503, Detail: "upstream", RetryAfter: 30 * time.Second}
	for b.Loop() {
		rec := httptest.NewRecorder()
		Write(rec, p)
	}
}

// FuzzWrite checks that any detail, type or instance text (which may echo
// request data) yields a valid JSON document that round-trips and that the
// status and headers cannot be steered by it.
func FuzzWrite(f *testing.F) {
	f.Add("circuit-open", "Circuit open", "upstream failed", "/x", 503)
	f.Add("https://e.com/p", "", "\"quoted\"\n<script>", "", 0)
	f.Add("", "\x00\xff", "\u2028", "about:blank", 999)
	f.Fuzz(func(t *testing.T, typ, title, detail, instance string, status int) {
		if status < 100 || status > 999 {
			status = 0
		}
		rec := httptest.NewRecorder()
		Write(rec, Problem{Type: typ, Title: title, Status: status, Detail: detail, Instance: instance})
		var body map[string]any
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil {
			t.Fatalf("invalid JSON %q: %v", rec.Body.Bytes(), err)
		}
		if status == 0 {
			status = 500
		}
		if rec.Code != status || body["status"] != float64(status) {
			t.Fatalf("status %d / %v, want %d", rec.Code, body["status"], status)
		}
		if rec.Header().Get("Content-Type") != ContentType {
			t.Fatalf("content type %q", rec.Header().Get("Content-Type"))
		}
		if _, ok := body["type"].(string); !ok {
			t.Fatalf("type missing: %v", body)
		}
	})
}
