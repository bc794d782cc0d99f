package main

import (
	"context"
	"errors"

	"github.com/holdfast-go/holdfast/idempotency"
)

// openPostgres is a placeholder until the pgstore module lands.
func openPostgres(context.Context, config) (idempotency.Store, func(), error) {
	return nil, nil, errors.New("-store postgres: the pgstore module is not built yet")
}
