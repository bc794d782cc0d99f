package caller

import (
	"context"
	"testing"

	"github.com/stretchr/testify/assert"
)

func TestIDIsUnambiguous(t *testing.T) {
	assert.NotEqual(t, ID("a", "bc"), ID("ab", "c"))
	assert.NotEqual(t, ID("", "1:x"), ID("1:x", ""))
	assert.Equal(t, ID("iss", "sub"), New("iss", "sub", []string{"x"}, "", nil).ID())
}

func TestAccessSeparatesScopesAndDegraded(t *testing.T) {
	admin := New("iss", "alice", []string{"write", "admin", "write"}, "", nil)
	same := New("iss", "alice", []string{"admin", "write"}, "", nil)
	narrow := New("iss", "alice", []string{"write"}, "", nil)
	degraded := New("iss", "alice", []string{"admin", "write"}, "jwks-unreachable", nil)
	glued := New("iss", "alice", []string{"adminwrite"}, "", nil)
	assert.Equal(t, admin.Access(), same.Access(), "order and duplicates do not matter")
	assert.Equal(t, admin.ID(), narrow.ID(), "a down-scoped token is the same caller")
	assert.NotEqual(t, admin.Access(), narrow.Access())
	assert.NotEqual(t, admin.Access(), degraded.Access())
	assert.NotEqual(t, admin.Access(), glued.Access())
	assert.True(t, degraded.Degraded())
	assert.Equal(t, []string{"admin", "write"}, admin.Scopes)
}

func TestContext(t *testing.T) {
	assert.Nil(t, FromContext(context.Background()))
	c := New("iss", "bob", nil, "", 42)
	got := FromContext(NewContext(context.Background(), c))
	assert.Same(t, c, got)
	assert.Equal(t, 42, got.Ext)
}
