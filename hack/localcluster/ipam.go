package main

import (
	"errors"
	"net/netip"
	"sync"

	"k8s.io/apimachinery/pkg/types"
)

// ipam hands each pod its own loopback address, 127.77.x.y: all of
// 127.0.0.0/8 reaches the loopback interface on Linux, so every pod can
// listen on the same ports as the others. An address belongs to one pod
// (by UID) for as long as its processes may run, and is never given to
// another pod meanwhile. A pod that comes back under the same name (a
// StatefulSet's pod after deletion) gets its old address again if it is
// free, so that a phone pointed at it keeps working.
type ipam struct {
	mu     sync.Mutex
	holder map[netip.Addr]types.UID
	byName map[string]netip.Addr // last address of each pod name
	names  map[netip.Addr]string
}

var podNet = netip.MustParsePrefix("127.77.0.0/16")

func newIPAM() *ipam {
	return &ipam{holder: map[netip.Addr]types.UID{}, byName: map[string]netip.Addr{}, names: map[netip.Addr]string{}}
}

// allocate returns the address of pod uid named name ("ns/name"). It
// prefers, in order: the pod IP it already has (the runner restarted),
// the last address of its name, the lowest address no other name had.
func (a *ipam) allocate(uid types.UID, name, current string) (string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	for ip, h := range a.holder {
		if h == uid {
			return ip.String(), nil
		}
	}
	take := func(ip netip.Addr) string {
		a.holder[ip] = uid
		if old, ok := a.byName[name]; ok && old != ip {
			delete(a.names, old)
		}
		if other, ok := a.names[ip]; ok && other != name {
			delete(a.byName, other)
		}
		a.byName[name], a.names[ip] = ip, name
		return ip.String()
	}
	free := func(ip netip.Addr) bool { _, taken := a.holder[ip]; return podNet.Contains(ip) && !taken }
	if ip, err := netip.ParseAddr(current); err == nil && free(ip) {
		return take(ip), nil
	}
	if ip, ok := a.byName[name]; ok && free(ip) {
		return take(ip), nil
	}
	var fallback netip.Addr
	for ip := podNet.Addr().Next(); podNet.Contains(ip); ip = ip.Next() {
		if b := ip.As4(); b[3] == 0 || b[3] == 255 || !free(ip) {
			continue
		}
		if _, remembered := a.names[ip]; !remembered {
			return take(ip), nil
		}
		if !fallback.IsValid() {
			fallback = ip
		}
	}
	if fallback.IsValid() {
		return take(fallback), nil
	}
	return "", errors.New("no free pod IP in " + podNet.String())
}

// release frees uid's address once its processes are gone.
func (a *ipam) release(uid types.UID, ip string) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if p, err := netip.ParseAddr(ip); err == nil && a.holder[p] == uid {
		delete(a.holder, p)
	}
}
