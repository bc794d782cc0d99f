// Package caller carries the verified caller of a request between holdfast's
// packages, which never import each other: authfallback's Handler puts a
// [Caller] in the request context, idempotency and degrade read it to scope
// what they store (docs/design.md, "The verified caller").
package caller

import (
	"context"
	"slices"
	"strconv"
	"strings"
)

// Caller is a verified caller: who (issuer and subject) and with what access
// (the granted scopes, after any fallback narrowing, and whether the request
// was degraded). A Caller is immutable once made by [New]; it is safe for
// concurrent use.
type Caller struct {
	// Issuer and Subject identify the caller.
	Issuer, Subject string
	// Scopes are the scopes granted to this request.
	Scopes []string
	// Reason is why the request was accepted degraded, "" when it was not.
	Reason string
	// Ext is the authenticating package's own value (authfallback's
	// *Result), so that one context value serves both.
	Ext any

	id, access string
}

// New returns the Caller for issuer and subject with scopes (not retained:
// a sorted copy is kept) and reason.
func New(issuer, subject string, scopes []string, reason string, ext any) *Caller {
	c := &Caller{Issuer: issuer, Subject: subject, Reason: reason, Ext: ext}
	c.Scopes = slices.Clone(scopes)
	slices.Sort(c.Scopes)
	c.Scopes = slices.Compact(c.Scopes)
	c.id = ID(issuer, subject)
	var b strings.Builder
	b.WriteString(c.id)
	for _, s := range c.Scopes {
		b.WriteString(strconv.Itoa(len(s)))
		b.WriteByte(':')
		b.WriteString(s)
	}
	if reason != "" {
		b.WriteString("|degraded")
	} else {
		b.WriteString("|normal")
	}
	c.access = b.String()
	return c
}

// ID returns an unambiguous encoding of issuer and subject: two distinct
// pairs never share an ID, whatever bytes they hold.
func ID(issuer, subject string) string {
	return "v1:" + strconv.Itoa(len(issuer)) + ":" + issuer + strconv.Itoa(len(subject)) + ":" + subject
}

// ID identifies the caller (issuer + subject), whatever its token or scopes:
// a refreshed token of the same subject has the same ID. Idempotency records
// are kept per ID.
func (c *Caller) ID() string { return c.id }

// Access identifies the caller and its access: ID, the granted scopes and
// whether the request was degraded. Stale answers are kept per Access, so a
// down-scoped or degraded request never gets a response produced for wider
// access.
func (c *Caller) Access() string { return c.access }

// Degraded reports whether the request was accepted degraded.
func (c *Caller) Degraded() bool { return c.Reason != "" }

type ctxKey struct{}

// NewContext returns a copy of ctx that carries c.
func NewContext(ctx context.Context, c *Caller) context.Context {
	return context.WithValue(ctx, ctxKey{}, c)
}

// FromContext returns the Caller in ctx, nil if there is none.
func FromContext(ctx context.Context) *Caller {
	c, _ := ctx.Value(ctxKey{}).(*Caller)
	return c
}
