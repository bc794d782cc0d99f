package httpx

import (
	"bufio"
	"net"
	"net/http"
)

// StatusWriter wraps an http.ResponseWriter and records the status written
// and the bytes of body written. It keeps Flush and Hijack working and
// implements Unwrap so http.ResponseController reaches the original writer.
// It is not safe for concurrent use, like the writer it wraps.
type StatusWriter struct {
	http.ResponseWriter
	// Status is the status written, 0 until WriteHeader or Write.
	Status int
	// Bytes counts the body bytes written.
	Bytes int64
	// Flushed is set once the handler flushed (streamed) the response.
	Flushed bool
	// Hijacked is set once the handler took over the connection.
	Hijacked bool
}

// WriteHeader records the first status and passes it on. Informational
// (1xx) statuses are passed on without being recorded.
func (w *StatusWriter) WriteHeader(code int) {
	if w.Status == 0 && code >= 200 {
		w.Status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

// Write records an implicit 200 and the byte count.
func (w *StatusWriter) Write(p []byte) (int, error) {
	if w.Status == 0 {
		w.Status = http.StatusOK
	}
	n, err := w.ResponseWriter.Write(p)
	w.Bytes += int64(n)
	return n, err
}

// Flush flushes the underlying writer if it can.
func (w *StatusWriter) Flush() {
	w.Flushed = true
	if w.Status == 0 {
		w.Status = http.StatusOK
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Hijack hands the connection to the caller if the underlying writer can.
func (w *StatusWriter) Hijack() (net.Conn, *bufio.ReadWriter, error) {
	c, rw, err := http.NewResponseController(w.ResponseWriter).Hijack()
	if err == nil {
		w.Hijacked = true
	}
	return c, rw, err
}

// Unwrap returns the wrapped writer for http.ResponseController.
func (w *StatusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// Written reports whether a status has been sent.
func (w *StatusWriter) Written() bool { return w.Status != 0 || w.Hijacked }

var _ interface {
	http.Flusher
	http.Hijacker
} = (*StatusWriter)(nil)
