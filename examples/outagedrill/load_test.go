package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/holdfast-go/holdfast/fault"
	"github.com/holdfast-go/holdfast/idempotency"
)

// fakeService answers POST /orders: 202 the first time a key is seen, 401
// to a token it was told to refuse, 201 afterwards; it records every
// (key, token) it got.
type fakeService struct {
	mu     sync.Mutex
	seen   map[string]int
	sent   []string // key + " " + bearer
	refuse map[string]bool
}

func (f *fakeService) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	key := r.Header.Get(idempotency.HeaderKey)
	bearer := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
	f.sent = append(f.sent, key+" "+bearer)
	w.Header().Set(headerReplica, "r1")
	switch {
	case f.refuse[bearer]:
		w.WriteHeader(http.StatusUnauthorized)
	case f.seen[key] == 0:
		f.seen[key]++
		w.WriteHeader(http.StatusAccepted)
	default:
		w.WriteHeader(http.StatusCreated)
	}
}

func newTestLoad(t *testing.T, svc http.Handler) (*load, *fault.Injector, session) {
	t.Helper()
	faults := fault.New(fault.Config{})
	idp := newIdPFront(faults, 10*time.Second)
	t.Cleanup(idp.close)
	srv := httptest.NewServer(svc)
	t.Cleanup(srv.Close)
	tl := &timeline{start: time.Now(), tokenTTL: 10 * time.Second}
	l := newLoad(stackHoldfast, srv.URL, idp, 10*time.Millisecond, tl)
	s := session{id: 0, subject: "user-0"}
	l.creds[s.id] = &creds{}
	return l, faults, s
}

func TestClientPollsA202WithItsKeyUntilItsFinalAnswer(t *testing.T) {
	svc := &fakeService{seen: map[string]int{}, refuse: map[string]bool{}}
	l, _, s := newTestLoad(t, svc)
	ctx := context.Background()
	c := l.creds[s.id]
	l.refresh(ctx, s, c)
	require.NotEmpty(t, c.idp)
	w := &write{id: "w1", key: idempotency.NewKey(), session: s.id, body: []byte(`{"write_id":"w1"}`)}
	l.writes[w.id], l.order = w, []string{w.id}
	l.do(ctx, opWrite, s, c, w, "/orders")
	require.Equal(t, http.StatusAccepted, w.last)
	assert.True(t, w.acked)
	assert.False(t, w.settled())

	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	l.settle(sctx, []session{s})
	assert.Equal(t, http.StatusCreated, w.last)
	assert.Equal(t, 2, w.sends)
	require.Len(t, svc.sent, 2)
	assert.Equal(t, strings.Fields(svc.sent[0])[0], strings.Fields(svc.sent[1])[0], "the poll carries the same Idempotency-Key")
	assert.Equal(t, opPoll, l.results[1].op)
}

func TestClientRefreshesOnA401AndSendsAgainWithTheNewToken(t *testing.T) {
	svc := &fakeService{seen: map[string]int{}, refuse: map[string]bool{}}
	l, _, s := newTestLoad(t, svc)
	ctx := context.Background()
	c := l.creds[s.id]
	l.refresh(ctx, s, c)
	old := c.idp
	svc.mu.Lock()
	svc.refuse[old] = true
	svc.mu.Unlock()
	w := &write{id: "w1", key: idempotency.NewKey(), session: s.id, body: []byte(`{"write_id":"w1"}`)}
	l.writes[w.id], l.order = w, []string{w.id}
	l.do(ctx, opWrite, s, c, w, "/orders")
	require.Equal(t, http.StatusUnauthorized, w.last)
	assert.True(t, w.settled(), "a 401 is a final answer the client knows")
	assert.Nil(t, l.due(s.id, c.gen), "not sent again with the same token")

	time.Sleep(600 * time.Millisecond) // the refresh rate limit
	sctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	l.settle(sctx, []session{s})
	assert.NotEqual(t, old, c.idp, "the 401 made the client refresh at once, not at half life")
	assert.Equal(t, http.StatusCreated, w.last, "sent again with the new token: 202, then polled: 201")
	require.GreaterOrEqual(t, len(svc.sent), 2)
	assert.Equal(t, w.key+" "+c.idp, svc.sent[len(svc.sent)-1])
}

func TestOfflineClientExchangesWhenTheIdPIsDown(t *testing.T) {
	var exchanged int
	mux := http.NewServeMux()
	offTok := testJWT(t, time.Now().Add(time.Minute))
	mux.HandleFunc("/auth/offline-token", func(w http.ResponseWriter, r *http.Request) {
		exchanged++
		// A token the client can read the exp of.
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"access_token":"` + offTok + `","token_type":"Bearer"}`))
	})
	l, faults, s := newTestLoad(t, mux)
	s.offline = true
	ctx := context.Background()
	c := l.creds[s.id]
	l.refresh(ctx, s, c)
	require.NotEmpty(t, c.idp)

	require.NoError(t, faults.Set(depIdP, fault.Fault{Kind: fault.Outage}))
	c.refuse, c.lastTry = true, time.Time{} // as after a 401: refresh now
	l.refresh(ctx, s, c)
	assert.Equal(t, 1, exchanged)
	assert.Equal(t, offTok, c.offline)
	bearer, kind := c.bearer(time.Now())
	assert.Equal(t, credIdP, kind, "the IdP token first, while the service accepts it")
	assert.Equal(t, c.idp, bearer)
	c.useOffline = true // as after the service refused the IdP token
	bearer, kind = c.bearer(time.Now())
	assert.Equal(t, credOffline, kind)
	assert.Equal(t, c.offline, bearer)
}

func testJWT(t *testing.T, exp time.Time) string {
	t.Helper()
	idp := newIdPFront(fault.New(fault.Config{}), time.Until(exp))
	defer idp.close()
	tok, _ := idp.issue("user-0")
	return tok
}

// A client stops sending its offline token a little before it expires (a
// token sent at the last instant arrives expired) and sends its IdP token
// instead, which has a grace window.
func TestClientDropsAnOfflineTokenBeforeItsExpiry(t *testing.T) {
	now := time.Now()
	c := &creds{idp: "idp", exp: now.Add(-time.Second), offline: "off", offExp: now.Add(3 * time.Second), useOffline: true}
	tok, kind := c.bearer(now)
	assert.Equal(t, "off", tok)
	assert.Equal(t, credOffline, kind)
	tok, kind = c.bearer(c.offExp.Add(-expiryMargin / 2))
	assert.Equal(t, "idp", tok, "within the margin of its expiry")
	assert.Equal(t, credIdP, kind)
}

// The offline token is the fallback credential: sent once the service has
// refused the IdP token, until a new IdP token.
func TestClientSendsItsOfflineTokenOnceTheIdPTokenIsRefused(t *testing.T) {
	svc := &fakeService{seen: map[string]int{}, refuse: map[string]bool{}}
	l, _, s := newTestLoad(t, svc)
	ctx := context.Background()
	c := l.creds[s.id]
	l.refresh(ctx, s, c)
	c.offline, c.offExp = "offline-token", time.Now().Add(time.Minute)
	l.do(ctx, opRead, s, c, nil, "/items/1")
	require.Len(t, l.results, 1)
	assert.Equal(t, credIdP, l.results[0].cred)
	svc.mu.Lock()
	svc.refuse[c.idp] = true
	svc.mu.Unlock()
	l.do(ctx, opRead, s, c, nil, "/items/1")
	l.do(ctx, opRead, s, c, nil, "/items/1")
	require.Len(t, l.results, 3)
	assert.Equal(t, http.StatusUnauthorized, l.results[1].status)
	assert.Equal(t, credOffline, l.results[2].cred, "after the refusal")
	assert.Equal(t, http.StatusCreated, l.results[2].status)
}
