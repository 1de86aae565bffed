//go:build !unix

package store

import (
	"os"
	"time"
)

func lockShared(*os.File, time.Duration) error { return nil }
