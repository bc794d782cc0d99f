package idempotency

import (
	"context"
	"errors"
	"net/http"
	"time"
)

// ErrNotOwner is returned by a Store when a claim is extended, completed or
// released by someone who no longer holds it: the lease expired and another
// request took the record over, or the record is gone.
var ErrNotOwner = errors.New("idempotency: claim not held by this owner")

// State is the state of a stored record.
type State uint8

const (
	// StateInFlight: a request holds the record under a lease and runs.
	StateInFlight State = iota + 1
	// StateDone: the response is stored and is replayed to duplicates.
	StateDone
	// StateQueued: the request is stored, answered 202, and waits for Replay.
	StateQueued
)

func (s State) String() string {
	switch s {
	case StateInFlight:
		return "in-flight"
	case StateDone:
		return "done"
	case StateQueued:
		return "queued"
	}
	return "unknown"
}

// Response is a stored response: status, the allow-listed headers and the body.
type Response struct {
	Status int
	Header http.Header
	Body   []byte
}

// Request is a queued request, stored by Enqueue and run by Replay.
type Request struct {
	Method string
	// URL is the request URI as received (path and query).
	URL string
	// Header holds the request's headers minus hop-by-hop and credential
	// headers (Config.CredentialHeaders).
	Header http.Header
	Body   []byte
	// Caller is the authorization decision taken when the request was
	// queued (the verified caller), nil if none was known. Replay runs the
	// request as this caller.
	Caller *Caller
	// Sealed holds the credential headers sealed with Config.Seal, nil if
	// they were stripped.
	Sealed []byte
}

// Caller is the verified caller of a queued request, as authfallback's
// Handler established it when the request was accepted: who, with which
// granted scopes, and whether (and why) it was accepted degraded. It holds
// no credential.
type Caller struct {
	Issuer, Subject string
	Scopes          []string
	// Reason is why the request was accepted degraded, "" if it was not.
	Reason string
}

// Record is what a Store keeps under one key.
type Record struct {
	State State
	// Fingerprint identifies the request (a hash of its method, path, query
	// and body). A key presented with another fingerprint is refused with
	// 422.
	Fingerprint string
	// Owner is the opaque token of the lease holder (StateInFlight) or of
	// the claim that completed the record (StateDone).
	Owner string
	// Fence increases by one on every claim and takeover of the record; a
	// completion must present the fence it claimed with.
	Fence uint64
	// LeaseUntil is when the in-flight lease ends.
	LeaseUntil time.Time
	// Response is set in StateDone.
	Response *Response
	// Request is set for a queued request, and stays set while Replay runs it
	// (StateInFlight), so a released replay returns to the queue.
	Request *Request
	// Created is when the record was first written.
	Created time.Time
	// Attempts counts the failed replays of a queued request (see
	// Store.Requeue).
	Attempts int
}

// Queued is a record taken from the queue by ClaimQueued.
type Queued struct {
	Key    string
	Record Record
}

// Store keeps idempotency records. Keys are opaque, fixed-length strings
// composed by the Idempotency handler from the caller's scope, the method, the
// route and the client's key; a Store never needs to parse them.
//
// A Store must not retain the Response passed to Complete or the Request
// passed to Enqueue after the call returns (the handler reuses their
// buffers): copy or serialize them.
//
// Implementations must be safe for concurrent use by several processes
// sharing the same backend, and must pass storetest.Run. Time is the store's
// own (the server's clock for a shared store), so replicas with skewed clocks
// agree on lease expiry.
type Store interface {
	// Claim creates an in-flight record for key owned by owner with a lease,
	// and returns it with claimed true. If key holds an in-flight record whose
	// lease has expired and whose fingerprint equals fingerprint, Claim takes it
	// over: the owner changes, Fence increases, the lease restarts, and claimed
	// is true. Otherwise Claim changes nothing and returns the existing record
	// with claimed false.
	Claim(ctx context.Context, key, fingerprint, owner string, lease time.Duration) (rec Record, claimed bool, err error)

	// Extend renews the lease of an in-flight record held by owner with fence.
	// It returns ErrNotOwner if the record is not held by them.
	Extend(ctx context.Context, key, owner string, fence uint64, lease time.Duration) error

	// Complete stores resp and marks the record done, kept for ttl, if it is
	// held by owner with fence (its lease may have run out, as long as no
	// one took it over); otherwise it returns ErrNotOwner and changes
	// nothing. It is idempotent: called again by the same owner with the same
	// fence on the record it completed (a retry after a lost answer), it
	// returns nil and changes nothing. A completion drops the queued
	// Request, sealed credentials included.
	Complete(ctx context.Context, key, owner string, fence uint64, resp Response, ttl time.Duration) error

	// Release gives up a claim held by owner with fence, so that the client
	// may retry with the same key: a record that carries a queued Request
	// returns to StateQueued (keeping its place in the queue); any other is
	// deleted. It returns ErrNotOwner if the claim is not held by them.
	Release(ctx context.Context, key, owner string, fence uint64) error

	// Requeue is Release for a queued request whose replay failed: held by
	// owner with fence, it returns to StateQueued in its place with Attempts
	// increased by one. It returns ErrNotOwner if the claim is not held by
	// them or the record carries no Request.
	Requeue(ctx context.Context, key, owner string, fence uint64) error

	// Get returns the record under key, if any.
	Get(ctx context.Context, key string) (rec Record, ok bool, err error)

	// Enqueue stores req under key in StateQueued, kept for ttl, at the end
	// of the queue, with Fence and Attempts zero, and returns it with
	// created true. If key already holds a
	// record it changes nothing and returns that record with created false.
	Enqueue(ctx context.Context, key, fingerprint string, req Request, ttl time.Duration) (rec Record, created bool, err error)

	// ClaimQueued claims up to limit queued records, oldest first, for owner
	// under a lease (each becomes StateInFlight with its Request kept and its
	// Fence increased) and returns them in queue order. A record that carries
	// a Request and is in flight under an expired lease (a Replay that
	// crashed) counts as queued, in its original place: ClaimQueued takes it
	// over, so a queued request is never stranded.
	ClaimQueued(ctx context.Context, owner string, lease time.Duration, limit int) ([]Queued, error)
}
