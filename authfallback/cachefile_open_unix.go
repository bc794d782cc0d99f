//go:build unix

package authfallback

import (
	"os"
	"syscall"
)

// openCacheFile opens path for reading without following a symbolic link
// (O_NOFOLLOW) and without blocking on a FIFO or device (O_NONBLOCK).
func openCacheFile(path string) (*os.File, error) {
	return os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
}

// checkCacheFilePerm refuses a file that group or others may write:
// whoever can write it can plant keys or lift revocations.
const checkCacheFilePerm = true
