package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func newTestServer(t *testing.T, logs io.Writer) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(handler(time.Now(), log.New(logs, "", 0), testToken))
	t.Cleanup(srv.Close)
	return srv
}

// testToken arms /exec in the test servers, as rootfs.exec_token= on the kernel command line does.
const testToken = "0123456789abcdef0123456789abcdef"

func do(t *testing.T, method, url string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, url, err)
	}
	defer res.Body.Close()
	body, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, body
}

func TestHealthReturnsJSONWithVersion(t *testing.T) {
	var logs bytes.Buffer
	srv := newTestServer(t, &logs)
	res, raw := do(t, http.MethodGet, srv.URL+"/health")
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d, body %q", res.StatusCode, raw)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content type %q", ct)
	}
	var body struct {
		Status        string `json:"status"`
		Version       string `json:"version"`
		Hostname      string `json:"hostname"`
		UptimeSeconds *int64 `json:"uptimeSeconds"`
	}
	if err := json.Unmarshal(raw, &body); err != nil {
		t.Fatalf("invalid JSON %q: %v", raw, err)
	}
	if body.Status != "ok" || body.Version != version || body.UptimeSeconds == nil || *body.UptimeSeconds < 0 {
		t.Fatalf("body %s", raw)
	}
	if !strings.Contains(logs.String(), "GET /health") {
		t.Fatalf("request not logged: %q", logs.String())
	}
}

func TestHealthReportsBuildVersion(t *testing.T) {
	old := version
	version = "1.2.3-test"
	t.Cleanup(func() { version = old })
	srv := newTestServer(t, io.Discard)
	_, raw := do(t, http.MethodGet, srv.URL+"/health")
	if !strings.Contains(string(raw), `"version":"1.2.3-test"`) {
		t.Fatalf("body %s", raw)
	}
}

func TestUnknownPathIs404(t *testing.T) {
	srv := newTestServer(t, io.Discard)
	for _, path := range []string{"/", "/nope", "/health/extra"} {
		if res, _ := do(t, http.MethodGet, srv.URL+path); res.StatusCode != http.StatusNotFound {
			t.Errorf("GET %s: %d, want 404", path, res.StatusCode)
		}
	}
}

func TestNonGetOnHealthIs405(t *testing.T) {
	srv := newTestServer(t, io.Discard)
	for _, method := range []string{http.MethodPost, http.MethodPut, http.MethodDelete} {
		res, _ := do(t, method, srv.URL+"/health")
		if res.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("%s /health: %d, want 405", method, res.StatusCode)
		}
		if allow := res.Header.Get("Allow"); allow != http.MethodGet {
			t.Errorf("%s /health: Allow %q", method, allow)
		}
	}
}

func TestUsageErrorsExit2(t *testing.T) {
	cases := [][]string{
		{},
		{"--help"},
		{"-h"},
		{"bogus"},
		{"guest"},
		{"guest", "--help"},
		{"guest", "--port"},
		{"guest", "--port", "0"},
		{"guest", "--port", "65536"},
		{"guest", "--port", "x"},
		{"guest", "--port=x"},
		{"guest", "--bogus", "1"},
		{"guest", "--port", "80", "extra"},
	}
	for _, args := range cases {
		var out, errOut bytes.Buffer
		if code := run(args, &out, &errOut); code != 2 {
			t.Errorf("%q: exit %d, want 2", args, code)
		}
		if errOut.Len() == 0 {
			t.Errorf("%q: nothing written to stderr", args)
		}
		if out.Len() != 0 {
			t.Errorf("%q: unexpected stdout %q", args, out.String())
		}
	}
	var errOut bytes.Buffer
	run([]string{"bogus"}, io.Discard, &errOut)
	if !strings.Contains(errOut.String(), `unknown command "bogus"`) {
		t.Errorf("unknown command message: %q", errOut.String())
	}
}

func TestVersionCommand(t *testing.T) {
	var out bytes.Buffer
	if code := run([]string{"version"}, &out, io.Discard); code != 0 || strings.TrimSpace(out.String()) != version {
		t.Fatalf("version: exit %d, output %q", code, out.String())
	}
}

func TestParseGuestFlags(t *testing.T) {
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--port=5000"}, "0.0.0.0:5000"},
		{[]string{"--port", "5000"}, "0.0.0.0:5000"},
		{[]string{"-port", "80", "--listen", "127.0.0.1"}, "127.0.0.1:80"},
		{[]string{"--listen=::1", "--port=8080"}, "[::1]:8080"},
	}
	for _, c := range cases {
		addr, err := parseGuestFlags(c.args, io.Discard)
		if err != nil || addr != c.want {
			t.Errorf("%q: got %q, %v; want %q", c.args, addr, err, c.want)
		}
	}
}

func TestServeShutsDownOnCancel(t *testing.T) {
	// Find a free port, then let serve listen on it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var logs bytes.Buffer
	done := make(chan error, 1)
	go func() { done <- serve(ctx, addr, log.New(&logs, "", 0)) }()

	deadline := time.Now().Add(5 * time.Second)
	for {
		res, err := http.Get("http://" + addr + "/health")
		if err == nil {
			res.Body.Close()
			if res.StatusCode != http.StatusOK {
				t.Fatalf("status %d", res.StatusCode)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("server never came up: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("serve returned %v after cancel, want nil", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("serve did not return after cancel")
	}
}
