//go:build unix

package authfallback

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

// The discovery sibling file goes through the same hardened reader as the
// key set's CacheFile, and is bound to its issuer.
func TestDiscoveryFileHardened(t *testing.T) {
	const iss = "https://idp.example.com/"
	dir := t.TempDir()
	doc := &DiscoveryDocument{Issuer: iss, JWKSURI: "https://idp.example.com/jwks", FetchedAt: time.Now().Add(-time.Hour)}
	raw := []byte(`{"issuer":"https://idp.example.com/","jwks_uri":"https://idp.example.com/jwks"}`)
	good := filepath.Join(dir, "keys.json"+DiscoveryFileSuffix)
	require.NoError(t, writeDiscoveryFile(good, doc, raw))
	fi, err := os.Stat(good)
	require.NoError(t, err)
	assert.Equal(t, os.FileMode(0o600), fi.Mode().Perm())
	back, _, err := readDiscoveryFile(good, iss, time.Now())
	require.NoError(t, err, "precondition")
	assert.Equal(t, doc.JWKSURI, back.JWKSURI)
	assert.WithinDuration(t, doc.FetchedAt, back.FetchedAt, time.Second)

	_, _, err = readDiscoveryFile(good, "https://other.example.com/", time.Now())
	assert.Error(t, err, "another issuer")

	loose := filepath.Join(dir, "loose")
	b, err := os.ReadFile(good)
	require.NoError(t, err)
	require.NoError(t, os.WriteFile(loose, b, 0o600))
	require.NoError(t, os.Chmod(loose, 0o666))
	_, _, err = readDiscoveryFile(loose, iss, time.Now())
	assert.Error(t, err, "writable by others")

	link := filepath.Join(dir, "link")
	require.NoError(t, os.Symlink(good, link))
	_, _, err = readDiscoveryFile(link, iss, time.Now())
	assert.Error(t, err, "symlink")

	future := filepath.Join(dir, "future")
	doc.FetchedAt = time.Now().Add(time.Hour)
	require.NoError(t, writeDiscoveryFile(future, doc, raw))
	_, _, err = readDiscoveryFile(future, iss, time.Now())
	assert.Error(t, err, "fetched in the future")

	planted := filepath.Join(dir, "planted")
	doc.FetchedAt = time.Now()
	require.NoError(t, writeDiscoveryFile(planted, doc, []byte(`{"issuer":"https://idp.example.com/","jwks_uri":"http://evil.example/jwks"}`)))
	_, _, err = readDiscoveryFile(planted, iss, time.Now())
	assert.Error(t, err, "a plain http jwks_uri is refused from the file too")
}
