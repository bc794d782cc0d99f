package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/authfallback/authtest"
	"github.com/holdfast-go/holdfast/examples/internal/downstream"
)

// TestRunbook runs every `curl` line of docs/runbook.md tagged "# step:"
// against replicas of resilient-api (run, with the runbook's flags) over
// real HTTP, and checks what the runbook says each answers. With
// HOLDFAST_REDIS_ADDR the two replicas share a Redis store (required under
// CI), and the fleet-wide overrides are checked on the other replica.
func TestRunbook(t *testing.T) {
	steps := runbookSteps(t)
	for _, name := range []string{"status", "degraded-header", "force-read-only", "write-queued", "release-mode",
		"disable-downstream", "enable-downstream", "fault-downstream", "fault-read", "fault-list", "fault-clear",
		"offline-expired", "revoked"} {
		require.Contains(t, steps, name, "docs/runbook.md has no step %q", name)
	}

	idp := authtest.New()
	defer idp.Close()
	ds := httptest.NewServer(downstream.New())
	defer ds.Close()
	var revocations atomic.Value
	revocations.Store(`{"jti": [], "sub": {}}`)
	rev := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = io.WriteString(w, revocations.Load().(string))
	}))
	defer rev.Close()

	store := []string{"-store", "memory"}
	redisAddr := os.Getenv("HOLDFAST_REDIS_ADDR")
	fleet := redisAddr != ""
	if fleet {
		store = []string{"-store", "redis", "-redis-addr", redisAddr,
			"-store-prefix", fmt.Sprintf("holdfast-runbook-%d", time.Now().UnixNano())}
	} else if os.Getenv("CI") != "" {
		t.Fatal("HOLDFAST_REDIS_ADDR is not set")
	}
	flags := func(dir string, extra ...string) []string {
		args := []string{"-issuer", idp.Issuer(), "-audience", idp.Audience(), "-jwks", idp.JWKSURL(),
			"-cache-file", filepath.Join(dir, "jwks.json"), "-downstream", ds.URL,
			"-revocation-url", rev.URL, "-key-refresh", "200ms", "-breaker-delay", "200ms", "-faults"}
		return append(append(args, store...), extra...)
	}
	dirA := t.TempDir()
	a := startReplica(t, flags(dirA))
	b := startReplica(t, flags(t.TempDir()))
	tok := idp.Issue(jwt.MapClaims{"sub": "demo-user", "scope": "read write"})
	other := idp.Issue(jwt.MapClaims{"sub": "other-user", "scope": "read write"})
	env := func(r replica, token string) map[string]string {
		return map[string]string{"API": r.api, "ADMIN": r.admin, "TOKEN": token}
	}

	// 1. The status.
	res := steps.run(t, "status", env(a, tok))
	require.Equal(t, http.StatusOK, res.status)
	st := res.json(t)
	assert.Equal(t, "normal", st["mode"])
	assert.Contains(t, st["components"], "auth")
	assert.Contains(t, st["components"], "breakers")

	// 2. Healthy: no Holdfast-Degraded.
	res = steps.run(t, "degraded-header", env(a, tok))
	require.Equal(t, http.StatusOK, res.status, res.body)
	assert.Empty(t, res.header.Get("Holdfast-Degraded"))

	// 3. Read-only, fleet-wide; a write is queued on the other replica.
	res = steps.run(t, "force-read-only", env(a, tok))
	require.Equal(t, http.StatusOK, res.status, res.body)
	assert.Equal(t, "read-only", res.json(t)["mode"])
	assert.Equal(t, true, res.json(t)["forced"])
	queuedOn := a
	if fleet {
		require.Eventually(t, func() bool { return mode(t, b) == "read-only" }, 5*time.Second, 50*time.Millisecond,
			"the override reaches the other replica")
		queuedOn = b
	}
	res = steps.run(t, "write-queued", env(queuedOn, tok))
	assert.Equal(t, http.StatusAccepted, res.status, res.body)
	assert.Contains(t, res.header.Get("Holdfast-Degraded"), "read-only")
	res = steps.run(t, "release-mode", env(a, tok))
	require.Equal(t, http.StatusOK, res.status)
	assert.Equal(t, "normal", res.json(t)["mode"])
	if fleet {
		require.Eventually(t, func() bool { return mode(t, b) == "normal" }, 5*time.Second, 50*time.Millisecond)
	}
	// The queued write ran: the same request now gets its stored answer.
	require.Eventually(t, func() bool {
		return steps.run(t, "write-queued", env(queuedOn, tok)).status == http.StatusCreated
	}, 10*time.Second, 100*time.Millisecond, "the queued write is replayed once the mode is back")

	// 4. The kill switch.
	res = steps.run(t, "disable-downstream", env(a, tok))
	require.Equal(t, http.StatusOK, res.status, res.body)
	st = res.json(t)
	assert.Equal(t, "degraded", st["mode"])
	dep := st["dependencies"].(map[string]any)["downstream"].(map[string]any)
	assert.Equal(t, "down", dep["forced"])
	assert.Equal(t, "ledger maintenance", dep["forced_reason"])
	if fleet {
		require.Eventually(t, func() bool { return mode(t, b) == "degraded" }, 5*time.Second, 50*time.Millisecond)
	}
	res = steps.run(t, "degraded-header", env(a, tok))
	assert.Equal(t, http.StatusOK, res.status, "reads are served")
	assert.Contains(t, res.header.Get("Holdfast-Degraded"), "degraded")
	res = steps.run(t, "enable-downstream", env(a, tok))
	require.Equal(t, http.StatusOK, res.status)
	assert.Equal(t, "normal", res.json(t)["mode"])

	// 7. Fault injection: the provider answers 503 to this replica; a read
	// it answered before is served stale, then the fault is cleared.
	res = steps.run(t, "fault-downstream", env(a, tok))
	require.Equal(t, http.StatusOK, res.status, res.body)
	res = steps.run(t, "fault-list", env(a, tok))
	require.Equal(t, http.StatusOK, res.status, res.body)
	assert.Contains(t, res.body, `"downstream"`)
	res = steps.run(t, "fault-read", env(a, tok))
	assert.Equal(t, http.StatusOK, res.status, res.body)
	assert.Contains(t, res.header.Get("Holdfast-Degraded"), "stale-if-error")
	res = steps.run(t, "fault-clear", env(a, tok))
	require.Equal(t, http.StatusOK, res.status, res.body)
	res = steps.run(t, "fault-list", env(a, tok))
	assert.NotContains(t, res.body, `"downstream"`)
	require.Eventually(t, func() bool {
		r := steps.run(t, "fault-read", env(a, tok))
		return r.status == http.StatusOK && r.header.Get("Holdfast-Degraded") == ""
	}, 10*time.Second, 100*time.Millisecond, "fresh answers once the fault is cleared")

	// 5 and 6. The IdP goes down: degraded answers, a revocation published
	// during the outage is enforced.
	idp.SetDown(true)
	require.Eventually(t, func() bool { return authFallback(t, a) }, 5*time.Second, 50*time.Millisecond)
	res = steps.run(t, "degraded-header", env(a, tok))
	assert.Equal(t, http.StatusOK, res.status, res.body)
	assert.Contains(t, res.header.Get("Holdfast-Degraded"), "jwks-unreachable")
	// A replica started now, on A's cache file, with a short -max-offline
	// (its clock runs from when the keys were last confirmed, not from
	// the replica's start): degraded at once, refused later (step 5 below).
	dirC := t.TempDir()
	cache, err := os.ReadFile(filepath.Join(dirA, "jwks.json"))
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(filepath.Join(dirC, "jwks.json"), cache, 0o600))
	c := startReplica(t, flags(dirC, "-max-offline", "4s"))
	res = steps.run(t, "offline-expired", env(c, other))
	assert.Equal(t, http.StatusOK, res.status, "from the cache file at once, degraded: %s", res.body)
	assert.NotEmpty(t, res.header.Get("Holdfast-Degraded"))
	revocations.Store(fmt.Sprintf(`{"jti": [], "sub": {"demo-user": %q}}`, time.Now().UTC().Format(time.RFC3339)))
	require.Eventually(t, func() bool {
		return steps.run(t, "revoked", env(a, tok)).status == http.StatusUnauthorized
	}, 5*time.Second, 100*time.Millisecond, "the revoked subject is refused")
	res = steps.run(t, "revoked", env(a, tok))
	assert.Contains(t, res.body, "invalid-token")
	assert.Equal(t, http.StatusOK, steps.run(t, "revoked", env(a, other)).status, "another subject is not")

	// 5. The replica started during the outage (above) fails closed once
	// the fallback outlasts -max-offline.
	require.Eventually(t, func() bool {
		return steps.run(t, "offline-expired", env(c, other)).status == http.StatusServiceUnavailable
	}, 10*time.Second, 100*time.Millisecond, "fails closed after -max-offline")
	res = steps.run(t, "offline-expired", env(c, other))
	assert.Contains(t, res.body, "authentication-unavailable")
	assert.NotEmpty(t, res.header.Get("Retry-After"))
	assert.True(t, authFallback(t, c))
}

// replica is a running resilient-api.
type replica struct{ api, admin string }

// startReplica runs resilient-api with args on two free loopback ports and
// stops it when the test ends.
func startReplica(t *testing.T, args []string) replica {
	t.Helper()
	apiAddr, adminAddr := freeAddr(t), freeAddr(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	logger := slog.New(slog.DiscardHandler)
	go func() { done <- run(ctx, logger, append(args, "-addr", apiAddr, "-admin-addr", adminAddr)) }()
	var once sync.Once
	t.Cleanup(func() {
		once.Do(func() {
			cancel()
			select {
			case err := <-done:
				assert.NoError(t, err)
			case <-time.After(15 * time.Second):
				t.Error("resilient-api did not stop")
			}
		})
	})
	r := replica{api: "http://" + apiAddr, admin: "http://" + adminAddr}
	require.Eventually(t, func() bool {
		resp, err := http.Get(r.api + "/holdfast/status")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}, 10*time.Second, 20*time.Millisecond, "resilient-api is listening")
	return r
}

func freeAddr(t *testing.T) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	addr := l.Addr().String()
	require.NoError(t, l.Close())
	return addr
}

func status(t *testing.T, r replica) map[string]any {
	resp, err := http.Get(r.api + "/holdfast/status")
	require.NoError(t, err)
	defer resp.Body.Close()
	var st map[string]any
	require.NoError(t, json.NewDecoder(resp.Body).Decode(&st))
	return st
}

func mode(t *testing.T, r replica) string { s, _ := status(t, r)["mode"].(string); return s }

func authFallback(t *testing.T, r replica) bool {
	auth, _ := status(t, r)["components"].(map[string]any)["auth"].(map[string]any)
	fb, _ := auth["fallback"].(bool)
	return fb
}

// steps are the curl command lines of docs/runbook.md, by step name.
type steps map[string][]string

func runbookSteps(t *testing.T) steps {
	b, err := os.ReadFile("../../docs/runbook.md")
	require.NoError(t, err)
	out := steps{}
	for _, line := range strings.Split(string(b), "\n") {
		line = strings.TrimSpace(line)
		i := strings.Index(line, "# step: ")
		if !strings.HasPrefix(line, "curl ") || i < 0 {
			continue
		}
		name := strings.Fields(line[i+len("# step: "):])[0]
		words, err := shellWords(strings.TrimSpace(line[:i]))
		require.NoError(t, err, line)
		out[name] = words
	}
	return out
}

// result is the answer to a step's request.
type result struct {
	status int
	header http.Header
	body   string
}

func (r result) json(t *testing.T) map[string]any {
	var m map[string]any
	require.NoError(t, json.Unmarshal([]byte(r.body), &m), r.body)
	return m
}

// run sends the request the step's curl command describes (the options
// the runbook uses: -s, -i, -X, -H, -d), with $NAME expanded from env.
func (s steps) run(t *testing.T, name string, env map[string]string) result {
	t.Helper()
	words := s[name]
	require.NotEmpty(t, words, name)
	method, url, body := "", "", ""
	hdr := http.Header{}
	expand := func(w string) string { return os.Expand(w, func(k string) string { return env[k] }) }
	for i := 1; i < len(words); i++ {
		w := words[i]
		switch w {
		case "-s", "-i", "-si":
		case "-X":
			i++
			method = words[i]
		case "-H":
			i++
			k, v, ok := strings.Cut(expand(words[i]), ":")
			require.True(t, ok, words[i])
			hdr.Add(strings.TrimSpace(k), strings.TrimSpace(v))
		case "-d":
			i++
			body = expand(words[i])
		default:
			require.False(t, strings.HasPrefix(w, "-"), "%s: option %s is not understood by the test", name, w)
			url = expand(w)
		}
	}
	if method == "" {
		method = http.MethodGet
		if body != "" {
			method = http.MethodPost
		}
	}
	if body != "" && hdr.Get("Content-Type") == "" {
		hdr.Set("Content-Type", "application/x-www-form-urlencoded") // what curl -d sends
	}
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	require.NoError(t, err)
	req.Header = hdr
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err, name)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	require.NoError(t, err)
	return result{status: resp.StatusCode, header: resp.Header, body: string(b)}
}

// shellWords splits a command line as sh does for the runbook's commands:
// words separated by blanks, single quotes literal, double quotes keeping
// $NAME for expansion.
func shellWords(s string) ([]string, error) {
	var words []string
	var cur strings.Builder
	in := false
	quote := byte(0)
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quote != 0:
			if c == quote {
				quote = 0
			} else {
				cur.WriteByte(c)
			}
		case c == '\'' || c == '"':
			quote, in = c, true
		case c == ' ' || c == '\t':
			if in {
				words = append(words, cur.String())
				cur.Reset()
				in = false
			}
		default:
			cur.WriteByte(c)
			in = true
		}
	}
	if quote != 0 {
		return nil, fmt.Errorf("unterminated quote in %q", s)
	}
	if in {
		words = append(words, cur.String())
	}
	return words, nil
}
