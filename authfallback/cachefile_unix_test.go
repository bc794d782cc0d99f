//go:build unix

package authfallback

import (
	"log/slog"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// Both cache readers (key set and revocation list) go through
// readCacheBytes: a symlink, a FIFO, a group-writable or oversized file is
// refused, and a FIFO never blocks.
func TestCacheFilesRefuseSymlinkFIFOAndLoosePerms(t *testing.T) {
	dir := t.TempDir()
	revDoc := []byte(`{"version":1,"fetched_at":"` + time.Now().Add(-time.Minute).UTC().Format(time.RFC3339Nano) + `","list":{"jti":["a"]}}`)
	good := filepath.Join(dir, "rev.json")
	require.NoError(t, os.WriteFile(good, revDoc, 0o600))
	_, _, err := revReadCacheFile(good, time.Now())
	require.NoError(t, err, "precondition: the document is valid")

	link := filepath.Join(dir, "link.json")
	require.NoError(t, os.Symlink(good, link))
	loose := filepath.Join(dir, "loose.json")
	require.NoError(t, os.WriteFile(loose, revDoc, 0o600))
	require.NoError(t, os.Chmod(loose, 0o620))
	fifo := filepath.Join(dir, "fifo.json")
	require.NoError(t, syscall.Mkfifo(fifo, 0o600))
	big := filepath.Join(dir, "big.json")
	require.NoError(t, os.WriteFile(big, make([]byte, MaxRevocationListSize+4097), 0o600))

	for name, path := range map[string]string{"symlink": link, "group-writable": loose, "fifo": fifo, "oversized": big} {
		done := make(chan error, 1)
		go func() { _, _, err := revReadCacheFile(path, time.Now()); done <- err }()
		select {
		case err := <-done:
			assert.Error(t, err, "revocation cache: "+name)
		case <-time.After(5 * time.Second):
			t.Fatalf("revocation cache: %s: blocked", name)
		}
		go func() {
			_, err := readCacheFile(path, []string{"EdDSA"}, cacheBinding{issuer: "x"}, time.Now())
			done <- err
		}()
		select {
		case err := <-done:
			assert.Error(t, err, "key cache: "+name)
		case <-time.After(5 * time.Second):
			t.Fatalf("key cache: %s: blocked", name)
		}
	}

	// New and NewRevocationList start (do not hang) on a FIFO, and log it.
	done := make(chan struct{})
	go func() {
		defer close(done)
		rl, err := NewRevocationList(RevocationListConfig{CacheFile: fifo, Logger: slog.New(slog.DiscardHandler)})
		if assert.NoError(t, err) {
			assert.False(t, rl.Status().Loaded)
			_ = rl.Close()
		}
		v, err := New(Config{Issuer: "https://idp/", Audience: []string{"api"}, CacheFile: fifo, AuditLog: slog.New(slog.DiscardHandler)})
		if assert.NoError(t, err) {
			_ = v.Close()
		}
	}()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("New blocked on a FIFO")
	}
}
