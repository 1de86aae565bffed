// Command pushctl drives a push node by hand or from scripts: it acts as a
// phone, pushes over the push port or the HTTP API, looks clients up and
// follows delivery events.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
	"unicode/utf8"

	"github.com/ddpush/ddpush-operator/node/api"
	"github.com/ddpush/ddpush-operator/node/httpapi"
	"github.com/ddpush/ddpush-operator/node/phone"
	"github.com/ddpush/ddpush-operator/node/pusher"
	"github.com/ddpush/ddpush-operator/node/wire"
)

const usage = `pushctl drives a DDPush-compatible push node.

Usage:
  pushctl phone   [--udp|--tcp] [--server HOST:9966] (--uuid HEX | --user ID) [--interval 50s] [--count N] [--timeout D] [--no-ack]
  pushctl push    (--uuid HEX | --user ID) --kind general|classified|custom [--data TEXT | --bits MASK] [--via port|http] [--key K]
  pushctl bulk    --kind … [--data …|--bits …] HEX-OR-USER …        (HTTP; arguments that are not 32 hex are user ids)
  pushctl lookup  (--uuid HEX | --user ID)
  pushctl pushes  ID
  pushctl events  [--after SEQ] [--follow]
  pushctl status
  pushctl expire  --hours N
  pushctl uuid    USER-ID                                            (print the uuid a phone derives from a user id)
  pushctl home    (UUID | --uuid HEX | --user ID) [--json]           (which pod of a sharded PushNode is the uuid's home)
  pushctl slotmap [--json]                                           (the slot map: each pod's slots and share of uuids)

HTTP commands use --http (default http://127.0.0.1:8080, or $PUSHCTL_HTTP) and the
token from --token, $PUSHCTL_TOKEN or --token-file (default ./data/api-token).
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, os.Args[1:], os.Stdout)
	stop()
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			os.Exit(0)
		}
		fmt.Fprintln(os.Stderr, "pushctl:", err)
		os.Exit(1)
	}
}

type common struct {
	httpURL   string
	token     string
	tokenFile string
	uuid      string
	user      string
}

func (c *common) bindHTTP(fs *flag.FlagSet) {
	fs.StringVar(&c.httpURL, "http", envOr("PUSHCTL_HTTP", "http://127.0.0.1:8080"), "node HTTP API base URL")
	fs.StringVar(&c.token, "token", os.Getenv("PUSHCTL_TOKEN"), "API bearer token")
	fs.StringVar(&c.tokenFile, "token-file", "./data/api-token", "file holding the API token, used when --token is empty")
}

func (c *common) bindTarget(fs *flag.FlagSet) {
	fs.StringVar(&c.uuid, "uuid", "", "client uuid (32 hex characters)")
	fs.StringVar(&c.user, "user", "", "client user id (uuid = md5 of it, as DDPush clients do)")
}

func (c *common) target() (wire.UUID, error) {
	switch {
	case c.uuid != "" && c.user != "":
		return wire.UUID{}, errors.New("give --uuid or --user, not both")
	case c.uuid != "":
		return wire.ParseUUID(c.uuid)
	case c.user != "":
		return httpapi.UserUUID(c.user), nil
	}
	return wire.UUID{}, errors.New("a target is required: --uuid HEX or --user ID")
}

func (c *common) client() (*api.Client, error) {
	tok := c.token
	if tok == "" {
		b, err := os.ReadFile(c.tokenFile)
		if err != nil {
			return nil, fmt.Errorf("no API token: pass --token, set PUSHCTL_TOKEN or point --token-file at the node's token (%v)", err)
		}
		tok = strings.TrimSpace(string(b))
	}
	return api.NewClient(c.httpURL, tok), nil
}

func envOr(k, def string) string {
	if v := os.Getenv(k); v != "" {
		return v
	}
	return def
}

func run(ctx context.Context, args []string, out io.Writer) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(out, usage)
		return nil
	}
	cmd, args := args[0], args[1:]
	fs := flag.NewFlagSet("pushctl "+cmd, flag.ContinueOnError)
	var c common
	switch cmd {
	case "phone":
		return runPhone(ctx, fs, &c, args, out)
	case "push":
		return runPush(ctx, fs, &c, args, out)
	case "bulk":
		return runBulk(ctx, fs, &c, args, out)
	case "home":
		return runHome(ctx, fs, &c, args, out)
	case "slotmap":
		return runSlotMap(ctx, fs, &c, args, out)
	case "lookup":
		c.bindHTTP(fs)
		c.bindTarget(fs)
		if err := fs.Parse(args); err != nil {
			return err
		}
		u, err := c.target()
		if err != nil {
			return err
		}
		cl, err := c.client()
		if err != nil {
			return err
		}
		info, err := cl.Client(ctx, u.String())
		if err != nil {
			return err
		}
		return printJSON(out, info)
	case "pushes":
		c.bindHTTP(fs)
		if err := fs.Parse(args); err != nil {
			return err
		}
		if fs.NArg() != 1 {
			return errors.New("usage: pushctl pushes ID")
		}
		id, err := strconv.ParseUint(fs.Arg(0), 10, 64)
		if err != nil {
			return fmt.Errorf("push id %q is not a number", fs.Arg(0))
		}
		cl, err := c.client()
		if err != nil {
			return err
		}
		p, err := cl.GetPush(ctx, id)
		if err != nil {
			return err
		}
		return printJSON(out, p)
	case "events":
		c.bindHTTP(fs)
		after := fs.Uint64("after", 0, "print events after this sequence number")
		follow := fs.Bool("follow", false, "keep waiting for new events")
		if err := fs.Parse(args); err != nil {
			return err
		}
		cl, err := c.client()
		if err != nil {
			return err
		}
		cl.HTTP.Timeout = 0
		cursor := *after
		for {
			wait := time.Duration(0)
			if *follow {
				wait = 30 * time.Second
			}
			evs, err := cl.Events(ctx, cursor, 1000, wait)
			if err != nil {
				if ctx.Err() != nil {
					return nil
				}
				return err
			}
			if evs.Gap {
				fmt.Fprintf(out, "# events after %d were trimmed; some were missed\n", cursor)
			}
			for _, e := range evs.Events {
				fmt.Fprintf(out, "%d\t%s\tpush %d\t%s\t%s\t%s\n", e.Seq, e.At.Format(time.RFC3339Nano), e.PushID, e.UUID, e.Kind, e.Fate)
			}
			cursor = evs.Next
			if !*follow && len(evs.Events) < 1000 {
				return nil
			}
		}
	case "status":
		c.bindHTTP(fs)
		if err := fs.Parse(args); err != nil {
			return err
		}
		cl, err := c.client()
		if err != nil {
			return err
		}
		s, err := cl.Status(ctx)
		if err != nil {
			return err
		}
		return printJSON(out, s)
	case "expire":
		c.bindHTTP(fs)
		hours := fs.Float64("hours", -1, "remove records inactive for more than this many hours")
		if err := fs.Parse(args); err != nil {
			return err
		}
		if *hours < 0 {
			return errors.New("--hours is required (e.g. --hours 48)")
		}
		cl, err := c.client()
		if err != nil {
			return err
		}
		r, err := cl.Expire(ctx, *hours)
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "removed %d records\n", r.Removed)
		return nil
	case "uuid":
		if len(args) != 1 {
			return errors.New("usage: pushctl uuid USER-ID")
		}
		fmt.Fprintln(out, httpapi.UserUUID(args[0]).String())
		return nil
	}
	return fmt.Errorf("unknown command %q (try pushctl help)", cmd)
}

func printJSON(out io.Writer, v any) error {
	e := json.NewEncoder(out)
	e.SetIndent("", "  ")
	return e.Encode(v)
}

func describe(m phone.Message) string {
	switch m.Cmd {
	case wire.CmdHeartbeat:
		return fmt.Sprintf("heartbeat answer (0x00) appId=%d", m.AppID)
	case wire.CmdGeneral:
		return fmt.Sprintf("general notice (0x10) appId=%d", m.AppID)
	case wire.CmdClassified:
		var mask uint64
		for _, b := range m.Body {
			mask = mask<<8 | uint64(b)
		}
		return fmt.Sprintf("classified notice (0x11) appId=%d bits=%#x", m.AppID, mask)
	case wire.CmdCustom:
		return fmt.Sprintf("custom message (0x20) appId=%d %d bytes: %q", m.AppID, len(m.Body), m.Body)
	}
	return fmt.Sprintf("cmd %#x appId=%d", m.Cmd, m.AppID)
}

func runPhone(ctx context.Context, fs *flag.FlagSet, c *common, args []string, out io.Writer) error {
	c.bindTarget(fs)
	server := fs.String("server", "127.0.0.1:9966", "node client address")
	useTCP := fs.Bool("tcp", false, "connect over TCP")
	fs.Bool("udp", true, "connect over UDP (the default)")
	interval := fs.Duration("interval", 50*time.Second, "heartbeat interval")
	count := fs.Int("count", 0, "exit after this many messages (0: run until interrupted)")
	timeout := fs.Duration("timeout", 0, "exit with an error if --count messages have not arrived in this time")
	noAck := fs.Bool("no-ack", false, "do not ack what arrives")
	appID := fs.Uint("app-id", 1, "appId of this client (1..255)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	u, err := c.target()
	if err != nil {
		return err
	}
	if *appID < 1 || *appID > 255 {
		return errors.New("--app-id must be 1..255")
	}
	network := "udp"
	if *useTCP {
		network = "tcp"
	}
	p, err := phone.Dial(network, *server, u)
	if err != nil {
		return err
	}
	defer p.Close()
	p.AppID = byte(*appID)
	p.AutoAck = !*noAck
	fmt.Fprintf(out, "phone %s online over %s to %s (heartbeat every %s)\n", u, network, *server, *interval)
	if err := p.Heartbeat(); err != nil {
		return err
	}
	tick := time.NewTicker(*interval)
	defer tick.Stop()
	var deadline <-chan time.Time
	if *timeout > 0 {
		t := time.NewTimer(*timeout)
		defer t.Stop()
		deadline = t.C
	}
	got := 0
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-deadline:
			return fmt.Errorf("received %d of %d messages within %s", got, *count, *timeout)
		case <-tick.C:
			if err := p.Heartbeat(); err != nil {
				return err
			}
		case m, ok := <-p.Messages():
			if !ok {
				return errors.New("connection closed by the node")
			}
			fmt.Fprintf(out, "%s received %s\n", m.At.Format("15:04:05.000"), describe(m))
			if m.Cmd != wire.CmdHeartbeat {
				got++
			}
			if *count > 0 && got >= *count {
				return nil
			}
		}
	}
}

// payloadFields puts a custom payload given as an argument in the request
// field that carries it unchanged: data when it is UTF-8 text, binaryData
// otherwise (JSON would replace the bytes that are not UTF-8).
func payloadFields(data string) (string, []byte) {
	if data == "" || utf8.ValidString(data) {
		return data, nil
	}
	return "", []byte(data)
}

func bindMessage(fs *flag.FlagSet) (kind, data, bits *string) {
	kind = fs.String("kind", "custom", "general, classified or custom")
	data = fs.String("data", "", "custom payload (text)")
	bits = fs.String("bits", "", "classified bits (decimal or 0x hex)")
	return
}

func runPush(ctx context.Context, fs *flag.FlagSet, c *common, args []string, out io.Writer) error {
	c.bindHTTP(fs)
	c.bindTarget(fs)
	kind, data, bits := bindMessage(fs)
	via := fs.String("via", "http", "port (the DDPush push port) or http")
	server := fs.String("server", "127.0.0.1:9999", "node push address (with --via port)")
	key := fs.String("key", "", "idempotency key (HTTP only)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	u, err := c.target()
	if err != nil {
		return err
	}
	switch *via {
	case "port":
		p, err := pusher.Dial(*server, 10*time.Second)
		if err != nil {
			return err
		}
		defer p.Close()
		switch *kind {
		case "general":
			err = p.General(u)
		case "classified":
			var b uint64
			if b, err = api.ParseBits(*bits); err == nil {
				err = p.Classified(u, b)
			}
		case "custom":
			err = p.Custom(u, []byte(*data))
		default:
			err = fmt.Errorf("kind %q is not general, classified or custom", *kind)
		}
		if err != nil {
			return err
		}
		fmt.Fprintf(out, "accepted: %s push to %s\n", *kind, u)
		return nil
	case "http":
		cl, err := c.client()
		if err != nil {
			return err
		}
		req := api.PushRequest{UUID: u.String(), Kind: *kind, Key: *key}
		req.Data, req.BinaryData = payloadFields(*data)
		if *bits != "" {
			b, err := api.ParseBits(*bits)
			if err != nil {
				return err
			}
			ab := api.Bits(b)
			req.Bits = &ab
		}
		p, err := cl.Push(ctx, req)
		if err != nil {
			return err
		}
		dup := ""
		if p.Duplicate {
			dup = " (duplicate of an earlier push with this key)"
		}
		fmt.Fprintf(out, "accepted: push %d (%s) to %s: %s%s\n", p.ID, p.Kind, p.UUID, p.Fate, dup)
		return nil
	}
	return fmt.Errorf("--via %q is not port or http", *via)
}

func runBulk(ctx context.Context, fs *flag.FlagSet, c *common, args []string, out io.Writer) error {
	c.bindHTTP(fs)
	kind, data, bits := bindMessage(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() == 0 {
		return errors.New("name at least one target (uuid or user id)")
	}
	req := api.BulkPushRequest{Kind: *kind}
	req.Data, req.BinaryData = payloadFields(*data)
	if *bits != "" {
		b, err := api.ParseBits(*bits)
		if err != nil {
			return err
		}
		ab := api.Bits(b)
		req.Bits = &ab
	}
	for _, t := range fs.Args() {
		switch _, err := wire.ParseUUID(t); {
		case err == nil:
			req.UUIDs = append(req.UUIDs, t)
		case !utf8.ValidString(t):
			// JSON cannot carry these bytes; their md5 is the target.
			req.UUIDs = append(req.UUIDs, httpapi.UserUUID(t).String())
		default:
			req.UserIDs = append(req.UserIDs, t)
		}
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	r, err := cl.BulkPush(ctx, req)
	if err != nil {
		return err
	}
	return printJSON(out, r)
}
