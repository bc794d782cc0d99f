package redisstore_test

import (
	"fmt"
	"io"
	"net/http"

	"github.com/redis/go-redis/v9"

	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/redisstore"
)

// The idempotency handler of every replica of a service uses the same Redis
// and prefix. This example needs a running Redis, so it is not run as a
// test (it has no Output line); the package's tests run the same against a
// real server.
func Example() {
	client := redis.NewClient(&redis.Options{Addr: "127.0.0.1:6379"})
	defer client.Close()
	store := redisstore.New(client, redisstore.Config{Prefix: "orders-api:idem"})

	x := idempotency.New(idempotency.Config{Store: store})
	mux := http.NewServeMux()
	mux.Handle("POST /orders", x.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"order":42}`)
	})))
	fmt.Println(http.ListenAndServe(":8080", mux))
}
