package main

import (
	"encoding/json"
	"net/http"
	"sync"
	"sync/atomic"
	"time"
)

// revokedSubject is the subject revoked at the IdP during its outage. Its
// requests run on a worker of their own and are reported apart.
const revokedSubject = "user-revoked"

// revocationServer is the IdP's revocation list, down with the IdP.
type revocationServer struct {
	down atomic.Bool
	mu   sync.Mutex
	subs map[string]string // subject -> revoked-before (RFC 3339)
}

func newRevocationServer() *revocationServer {
	return &revocationServer{subs: map[string]string{}}
}

func (s *revocationServer) revoke(sub string, before time.Time) {
	s.mu.Lock()
	s.subs[sub] = before.UTC().Format(time.RFC3339Nano)
	s.mu.Unlock()
}

func (s *revocationServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.down.Load() {
		http.Error(w, "unavailable", http.StatusServiceUnavailable)
		return
	}
	s.mu.Lock()
	doc := map[string]any{"jti": []string{}, "sub": s.subs}
	b, _ := json.Marshal(doc)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}

// revokedReport follows the revoked subject through the drill.
type revokedReport struct {
	Subject string `json:"subject"`
	// RevokedAtS is when the IdP revoked it (while down); IdPBackS when the
	// IdP (and its revocation list) came back; KnownAtS when the holdfast
	// service learned of the revocation (OnRevocation), -1 if never.
	RevokedAtS float64 `json:"revoked_at_s"`
	IdPBackS   float64 `json:"idp_back_s"`
	KnownAtS   float64 `json:"known_at_s"`
	// ReconciledAtS is when the holdfast service reported the subject as
	// revoked after the outage (OnReconcile), -1 if never.
	ReconciledAtS float64                  `json:"reconciled_at_s"`
	Stacks        map[string]*revokedStats `json:"stacks"`
}

type revokedStats struct {
	// AcceptedAfterRevocation: 2xx answers to requests sent after the
	// revocation, while the IdP was down (no one could know).
	AcceptedAfterRevocation int `json:"accepted_while_idp_down"`
	// AcceptedAfterKnown: 2xx answers to requests sent after the holdfast
	// service learned of the revocation (for the naive stack: the same
	// moment). The target for holdfast is 0.
	AcceptedAfterKnown int `json:"accepted_after_known"`
	RefusedAfterKnown  int `json:"refused_after_known"`
}
