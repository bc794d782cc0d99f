package httpx

import (
	"bytes"
	"context"
	"io"
	"strings"
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"
)

type rwc struct {
	written bytes.Buffer
	closed  bool
}

func (c *rwc) Read([]byte) (int, error)    { return 0, io.EOF }
func (c *rwc) Write(p []byte) (int, error) { return c.written.Write(p) }
func (c *rwc) Close() error                { c.closed = true; return nil }

func TestCancelOnClose(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	body := CancelOnClose(io.NopCloser(strings.NewReader("abc")), cancel)
	_, isWriter := body.(io.Writer)
	assert.False(t, isWriter)
	b, err := io.ReadAll(body)
	require.NoError(t, err)
	assert.Equal(t, "abc", string(b))
	assert.NoError(t, ctx.Err(), "reading does not end the attempt")
	require.NoError(t, body.Close())
	assert.ErrorIs(t, ctx.Err(), context.Canceled)
	require.NoError(t, body.Close(), "closing twice is harmless")
}

func TestCancelOnCloseKeepsWriter(t *testing.T) {
	// A 101 Switching Protocols body is an io.ReadWriteCloser; it stays one.
	ctx, cancel := context.WithCancel(context.Background())
	conn := &rwc{}
	body := CancelOnClose(conn, cancel)
	w, ok := body.(io.ReadWriteCloser)
	require.True(t, ok)
	_, err := w.Write([]byte("ping"))
	require.NoError(t, err)
	assert.Equal(t, "ping", conn.written.String())
	require.NoError(t, w.Close())
	assert.True(t, conn.closed)
	assert.Error(t, ctx.Err())
}
