package authfallback

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/holdfast-go/holdfast/internal/httpx"
)

// Defaults of [RevocationListConfig].
const (
	DefaultRevocationRefreshInterval = time.Minute
	// DefaultRevocationMaxStaleness is RevocationListConfig.MaxStaleness
	// when zero.
	DefaultRevocationMaxStaleness = 24 * time.Hour
	revFetchTimeoutDefault        = 10 * time.Second
	revBackoffBase                = time.Second
	revCacheFileVersion           = 1
	revMaxClockSkew               = time.Minute
)

// RevocationListConfig configures a [RevocationList]. NewRevocationList
// copies it; changing it afterwards has no effect.
type RevocationListConfig struct {
	// URL is where the revocation list is fetched (GET, expecting 200 and
	// the JSON document described at [RevocationList]): https, or plain
	// http only to a loopback host (127.0.0.0/8, ::1, "localhost").
	// Required unless CacheFile is set.
	URL string
	// CacheFile, if set, is where the last good list is written (atomically,
	// mode 0600) after every successful fetch, and read by NewRevocationList
	// so revocations are enforced at once after a restart during an outage.
	CacheFile string
	// RefreshInterval is the time between two fetches. If zero, 1 minute.
	// A failed fetch is retried sooner, with jittered exponential backoff
	// capped at RefreshInterval.
	RefreshInterval time.Duration
	// FetchTimeout bounds one fetch. If zero, 10 seconds.
	FetchTimeout time.Duration
	// MaxStaleness is how old the list in use may be (since it was last
	// fetched or confirmed, possibly in an earlier run) before Stale
	// reports true. A list never loaded is stale too. A Verifier that uses
	// a stale list marks its Results degraded with ReasonRevocationsStale,
	// so the fallback policy narrows them: revocation never fails open
	// silently. If zero, 24 hours.
	MaxStaleness time.Duration
	// HTTPClient fetches the list. If nil, a client with
	// http.DefaultTransport is used. Either way a copy is used whose
	// CheckRedirect refuses a redirect that leaves https (see
	// Config.HTTPClient).
	HTTPClient *http.Client
	// Logger receives refresh failures and refused documents. If nil,
	// nothing is logged.
	Logger *slog.Logger

	// OnRevocation is called once for each revocation seen for the first
	// time: a "jti" or a subject not in the previous list, or a subject
	// whose revoked-before time changed. Entries loaded from CacheFile
	// count as seen (by an earlier run). The Config.OnRevocation of a
	// Verifier that uses this list is called too. Hooks may be nil, may be called
	// concurrently, are called without any lock held, and must not block
	// or call Refresh. Events are delivered in the order the lists were
	// fetched: those of the first fetch (made by NewRevocationList, delivered
	// on the refresh goroutine once it returned) before any of a Refresh.
	OnRevocation func(RevocationEvent)
	// OnRefreshError is called for every failed or refused fetch.
	OnRefreshError func(RefreshErrorEvent)
}

func (c *RevocationListConfig) refreshInterval() time.Duration {
	if c.RefreshInterval > 0 {
		return c.RefreshInterval
	}
	return DefaultRevocationRefreshInterval
}

func (c *RevocationListConfig) maxStaleness() time.Duration {
	if c.MaxStaleness > 0 {
		return c.MaxStaleness
	}
	return DefaultRevocationMaxStaleness
}

func (c *RevocationListConfig) fetchTimeout() time.Duration {
	if c.FetchTimeout > 0 {
		return c.FetchTimeout
	}
	return revFetchTimeoutDefault
}

func (c *RevocationListConfig) httpClient() *http.Client {
	return fetchClient(c.HTTPClient)
}

func (c *RevocationListConfig) logger() *slog.Logger {
	if c.Logger != nil {
		return c.Logger
	}
	return slog.New(slog.DiscardHandler)
}

// RevocationListStatus is a snapshot of a RevocationList's state.
type RevocationListStatus struct {
	// Loaded is true once a list is known (fetched, or read from
	// CacheFile). Before that, Revoked reports nothing as revoked.
	Loaded bool
	// FetchedAt is when the list in use was fetched (possibly in an earlier
	// run, through CacheFile). Zero if never.
	FetchedAt time.Time
	// IDs and Subjects count the entries of the list in use.
	IDs, Subjects int
	// LastAttempt is when a fetch was last tried.
	LastAttempt time.Time
	// NextAttempt is when the next fetch is scheduled.
	NextAttempt time.Time
	// LastError is the error of the last fetch, nil if it succeeded.
	LastError error
	// FailingSince is when fetches started failing, zero if the last one
	// succeeded.
	FailingSince time.Time
	// Failures counts consecutive failed fetches.
	Failures int
}

// RevocationList is a [Revocations] source that polls a JSON revocation
// list over HTTP and keeps the last good one in memory and, optionally, in
// a file.
//
// The document is a JSON object with two members, either of which may be
// absent but not both:
//
//	{
//	  "jti": ["0f9c2b…", "7d41e0…"],
//	  "sub": {"alice": "2026-11-25T09:00:00Z"}
//	}
//
// "jti" lists revoked token IDs. "sub" maps a subject to an RFC 3339 time:
// tokens of that subject issued at or before it (or without "iat") are
// revoked. Member names are matched exactly (case-sensitive): a member
// that differs from "jti" or "sub" only in case ({"JTI": []}) is refused,
// and so is a member (or a subject) named twice; other unknown members are
// ignored, for forward compatibility. A document that is not an object,
// lacks both members, holds an empty or overlong entry or a time that does
// not parse, or is larger than [MaxRevocationListSize] is refused and never
// replaces the last good list. An explicitly empty list,
// {"jti": [], "sub": {}}, is a legitimate list (every revocation lifted)
// and does replace it; "{}" or "null" does not.
//
// A fetch carries If-None-Match with the ETag of the list in use, if the
// server sent one; 304 Not Modified keeps the list and counts as success.
//
// Revoked reads an atomically swapped immutable snapshot: no lock, no
// allocation. RevocationList is safe for concurrent use; Close stops its
// refresh goroutine.
type RevocationList struct {
	// fetchedAt is when the list in use was fetched (unix nanoseconds), 0
	// until one is known; read lock-free by Stale.
	fetchedAt atomic.Int64

	cfg    RevocationListConfig
	client *http.Client
	log    *slog.Logger

	snap  atomic.Pointer[revSnapshot]
	hooks revHooks

	refreshMu sync.Mutex // serializes fetches (loop and Refresh)
	etag      string     // ETag of the list in use; guarded by refreshMu

	mu    sync.Mutex // guards the fields below
	stat  RevocationListStatus
	close chan struct{}
	kick  chan struct{}
	done  chan struct{}
	once  sync.Once

	// firstNotified is closed once the hooks of the fetch made by
	// NewRevocationList have run, so that Refresh delivers its events
	// after those, in order.
	firstNotified chan struct{}
}

var (
	_ Revocations        = (*RevocationList)(nil)
	_ revocationNotifier = (*RevocationList)(nil)
)

func (l *RevocationList) subscribe(h func(RevocationEvent)) func() { return l.hooks.subscribe(h) }

// NewRevocationList reads cfg.CacheFile if set (a missing or invalid file
// is logged and ignored), then starts fetching cfg.URL in the background,
// the first time at once. Call Close to stop it.
func NewRevocationList(cfg RevocationListConfig) (*RevocationList, error) {
	if cfg.URL == "" && cfg.CacheFile == "" {
		return nil, errors.New("authfallback: RevocationListConfig needs URL or CacheFile")
	}
	if cfg.RefreshInterval < 0 || cfg.FetchTimeout < 0 || cfg.MaxStaleness < 0 {
		return nil, errors.New("authfallback: RevocationListConfig: negative duration")
	}
	if cfg.URL != "" {
		if err := checkFetchURL(cfg.URL); err != nil {
			return nil, fmt.Errorf("authfallback: RevocationListConfig.URL: %w", err)
		}
	}
	l := &RevocationList{
		cfg:    cfg,
		client: cfg.httpClient(),
		log:    cfg.logger(),
		close:  make(chan struct{}),
		kick:   make(chan struct{}, 1),

		firstNotified: make(chan struct{}),
		done:          make(chan struct{}),
	}
	if cfg.CacheFile != "" {
		s, at, err := revReadCacheFile(cfg.CacheFile, time.Now())
		switch {
		case err == nil:
			l.snap.Store(s)
			l.stat.Loaded = true
			l.stat.FetchedAt = at
			l.fetchedAt.Store(at.UnixNano())
			l.stat.IDs, l.stat.Subjects = len(s.jti), len(s.sub)
		case errors.Is(err, os.ErrNotExist):
		default:
			l.log.Warn("authfallback: revocation cache file refused", "file", cfg.CacheFile, "err", err)
		}
	}
	if cfg.URL == "" {
		close(l.done)
		return l, nil
	}
	var first time.Duration
	var notify func()
	if !l.stat.Loaded {
		// No list yet: fetch once before returning (bounded by
		// FetchTimeout), as New does for keys, so that a service started
		// with its revocation endpoint up does not begin with every Result
		// marked revocations-stale. A failure is retried by the loop. Its
		// hooks run on the loop's goroutine after NewRevocationList
		// returned.
		first, notify, _ = l.refreshLocked(context.Background())
	}
	started := make(chan struct{})
	defer close(started)
	go l.loop(first, started, notify)
	return l, nil
}

// Revoked implements [Revocations]. Until a list is known it reports
// nothing as revoked; see [RevocationListStatus.Loaded].
func (l *RevocationList) Revoked(sub, jti string, iat time.Time) (bool, string) {
	return l.snap.Load().revoked(sub, jti, iat)
}

// Stale reports whether the list in use is older than
// RevocationListConfig.MaxStaleness, or no list is known yet. A Verifier
// marks its Results degraded (ReasonRevocationsStale) while it is.
// Lock-free.
func (l *RevocationList) Stale() bool {
	at := l.fetchedAt.Load()
	return at == 0 || time.Since(time.Unix(0, at)) > l.cfg.maxStaleness()
}

// Status returns the current state of l.
func (l *RevocationList) Status() RevocationListStatus {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stat
}

// Close stops the refresh goroutine and waits for it. It is safe to call
// more than once. Revoked keeps answering from the last list.
func (l *RevocationList) Close() error {
	l.once.Do(func() { close(l.close) })
	<-l.done
	return nil
}

// Refresh fetches the list now and returns the fetch error, if any. Use it
// to reconcile when the IdP comes back: fetch revocations, then re-check
// what was accepted in degraded mode. It resets the refresh schedule.
func (l *RevocationList) Refresh(ctx context.Context) error {
	if l.cfg.URL == "" {
		return errors.New("authfallback: revocation list has no URL")
	}
	select {
	case <-l.firstNotified:
	case <-ctx.Done():
		return ctx.Err()
	}
	_, err := l.refresh(ctx)
	select {
	case l.kick <- struct{}{}:
	default:
	}
	return err
}

func (l *RevocationList) loop(first time.Duration, started chan struct{}, notify func()) {
	defer close(l.done)
	<-started
	if notify != nil {
		notify()
	}
	close(l.firstNotified)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() {
		select {
		case <-l.close:
			cancel()
		case <-ctx.Done():
		}
	}()
	t := time.NewTimer(first)
	defer t.Stop()
	for {
		select {
		case <-l.close:
			return
		case <-l.kick:
			// Refresh ran: start from its schedule.
			l.mu.Lock()
			next := l.stat.NextAttempt
			l.mu.Unlock()
			t.Reset(time.Until(next))
		case <-t.C:
			wait, _ := l.refresh(ctx)
			t.Reset(wait)
		}
	}
}

// refresh fetches and applies the list once; it returns the delay before
// the next fetch. Hooks run after the fetch lock is released.
func (l *RevocationList) refresh(ctx context.Context) (time.Duration, error) {
	wait, notify, err := l.refreshLocked(ctx)
	notify()
	return wait, err
}

func (l *RevocationList) refreshLocked(ctx context.Context) (time.Duration, func(), error) {
	l.refreshMu.Lock()
	defer l.refreshMu.Unlock()
	b, etag, err := l.fetch(ctx)
	var s *revSnapshot
	switch {
	case err == nil && b == nil: // 304 Not Modified: the list in use is current
		s = l.snap.Load()
	case err == nil:
		s, err = parseRevocationList(b)
	}
	now := time.Now()
	if err != nil {
		l.mu.Lock()
		l.stat.Failures++
		l.stat.LastAttempt = now
		l.stat.LastError = err
		if l.stat.FailingSince.IsZero() {
			l.stat.FailingSince = now
		}
		attempt := l.stat.Failures
		wait := revBackoff(attempt, revBackoffBase, l.cfg.refreshInterval())
		l.stat.NextAttempt = now.Add(wait)
		l.mu.Unlock()
		return wait, func() {
			l.log.Warn("authfallback: revocation list refresh failed", "url", l.cfg.URL, "attempt", attempt, "retry", wait, "err", err)
			if h := l.cfg.OnRefreshError; h != nil {
				h(RefreshErrorEvent{Err: err, Attempt: attempt, Retry: wait})
			}
		}, err
	}
	l.etag = etag
	prev := l.snap.Swap(s)
	l.fetchedAt.Store(now.UnixNano())
	wait := l.cfg.refreshInterval()
	l.mu.Lock()
	l.stat = RevocationListStatus{
		Loaded: true, FetchedAt: now, IDs: len(s.jti), Subjects: len(s.sub),
		LastAttempt: now, NextAttempt: now.Add(wait),
	}
	l.mu.Unlock()
	if l.cfg.CacheFile != "" && prev != s {
		if err := revWriteCacheFile(l.cfg.CacheFile, s, now, l.cfg.URL); err != nil {
			l.log.Warn("authfallback: revocation cache file not written", "file", l.cfg.CacheFile, "err", err)
		}
	}
	var evs []RevocationEvent
	if l.cfg.OnRevocation != nil || l.hooks.hooks.Load() != nil {
		evs = revDiff(prev, s)
	}
	return wait, func() {
		if h := l.cfg.OnRevocation; h != nil {
			for _, ev := range evs {
				h(ev)
			}
		}
		l.hooks.notify(evs)
	}, nil
}

// fetch GETs the list. It returns a nil body (and no error) for 304 Not
// Modified, which is only possible when a list is in use: the request then
// carries If-None-Match with the list's ETag.
func (l *RevocationList) fetch(ctx context.Context) (body []byte, etag string, err error) {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.fetchTimeout())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, l.cfg.URL, nil)
	if err != nil {
		return nil, "", err
	}
	req.Header.Set("Accept", "application/json")
	if l.etag != "" && l.snap.Load() != nil {
		req.Header.Set("If-None-Match", l.etag)
	}
	resp, err := l.client.Do(req)
	if err != nil {
		return nil, "", err
	}
	defer httpx.DrainClose(resp.Body)
	switch {
	case resp.StatusCode == http.StatusNotModified && req.Header.Get("If-None-Match") != "":
		return nil, l.etag, nil
	case resp.StatusCode != http.StatusOK:
		return nil, "", fmt.Errorf("authfallback: revocation list: status %d", resp.StatusCode)
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, MaxRevocationListSize+1))
	if err != nil {
		return nil, "", err
	}
	if b == nil {
		b = []byte{}
	}
	return b, resp.Header.Get("ETag"), nil
}

// revCacheDoc is the content of RevocationListConfig.CacheFile.
type revCacheDoc struct {
	Version   int             `json:"version"`
	FetchedAt time.Time       `json:"fetched_at"`
	Source    string          `json:"source,omitempty"`
	List      json.RawMessage `json:"list"`
}

// revParseCacheFile parses a revocation cache file. A file in another
// format, with an invalid list or a fetch time in the future is refused.
func revParseCacheFile(b []byte, now time.Time) (*revSnapshot, time.Time, error) {
	if len(b) > MaxRevocationListSize+4096 {
		return nil, time.Time{}, errors.New("authfallback: revocation cache file too large")
	}
	var d revCacheDoc
	if err := json.Unmarshal(b, &d); err != nil {
		return nil, time.Time{}, fmt.Errorf("authfallback: revocation cache file: %w", err)
	}
	if d.Version != revCacheFileVersion {
		return nil, time.Time{}, fmt.Errorf("authfallback: revocation cache file: unknown version %d", d.Version)
	}
	if d.FetchedAt.IsZero() || d.FetchedAt.After(now.Add(revMaxClockSkew)) {
		return nil, time.Time{}, errors.New("authfallback: revocation cache file: invalid fetched_at")
	}
	s, err := parseRevocationList(d.List)
	if err != nil {
		return nil, time.Time{}, fmt.Errorf("authfallback: revocation cache file: %w", err)
	}
	return s, d.FetchedAt, nil
}

func revReadCacheFile(path string, now time.Time) (*revSnapshot, time.Time, error) {
	b, err := readCacheBytes(path, MaxRevocationListSize+4096)
	if err != nil {
		return nil, time.Time{}, err
	}
	return revParseCacheFile(b, now)
}

// revWriteCacheFile writes s to path atomically: a temporary file in the
// same directory, mode 0600, synced, then renamed over path.
func revWriteCacheFile(path string, s *revSnapshot, at time.Time, source string) error {
	b, err := json.Marshal(revCacheDoc{Version: revCacheFileVersion, FetchedAt: at.UTC(), Source: source, List: s.marshal()})
	if err != nil {
		return err
	}
	return writeFileAtomic(path, b)
}
