package main

import (
	"context"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

func TestParseFlagsAndEnvironment(t *testing.T) {
	c, err := parse(nil)
	require.NoError(t, err)
	assert.Equal(t, "memory", c.store)
	assert.Equal(t, "127.0.0.1:8080", c.addr, "loopback by default")

	t.Setenv("RESILIENT_API_STORE", "redis")
	t.Setenv("RESILIENT_API_CALL_TIMEOUT", "750ms")
	c, err = parse([]string{"-redis-addr", "10.0.0.1:6379"})
	require.NoError(t, err)
	assert.Equal(t, "redis", c.store)
	assert.Equal(t, "10.0.0.1:6379", c.redisAddr)
	assert.Equal(t, "750ms", c.callTimeout.String())

	_, err = parse([]string{"-issuer", "https://idp.example.com/"})
	assert.Error(t, err, "a real IdP needs an audience and JWKS URLs")
	_, err = parse([]string{"-offline-key", "k.pem", "-offline-jwks", "http://127.0.0.1:8080/holdfast/offline-jwks"})
	assert.Error(t, err, "a replica mints or verifies only")
}

// assertShared checks that a shared -store also shares the verifiers'
// outage state and the operator's overrides, and that both answer.
func assertShared(t *testing.T, c config) {
	t.Helper()
	ctx := context.Background()
	auth, closeAuth, err := openAuthState(ctx, c)
	require.NoError(t, err)
	defer closeAuth()
	require.NotNil(t, auth, "-store redis|postgres shares the auth state")
	_, found, err := auth.LoadKeys(ctx, "https://no-such-issuer.example/")
	require.NoError(t, err)
	assert.False(t, found)
	overrides, closeOverrides, err := openOverrides(ctx, c)
	require.NoError(t, err)
	defer closeOverrides()
	require.NotNil(t, overrides, "-store redis|postgres shares the overrides")
	_, err = overrides.Overrides(ctx)
	require.NoError(t, err)
}

func TestOpenStore(t *testing.T) {
	s, closeFn, err := openStore(context.Background(), config{store: "memory"})
	require.NoError(t, err)
	assert.NotNil(t, s)
	closeFn()
	auth, closeAuth, err := openAuthState(context.Background(), config{store: "memory"})
	require.NoError(t, err)
	assert.Nil(t, auth, "one instance: nothing to share")
	closeAuth()
	_, _, err = openStore(context.Background(), config{store: "etcd"})
	assert.Error(t, err)
}

func TestOpenStoreRedis(t *testing.T) {
	addr := os.Getenv("HOLDFAST_REDIS_ADDR")
	if addr == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("HOLDFAST_REDIS_ADDR is not set")
		}
		t.Skip("HOLDFAST_REDIS_ADDR is not set")
	}
	s, closeFn, err := openStore(context.Background(), config{store: "redis", redisAddr: addr, keyPrefix: "resilient-api-test"})
	require.NoError(t, err)
	defer closeFn()
	_, found, err := s.Get(context.Background(), "no-such-key")
	require.NoError(t, err)
	assert.False(t, found)
	assertShared(t, config{store: "redis", redisAddr: addr, keyPrefix: "resilient-api-test"})
}

func TestOpenStorePostgres(t *testing.T) {
	dsn := os.Getenv("HOLDFAST_PG_DSN")
	if dsn == "" {
		if os.Getenv("CI") != "" {
			t.Fatal("HOLDFAST_PG_DSN is not set")
		}
		t.Skip("HOLDFAST_PG_DSN is not set")
	}
	s, closeFn, err := openStore(context.Background(), config{store: "postgres", pgDSN: dsn, keyPrefix: "resilient-api-test"})
	require.NoError(t, err)
	defer closeFn()
	_, found, err := s.Get(context.Background(), "no-such-key")
	require.NoError(t, err)
	assert.False(t, found)
	assertShared(t, config{store: "postgres", pgDSN: dsn, keyPrefix: "resilient-api-test"})
}

func TestTableName(t *testing.T) {
	assert.Equal(t, "resilient_api", tableName("resilient-api"))
	assert.Equal(t, "idempotency", tableName("{}!"))
	assert.Equal(t, "a1", tableName("1a1"), "an identifier does not start with a digit")
	assert.Len(t, tableName(strings.Repeat("x", 100)), 48)
	assert.Equal(t, "droptablex", tableName("drop table x;"))
}

func TestOfflineKeyIsCreatedOnceAndReloaded(t *testing.T) {
	path := filepath.Join(t.TempDir(), "offline.pem")
	k1, err := loadOrCreateKey(path)
	require.NoError(t, err)
	st, err := os.Stat(path)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), st.Mode().Perm())
	k2, err := loadOrCreateKey(path)
	require.NoError(t, err)
	assert.True(t, k1.Equal(k2))

	require.NoError(t, os.WriteFile(path, []byte("not a key"), 0o600))
	_, err = loadOrCreateKey(path)
	assert.Error(t, err)
}

// Issue 14 point 6: a client that stalls its body is cut off after
// ReadTimeout, an idle connection after IdleTimeout, and an oversized
// header is refused.
func TestServerTimeouts(t *testing.T) {
	c, err := parse([]string{"-read-timeout", "300ms", "-idle-timeout", "300ms"})
	require.NoError(t, err)
	srv := newServer(c, "127.0.0.1:0", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
	}))
	assert.Equal(t, 300*time.Millisecond, srv.ReadTimeout)
	assert.Equal(t, 300*time.Millisecond, srv.ReadHeaderTimeout)
	assert.Equal(t, 300*time.Millisecond, srv.IdleTimeout)
	assert.Equal(t, 64<<10, srv.MaxHeaderBytes)
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	require.NoError(t, err)
	go func() { _ = srv.Serve(ln) }()
	defer srv.Close()

	closedWithin := func(conn net.Conn, d time.Duration) bool {
		_ = conn.SetReadDeadline(time.Now().Add(d))
		_, err := io.Copy(io.Discard, conn)
		return err == nil // EOF: the server closed it
	}
	stall, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer stall.Close()
	_, err = io.WriteString(stall, "POST /orders HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n{\"wri")
	require.NoError(t, err)
	assert.True(t, closedWithin(stall, 3*time.Second), "a stalled body is cut off")

	idle, err := net.Dial("tcp", ln.Addr().String())
	require.NoError(t, err)
	defer idle.Close()
	assert.True(t, closedWithin(idle, 3*time.Second), "a connection that sends nothing is closed")

	req, err := http.NewRequest(http.MethodGet, "http://"+ln.Addr().String()+"/", nil)
	require.NoError(t, err)
	req.Header.Set("X-Big", strings.Repeat("x", 100<<10))
	resp, err := http.DefaultClient.Do(req)
	require.NoError(t, err)
	resp.Body.Close()
	assert.Equal(t, http.StatusRequestHeaderFieldsTooLarge, resp.StatusCode)
}

func TestWithSuffixKeepsAValidTableName(t *testing.T) {
	assert.Equal(t, "resilient_api_auth", withSuffix("resilient_api", "_auth"))
	long := strings.Repeat("a", 48)
	got := withSuffix(long, "_overrides")
	assert.Len(t, got, 48)
	assert.True(t, strings.HasSuffix(got, "_overrides"))
}
