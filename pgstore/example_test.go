package pgstore_test

import (
	"context"
	"io"
	"log"
	"net/http"

	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/holdfast-go/holdfast/idempotency"
	"github.com/holdfast-go/holdfast/pgstore"
)

// Every replica of a service uses the same table. This example needs a
// running PostgreSQL, so it is not run as a test (it has no Output line);
// the package's tests run the same against a real server.
func Example() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://app@127.0.0.1:5432/app")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	store := pgstore.New(pool, pgstore.Config{Table: "idempotency"})
	defer store.Close()
	if err := store.Migrate(ctx); err != nil {
		log.Fatal(err)
	}

	x := idempotency.New(idempotency.Config{Store: store})
	mux := http.NewServeMux()
	mux.Handle("POST /orders", x.Handler(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusCreated)
		_, _ = io.WriteString(w, `{"order":42}`)
	})))
	log.Fatal(http.ListenAndServe(":8080", mux))
}

// A replica (or a cron job) that runs with DisableSweeper deletes expired
// rows itself.
func ExampleStore_Sweep() {
	ctx := context.Background()
	pool, err := pgxpool.New(ctx, "postgres://app@127.0.0.1:5432/app")
	if err != nil {
		log.Fatal(err)
	}
	defer pool.Close()
	store := pgstore.New(pool, pgstore.Config{Table: "idempotency", DisableSweeper: true})
	n, err := store.Sweep(ctx, 500)
	log.Printf("swept %d rows: %v", n, err)
}
