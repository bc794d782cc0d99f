package idempotency

// NewMemoryStoreHashed is NewMemoryStore with hash as the keys' hash, for
// tests of colliding hashes.
func NewMemoryStoreHashed(cfg MemoryConfig, hash func(string) uint64) *MemoryStore {
	s := NewMemoryStore(cfg)
	s.hash = hash
	return s
}
