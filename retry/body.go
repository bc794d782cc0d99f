package retry

import (
	"context"
	"io"
)

// cancelOnClose wraps body so that closing it cancels the attempt's
// context: a per-attempt timeout covers the reading of the body and ends
// when the caller closes it. A body that is also an io.Writer (101
// Switching Protocols) stays one.
func cancelOnClose(body io.ReadCloser, cancel context.CancelFunc) io.ReadCloser {
	cb := &cancelBody{ReadCloser: body, cancel: cancel}
	if w, ok := body.(io.ReadWriteCloser); ok {
		return &cancelRWBody{cb, w}
	}
	return cb
}

type cancelBody struct {
	io.ReadCloser
	cancel context.CancelFunc
}

func (b *cancelBody) Close() error {
	err := b.ReadCloser.Close()
	b.cancel()
	return err
}

type cancelRWBody struct {
	*cancelBody
	w io.Writer
}

func (b *cancelRWBody) Write(p []byte) (int, error) { return b.w.Write(p) }
