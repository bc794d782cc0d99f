//go:build !unix

package authfallback

import "os"

// openCacheFile opens path for reading. Without O_NOFOLLOW/O_NONBLOCK on
// this platform, readCacheBytes relies on its Lstat and Stat checks.
func openCacheFile(path string) (*os.File, error) { return os.Open(path) }

// checkCacheFilePerm: Unix permission bits mean little here (ACLs do).
const checkCacheFilePerm = false
