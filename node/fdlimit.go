package node

import "fmt"

// descriptorsBesideConnections is what a node needs open besides its
// connections: the store, listeners, the UDP socket, the runtime's own.
const descriptorsBesideConnections = 64

// fdLimitWarning says what happens when the connection caps add up to
// more than the process's descriptor limit, or "" when they fit. When
// descriptors run out, every listener stops accepting, the push port and
// the client port included, so one flooded port starves the others.
func fdLimitWarning(cfg Config, limit uint64) string {
	caps := []int{cfg.MaxPushConns, cfg.HTTPMaxConns}
	if cfg.TCP {
		caps = append(caps, cfg.MaxTCPClients)
	}
	need := uint64(descriptorsBesideConnections)
	for _, c := range caps {
		if c == 0 {
			return fmt.Sprintf("a connection cap is 0 (no cap) and the open file limit is %d: when descriptors run out, every listener stops accepting; set max-tcp-clients, max-push-conns and http-max-conns", limit)
		}
		need += uint64(c)
	}
	if need <= limit {
		return ""
	}
	return fmt.Sprintf("the connection caps (max-tcp-clients + max-push-conns + http-max-conns, plus %d) need %d descriptors but the open file limit is %d: when descriptors run out, every listener stops accepting; raise the limit or lower the caps",
		descriptorsBesideConnections, need, limit)
}
