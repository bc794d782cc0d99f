package authfallback

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"
)

// cacheFileVersion is the version of the CacheFile format. Version 2
// binds the file to Config.Issuer and Config.JWKSURLs; version 1 files
// (without that binding) are refused.
const cacheFileVersion = 2

// cacheFileDoc is the content of Config.CacheFile.
type cacheFileDoc struct {
	Version int `json:"version"`
	// Issuer is the Config.Issuer of the Verifier that wrote the file; a
	// Verifier for another issuer refuses it.
	Issuer string `json:"issuer"`
	// JWKSURLs are the Config.JWKSURLs of the Verifier that wrote the file;
	// a Verifier whose JWKSURLs share none of them refuses it.
	JWKSURLs  []string        `json:"jwks_urls,omitempty"`
	FetchedAt time.Time       `json:"fetched_at"`
	Source    string          `json:"source,omitempty"`
	JWKS      json.RawMessage `json:"jwks"`
}

// cacheBinding is what a CacheFile must have been written for.
type cacheBinding struct {
	issuer   string
	jwksURLs []string
}

// check refuses a file written for another issuer or other JWKS URLs.
func (b cacheBinding) check(d *cacheFileDoc) error {
	if d.Issuer == "" || d.Issuer != b.issuer {
		return fmt.Errorf("authfallback: cache file: written for issuer %q, not %q", d.Issuer, b.issuer)
	}
	if len(b.jwksURLs) == 0 {
		return nil
	}
	for _, u := range d.JWKSURLs {
		if contains(b.jwksURLs, u) {
			return nil
		}
	}
	return errors.New("authfallback: cache file: written for other JWKS URLs")
}

// maxClockSkewCacheFile is how far in the future a CacheFile's fetched_at may
// lie (clock adjustments between two runs) before the file is refused.
const maxClockSkewCacheFile = time.Minute

// parseCacheFile parses the content of a CacheFile. A file that is not in
// the format, holds no usable key or claims a fetch time in the future is
// refused, and so is one written for another issuer or other JWKS URLs.
func parseCacheFile(b []byte, algs []string, bind cacheBinding, now time.Time) (*keySet, error) {
	if len(b) > 2*MaxJWKSSize {
		return nil, errors.New("authfallback: cache file too large")
	}
	var d cacheFileDoc
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, fmt.Errorf("authfallback: cache file: %w", err)
	}
	if d.Version != cacheFileVersion {
		return nil, fmt.Errorf("authfallback: cache file: unknown version %d", d.Version)
	}
	if err := bind.check(&d); err != nil {
		return nil, err
	}
	if d.FetchedAt.IsZero() || d.FetchedAt.After(now.Add(maxClockSkewCacheFile)) {
		return nil, errors.New("authfallback: cache file: invalid fetched_at")
	}
	ks, err := parseKeySet(d.JWKS, algs)
	if err != nil {
		return nil, fmt.Errorf("authfallback: cache file: %w", err)
	}
	ks.fetchedAt = d.FetchedAt
	if ks.fetchedAt.After(now) {
		ks.fetchedAt = now
	}
	ks.source = d.Source
	ks.fromFile = true
	return ks, nil
}

// readCacheFile loads the key set from path.
func readCacheFile(path string, algs []string, bind cacheBinding, now time.Time) (*keySet, error) {
	b, err := readCacheBytes(path, 2*MaxJWKSSize)
	if err != nil {
		return nil, err
	}
	return parseCacheFile(b, algs, bind, now)
}

// readCacheBytes reads a cache file (the key set's or the revocation
// list's) that this process trusts: it must be a regular file (not a
// symbolic link, FIFO or device: never followed, never blocked on), not
// writable by group or others (on Unix), and at most max bytes.
func readCacheBytes(path string, max int64) ([]byte, error) {
	fi, err := os.Lstat(path)
	if err != nil {
		return nil, err
	}
	if err := checkCacheFileInfo(path, fi, max); err != nil {
		return nil, err
	}
	f, err := openCacheFile(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	// The path may have been swapped between Lstat and open.
	ofi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !os.SameFile(fi, ofi) {
		return nil, fmt.Errorf("authfallback: cache file %s changed while being opened", path)
	}
	if err := checkCacheFileInfo(path, ofi, max); err != nil {
		return nil, err
	}
	b, err := io.ReadAll(io.LimitReader(f, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(b)) > max {
		return nil, fmt.Errorf("authfallback: cache file %s larger than %d bytes", path, max)
	}
	return b, nil
}

func checkCacheFileInfo(path string, fi os.FileInfo, max int64) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("authfallback: cache file %s is not a regular file (%v)", path, fi.Mode().Type())
	}
	if checkCacheFilePerm && fi.Mode().Perm()&0o022 != 0 {
		// Whoever can write the file can plant keys or lift revocations.
		return fmt.Errorf("authfallback: cache file %s is writable by group or others (mode %v)", path, fi.Mode().Perm())
	}
	if fi.Size() > max {
		return fmt.Errorf("authfallback: cache file %s larger than %d bytes", path, max)
	}
	return nil
}

// writeCacheFile writes ks to path atomically (see writeFileAtomic).
func writeCacheFile(path string, ks *keySet, bind cacheBinding) error {
	b, err := encodeCacheFile(ks, bind)
	if err != nil {
		return err
	}
	return writeFileAtomic(path, b)
}

// encodeCacheFile is the CacheFile document of ks (also the shared
// state's key set record).
func encodeCacheFile(ks *keySet, bind cacheBinding) ([]byte, error) {
	return json.Marshal(cacheFileDoc{
		Version:   cacheFileVersion,
		Issuer:    bind.issuer,
		JWKSURLs:  bind.jwksURLs,
		FetchedAt: ks.fetchedAt.UTC(),
		Source:    ks.source,
		JWKS:      ks.doc,
	})
}

// writeFileAtomic writes b to path atomically: a temporary file in the
// same directory, mode 0600, synced, then renamed over path.
func writeFileAtomic(path string, b []byte) (err error) {
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	defer func() {
		if err != nil {
			_ = os.Remove(tmp)
		}
	}()
	if err = f.Chmod(0o600); err != nil {
		_ = f.Close()
		return err
	}
	if _, err = f.Write(b); err != nil {
		_ = f.Close()
		return err
	}
	if err = f.Sync(); err != nil {
		_ = f.Close()
		return err
	}
	if err = f.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}
