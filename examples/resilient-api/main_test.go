package main

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

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
}

func TestOpenStore(t *testing.T) {
	s, closeFn, err := openStore(context.Background(), config{store: "memory"})
	require.NoError(t, err)
	assert.NotNil(t, s)
	closeFn()
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
