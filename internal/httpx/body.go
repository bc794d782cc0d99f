package httpx

import (
	"context"
	"io"
)

// CancelOnClose wraps a response body so that closing it calls cancel: a
// per-attempt or per-call timeout then covers the reading of the body and
// ends when the caller closes it, not when RoundTrip returns. A body that is
// also an io.Writer (101 Switching Protocols) stays one, as net/http requires.
func CancelOnClose(body io.ReadCloser, cancel context.CancelFunc) io.ReadCloser {
	if rwc, ok := body.(io.ReadWriteCloser); ok {
		return &cancelRWBody{ReadWriteCloser: rwc, cancel: cancel}
	}
	return &cancelBody{ReadCloser: body, cancel: cancel}
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
	io.ReadWriteCloser
	cancel context.CancelFunc
}

func (b *cancelRWBody) Close() error {
	err := b.ReadWriteCloser.Close()
	b.cancel()
	return err
}
