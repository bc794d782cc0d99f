package authfallback_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"time"

	"github.com/holdfast-go/holdfast/authfallback"
)

// A revocation list polled over HTTP, kept in a last-known-good file.
func ExampleRevocationList() {
	list := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, `{"jti":["4f1c"],"sub":{"mallory":"2026-11-25T09:00:00Z"}}`)
	}))
	defer list.Close()
	dir, _ := os.MkdirTemp("", "revocations")
	defer os.RemoveAll(dir)

	revs, err := authfallback.NewRevocationList(authfallback.RevocationListConfig{
		URL:       list.URL,
		CacheFile: filepath.Join(dir, "revocations.json"),
	})
	if err != nil {
		fmt.Println(err)
		return
	}
	defer revs.Close()
	if err := revs.Refresh(context.Background()); err != nil {
		fmt.Println(err)
		return
	}

	issued := time.Date(2026, 11, 25, 8, 0, 0, 0, time.UTC)
	fmt.Println(revs.Revoked("alice", "4f1c", issued))
	fmt.Println(revs.Revoked("mallory", "77aa", issued))
	fmt.Println(revs.Revoked("mallory", "77ab", issued.Add(2*time.Hour)))
	// Output:
	// true jti-revoked
	// true subject-revoked
	// false
}

// MemoryRevocations is the model for a list kept in Redis or a database.
func ExampleMemoryRevocations() {
	var revs authfallback.MemoryRevocations
	revs.RevokeSubject("alice", time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC))
	var r authfallback.Revocations = &revs
	fmt.Println(r.Revoked("alice", "", time.Date(2026, 11, 25, 8, 59, 0, 0, time.UTC)))
	// Output: true subject-revoked
}
