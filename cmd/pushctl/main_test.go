package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/ddpush/ddpush-operator/node/httpapi"
	"github.com/ddpush/ddpush-operator/node/nodetest"
)

func TestPushctlAgainstARealNode(t *testing.T) {
	n := nodetest.Start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	httpURL := "http://" + n.HTTPAddr().String()
	common := []string{"--http", httpURL, "--token", nodetest.Token}

	// A phone for user 10001 that exits after two messages.
	phoneOut := &bytes.Buffer{}
	phoneDone := make(chan error, 1)
	go func() {
		phoneDone <- run(ctx, []string{"phone", "--server", n.ClientAddr().String(), "--user", "10001", "--count", "2", "--timeout", "20s"}, phoneOut)
	}()
	nodetest.Eventually(t, 10*time.Second, func() error {
		_, err := n.API.ClientByUserID(ctx, "10001")
		return err
	})

	var out bytes.Buffer
	if err := run(ctx, append([]string{"push", "--user", "10001", "--kind", "custom", "--data", "over http", "--key", "k1"}, common...), &out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), "accepted: push 1") {
		t.Fatalf("push output: %s", out.String())
	}
	out.Reset()
	if err := run(ctx, []string{"push", "--via", "port", "--server", n.PushAddr().String(), "--user", "10001", "--kind", "classified", "--bits", "0x5"}, &out); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-phoneDone:
		if err != nil {
			t.Fatalf("phone: %v\n%s", err, phoneOut)
		}
	case <-ctx.Done():
		t.Fatal("phone did not get two messages")
	}
	if s := phoneOut.String(); !strings.Contains(s, `"over http"`) || !strings.Contains(s, "bits=0x5") {
		t.Fatalf("phone printed:\n%s", s)
	}

	for _, tc := range []struct {
		args []string
		want string
	}{
		{append([]string{"lookup", "--user", "10001"}, common...), `"uuid": "d89f3a35931c386956c1a402a8e09941"`},
		{append(append([]string{"pushes"}, common...), "1"), `"fate": "`},
		{append([]string{"events"}, common...), "push 1"},
		{append([]string{"status"}, common...), `"records": 1`},
		// User 10001, and the uuid of user 10002 (md5("10002")).
		{append(append([]string{"bulk", "--kind", "general"}, common...), "10001", "4052ce8ed2d7ec3dd2a3e6ce2d5e0b29"), `"accepted": 2`},
		{[]string{"uuid", "10001"}, "d89f3a35931c386956c1a402a8e09941"},
	} {
		out.Reset()
		if err := run(ctx, tc.args, &out); err != nil {
			t.Fatalf("%v: %v", tc.args, err)
		}
		if !strings.Contains(out.String(), tc.want) {
			t.Errorf("%v printed %q, want %q in it", tc.args, out.String(), tc.want)
		}
	}
}

func TestPushctlRefusesBadInput(t *testing.T) {
	ctx := context.Background()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"nonsense"}, "unknown command"},
		{[]string{"push", "--token", "x"}, "a target is required"},
		{[]string{"push", "--token", "x", "--uuid", "abc"}, "uuid must be 32 hex"},
		{[]string{"push", "--token", "x", "--uuid", "d89f3a35931c386956c1a402a8e09941", "--user", "1"}, "not both"},
		{[]string{"push", "--user", "1", "--via", "carrier-pigeon"}, "not port or http"},
		{[]string{"expire", "--token", "x"}, "--hours is required"},
		{[]string{"pushes", "--token", "x", "many"}, "not a number"},
		{[]string{"lookup", "--user", "1", "--token-file", "/nonexistent"}, "no API token"},
	} {
		err := run(ctx, tc.args, &bytes.Buffer{})
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error containing %q", tc.args, err, tc.want)
		}
	}
}

// A payload or user id that is not UTF-8 reaches the node byte for byte:
// JSON text cannot carry it, so pushctl sends it in a form that can.
func TestPushctlSendsBytesThatAreNotUTF8(t *testing.T) {
	n := nodetest.Start(t, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	common := []string{"--http", "http://" + n.HTTPAddr().String(), "--token", nodetest.Token}
	const payload, user = "caf\xe9 \xff", "us\xe9r"
	var out bytes.Buffer
	if err := run(ctx, append([]string{"push", "--user", "10001", "--kind", "custom", "--data", payload}, common...), &out); err != nil {
		t.Fatal(err)
	}
	if err := run(ctx, append(append([]string{"bulk", "--kind", "custom", "--data", payload}, common...), user), &out); err != nil {
		t.Fatal(err)
	}
	for _, u := range []string{httpapi.UserUUID("10001").String(), httpapi.UserUUID(user).String()} {
		c, err := n.API.Client(ctx, u)
		if err != nil {
			t.Fatalf("client %s: %v", u, err)
		}
		if len(c.Pending) != 1 || string(c.Pending[0].Data) != payload {
			t.Fatalf("client %s holds %+v, want the payload % x", u, c.Pending, payload)
		}
	}
}
