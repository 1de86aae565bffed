package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"slices"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/httpapi"
	"github.com/ddpush/ddpush-operator/node/slotmap"
	"github.com/ddpush/ddpush-operator/node/wire"
)

// runHome asks one pod which pod is the home of a uuid. Any pod can
// answer, since every pod holds the whole map; the answer names the home
// by ordinal, the pod's number in its StatefulSet (pod <name>-<ordinal>).
func runHome(ctx context.Context, fs *flag.FlagSet, c *common, args []string, out io.Writer) error {
	c.bindHTTP(fs)
	c.bindTarget(fs)
	fs.StringVar(&c.user, "user-id", "", "same as --user")
	asJSON := fs.Bool("json", false, "print the node's answer as JSON")
	// The uuid may come before the flags or after them.
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() == 0 {
			break
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
	switch len(pos) {
	case 0:
	case 1:
		if c.uuid != "" {
			return errors.New("give the uuid once: as an argument or with --uuid")
		}
		c.uuid = pos[0]
	default:
		return errors.New("usage: pushctl home (UUID | --uuid HEX | --user ID): one target only")
	}
	if c.uuid != "" && c.user != "" {
		return errors.New("give a uuid or a user id, not both")
	}
	if c.uuid == "" && c.user == "" {
		return errors.New("a target is required: pushctl home UUID, or --user ID")
	}
	// The uuid the node will be asked about, checked here so that a typo
	// is named before anything goes over the network.
	var u wire.UUID
	if c.uuid != "" {
		var err error
		if u, err = wire.ParseUUID(c.uuid); err != nil {
			return fmt.Errorf("%q is not a uuid: %w", c.uuid, err)
		}
	} else {
		u = httpapi.UserUUID(c.user)
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	hex := ""
	if c.uuid != "" {
		hex = u.String()
	}
	o, err := cl.SlotOwner(ctx, hex, c.user)
	var none *api.NoSlotMapError
	switch {
	case errors.As(err, &none):
		// A node from before slot maps has no such endpoint: it is whole.
		o = api.SlotOwner{UUID: u.String(), Slot: int(slotmap.Slot(u)), Ordinal: none.Self, Self: none.Self}
	case err != nil:
		return err
	}
	if *asJSON {
		return printJSON(out, o)
	}
	// Epochs start at 1: a node without a map answers epoch 0, itself as
	// the home, and no peer.
	if o.Epoch == 0 {
		fmt.Fprintf(out, "uuid   %s%s\nslot   %d\nhome   the node asked%s: it has no slot map and serves every slot\n",
			o.UUID, fromUser(c.user), o.Slot, ordinalNote(o.Self))
		return nil
	}
	home := fmt.Sprintf("ordinal %d", o.Ordinal)
	if pod := podOfPeer(o.Peer, o.Ordinal); pod != "" {
		home += ", pod " + pod
	}
	if o.Ordinal == o.Self {
		home += " (the pod asked)"
	}
	fmt.Fprintf(out, "uuid   %s%s\nslot   %d\nhome   %s\npeer   %s\nasked  ordinal %d, slot map epoch %d\n",
		o.UUID, fromUser(c.user), o.Slot, home, orNone(o.Peer), o.Self, o.Epoch)
	return nil
}

func fromUser(user string) string {
	if user == "" {
		return ""
	}
	return fmt.Sprintf(" (md5 of user id %q)", user)
}

func ordinalNote(self int) string {
	if self < 0 {
		return ""
	}
	return fmt.Sprintf(" (ordinal %d)", self)
}

func orNone(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// runSlotMap prints a pod's slot map as a table: who owns which slots,
// and what share of uuids that is (uuids are md5 digests, so a share of
// slots is the same share of uuids), with the asked pod's peer links.
func runSlotMap(ctx context.Context, fs *flag.FlagSet, c *common, args []string, out io.Writer) error {
	c.bindHTTP(fs)
	asJSON := fs.Bool("json", false, "print the node's answer as JSON")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 0 {
		return errors.New("usage: pushctl slotmap [--json]")
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	sm, err := cl.SlotMap(ctx)
	var none *api.NoSlotMapError
	if errors.As(err, &none) {
		if *asJSON {
			return printJSON(out, map[string]any{"sharded": false, "self": none.Self})
		}
		fmt.Fprintf(out, "not sharded: the node asked%s has no slot map and serves every slot\n", ordinalNote(none.Self))
		return nil
	}
	if err != nil {
		return err
	}
	if *asJSON {
		return printJSON(out, sm)
	}
	m, err := buildMap(sm)
	if err != nil {
		return fmt.Errorf("the node's slot map does not read back: %w", err)
	}
	// The links as the asked pod sees them; the table stands without them.
	links := map[int]string{}
	if st, err := cl.Status(ctx); err == nil {
		for _, p := range st.Peers {
			links[p.Ordinal] = "down"
			if p.Up {
				links[p.Ordinal] = "up"
			}
		}
	}
	links[sm.Self] = "self"

	fmt.Fprintf(out, "slot map epoch %d, as ordinal %d has it (%d slots)\n", m.Epoch(), sm.Self, slotmap.NumSlots)
	tw := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ORDINAL\tSLOTS\tSHARE\tRANGES\tPEER\tLINK")
	ords := m.Ordinals()
	if !slices.Contains(ords, sm.Self) {
		ords = append(ords, sm.Self)
		sort.Ints(ords)
	}
	for _, o := range ords {
		n := m.SlotCount(o)
		peer, _ := m.Peer(o)
		mark := ""
		if o == sm.Self {
			mark = " *"
		}
		fmt.Fprintf(tw, "%d%s\t%d\t%.1f%%\t%s\t%s\t%s\n", o, mark, n, 100*float64(n)/slotmap.NumSlots,
			orNone(m.Ranges(o)), orNone(peer), orNone(links[o]))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(out, "* the pod asked; LINK is its peer link to each pod")
	return nil
}

// buildMap checks the node's answer as the node itself would, so that
// the table shows only a map that covers every slot once.
func buildMap(sm api.SlotMap) (slotmap.Map, error) {
	spec := slotmap.Spec{Epoch: sm.Epoch, Peers: map[int]string{}}
	for _, r := range sm.Ranges {
		spec.Ranges = append(spec.Ranges, slotmap.Range{From: r.From, To: r.To, Ordinal: r.Ordinal})
	}
	for k, addr := range sm.Peers {
		o, err := strconv.Atoi(k)
		if err != nil {
			return slotmap.Map{}, fmt.Errorf("peer key %q is not an ordinal", k)
		}
		spec.Peers[o] = addr
	}
	return spec.Build()
}

// podOfPeer names the pod behind a peer address when the address is the
// pod's own DNS name, as the operator writes it
// (<pod>.<headless service>.<namespace>.svc:9977, the pod being
// <PushNode>-<ordinal>); "" for any other address, an IP for one.
func podOfPeer(addr string, ordinal int) string {
	host, _, err := net.SplitHostPort(addr)
	if err != nil || net.ParseIP(host) != nil {
		return ""
	}
	label, _, _ := strings.Cut(host, ".")
	if o, ok := slotmap.OrdinalFromPodName(label); !ok || o != ordinal {
		return ""
	}
	return label
}
