package redisstore_test

import (
	"context"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/internal/caller"
	"github.com/holdfast-go/holdfast/redisstore"
)

// ownRedisPort returns a free loopback port for a Redis this package starts
// and kills: random, so that two runs on one machine do not share one, and
// below the ephemeral range (Linux's starts at 32768, others' at 49152), so
// that while the server is down no other socket is given it.
func ownRedisPort(t *testing.T) string {
	t.Helper()
	for range 50 {
		port := strconv.Itoa(10000 + mrand.IntN(22000))
		if ln, err := net.Listen("tcp", "127.0.0.1:"+port); err == nil {
			_ = ln.Close()
			return port
		}
	}
	t.Fatal("no free port for an own redis-server")
	return ""
}

// ownRedis is a redis-server this test started, with persistence.
type ownRedis struct {
	dir string
	cmd *exec.Cmd
}

func startRedis(t *testing.T, dir, ownRedisPort string) *ownRedis {
	t.Helper()
	path, err := exec.LookPath("redis-server")
	if err != nil {
		t.Skip("redis-server not installed")
	}
	cmd := exec.Command(path, "--port", ownRedisPort, "--bind", "127.0.0.1", "--dir", dir,
		"--appendonly", "yes", "--appendfsync", "always", "--save", "", "--logfile", dir+"/redis.log")
	require.NoError(t, cmd.Start())
	r := &ownRedis{dir: dir, cmd: cmd}
	t.Cleanup(r.kill)
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + ownRedisPort})
	defer c.Close()
	require.Eventually(t, func() bool { return c.Ping(context.Background()).Err() == nil }, 5*time.Second, 20*time.Millisecond,
		"own redis-server on port %s", ownRedisPort)
	info := c.Info(context.Background(), "server").Val()
	require.Contains(t, info, "process_id:"+strconv.Itoa(cmd.Process.Pid)+"\r\n",
		"the redis-server on port %s is the one this test started", ownRedisPort)
	return r
}

// kill stops the server by its PID, as a crash would (SIGKILL: no
// shutdown, no final fsync), and waits for it.
func (r *ownRedis) kill() {
	if r.cmd.ProcessState != nil {
		return
	}
	_ = syscall.Kill(r.cmd.Process.Pid, syscall.SIGKILL)
	_ = r.cmd.Wait()
}

// TestAOFRestartLosesNoQueuedWrite: writes answered 202 while the service is
// degraded survive a crash and restart of Redis (appendonly yes,
// appendfsync always), and each runs once afterwards.
func TestAOFRestartLosesNoQueuedWrite(t *testing.T) {
	dir, port := t.TempDir(), ownRedisPort(t)
	r := startRedis(t, dir, port)
	c := redis.NewClient(&redis.Options{Addr: "127.0.0.1:" + port, MaxRetries: 3})
	t.Cleanup(func() { _ = c.Close() })
	store := redisstore.New(c, redisstore.Config{Prefix: "holdfast-aof"})
	x := idempotency.New(idempotency.Config{Store: store})

	var (
		mu  sync.Mutex
		ran = map[string]int{}
	)
	app := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		mu.Lock()
		ran[string(body)]++
		mu.Unlock()
		w.WriteHeader(http.StatusCreated)
		_, _ = w.Write(body)
	})
	auth := func(next http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			sub := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
			next.ServeHTTP(w, r.WithContext(caller.NewContext(r.Context(), caller.New("https://idp.test", sub, nil, "", nil))))
		})
	}
	srv := httptest.NewServer(auth(http.HandlerFunc(x.Enqueue)))
	t.Cleanup(srv.Close)
	post := func(key, body string) int {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/orders", strings.NewReader(body))
		req.Header.Set("Idempotency-Key", key)
		req.Header.Set("Authorization", "Bearer alice")
		resp, err := srv.Client().Do(req)
		require.NoError(t, err)
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	const n = 200
	for i := range n {
		require.Equal(t, http.StatusAccepted, post(fmt.Sprint("k", i), fmt.Sprint("w", i)))
	}

	r.kill() // a crash, right after the last 202
	startRedis(t, dir, port)

	done, err := x.Replay(context.Background(), x.Handler(app))
	require.NoError(t, err)
	assert.Equal(t, n, done, "every write answered 202 survived the restart")
	mu.Lock()
	assert.Len(t, ran, n)
	for k, v := range ran {
		assert.Equal(t, 1, v, "%s ran once", k)
	}
	mu.Unlock()
}
