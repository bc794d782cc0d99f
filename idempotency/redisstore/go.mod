module github.com/holdfast-go/holdfast/idempotency/redisstore

go 1.25.0

require github.com/holdfast-go/holdfast v0.0.0

require (
	github.com/cespare/xxhash/v2 v2.3.0 // indirect
	github.com/dgryski/go-rendezvous v0.0.0-20200823014737-9f7001d12a5f // indirect
	github.com/redis/go-redis/v9 v9.22.0 // indirect
	go.uber.org/atomic v1.12.0 // indirect
)

replace github.com/holdfast-go/holdfast => ../..
