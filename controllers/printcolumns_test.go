package controllers_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/rest"

	ddpushv1 "github.com/ddpush/ddpush-operator/api/v1alpha1"
)

// table asks the API server for the table `kubectl get` prints (the CRD's
// printer columns, rendered by the server) and returns each row as column
// name -> cell, for the default columns and the wide ones, and each
// column's priority (0: shown by default, 1: only with -o wide).
func table(t *testing.T, path string) ([]map[string]any, map[string]int32) {
	t.Helper()
	hc, err := rest.HTTPClientFor(cfg)
	must(t, err)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, strings.TrimSuffix(cfg.Host, "/")+path, nil)
	must(t, err)
	req.Header.Set("Accept", "application/json;as=Table;v=v1;g=meta.k8s.io")
	resp, err := hc.Do(req)
	must(t, err)
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	must(t, err)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s\n%s", path, resp.Status, body)
	}
	var tab metav1.Table
	must(t, json.Unmarshal(body, &tab))
	prio := map[string]int32{}
	for _, c := range tab.ColumnDefinitions {
		prio[c.Name] = c.Priority
	}
	var rows []map[string]any
	for _, r := range tab.Rows {
		row := map[string]any{}
		for i, c := range tab.ColumnDefinitions {
			row[c.Name] = r.Cells[i]
		}
		rows = append(rows, row)
	}
	return rows, prio
}

func TestPushNodeColumnsShowHealth(t *testing.T) {
	startManager(t, &testLocator{})
	ns := namespace(t)
	must(t, k8s.Create(context.Background(), newPushNode(ns, "cols")))
	markReady(t, ns, "cols")
	eventually(t, 30*time.Second, "columns", func() error {
		rows, prio := table(t, "/apis/ddpush.dev/v1alpha1/namespaces/"+ns+"/pushnodes")
		if prio["Available"] != 0 || prio["Degraded"] != 0 || prio["Problem"] != 1 {
			return fmt.Errorf("column priorities %v: Available and Degraded by default, Problem with -o wide", prio)
		}
		if len(rows) != 1 {
			return fmt.Errorf("%d rows", len(rows))
		}
		r := rows[0]
		// No node process answers here: available, but degraded.
		if r["Ready"] != "1/1" || r["Available"] != "True" || r["Degraded"] != "True" {
			return fmt.Errorf("row %v", r)
		}
		if p, _ := r["Problem"].(string); p == "" {
			return fmt.Errorf("no Problem column: %v", r)
		}
		return nil
	})
}

func TestPushMessageTargetColumnShowsTheSpecTarget(t *testing.T) {
	// No manager: the column must not depend on anything the operator writes.
	ns := namespace(t)
	ctx := context.Background()
	uuid := "0123456789abcdef0123456789abcdef"
	for _, pm := range []*ddpushv1.PushMessage{
		{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "by-user"},
			Spec: ddpushv1.PushMessageSpec{PushNodeName: "n", UserID: "10001", Kind: ddpushv1.KindGeneral}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: "by-uuid"},
			Spec: ddpushv1.PushMessageSpec{PushNodeName: "n", UUID: uuid, Kind: ddpushv1.KindGeneral}},
	} {
		must(t, k8s.Create(ctx, pm))
	}
	got := map[string]any{}
	rows, prio := table(t, "/apis/ddpush.dev/v1alpha1/namespaces/"+ns+"/pushmessages")
	if prio["Target"] != 0 {
		t.Errorf("Target has priority %d, want 0 (shown by default)", prio["Target"])
	}
	for _, r := range rows {
		got[r["Name"].(string)] = r["Target"]
	}
	if got["by-user"] != "10001" || got["by-uuid"] != uuid {
		t.Fatalf("Target column: %v", got)
	}
}
