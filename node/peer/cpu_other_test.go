//go:build !unix

package peer

import "time"

// processCPU is not measured here; the benchmarks then report 0 CPU.
func processCPU() time.Duration { return 0 }
