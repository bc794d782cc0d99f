package main

import (
	"encoding/json"
	"net/http"
	"sync"
	"time"
)

// revokedSubject is the subject revoked at the IdP during its outage. Its
// session runs like the others and is reported apart.
const revokedSubject = "user-revoked"

// revocationServer is the IdP's revocation list, served behind the IdP's
// fault (so down with it).
type revocationServer struct {
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

func (s *revocationServer) revoked(sub string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.subs[sub]
	return ok
}

func (s *revocationServer) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	doc := map[string]any{"jti": []string{}, "sub": s.subs}
	b, _ := json.Marshal(doc)
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(b)
}
