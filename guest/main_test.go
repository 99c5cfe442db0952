package main

import (
	"bytes"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestHealthReturnsJSONWithVersion(t *testing.T) {
	srv := httptest.NewServer(handler(time.Now(), log.New(io.Discard, "", 0)))
	defer srv.Close()
	res, err := http.Get(srv.URL + "/health")
	if err != nil {
		t.Fatal(err)
	}
	defer res.Body.Close()
	if res.StatusCode != 200 || res.Header.Get("Content-Type") != "application/json" {
		t.Fatalf("status %d, content type %q", res.StatusCode, res.Header.Get("Content-Type"))
	}
	var body map[string]any
	if err := json.NewDecoder(res.Body).Decode(&body); err != nil {
		t.Fatal(err)
	}
	if body["status"] != "ok" || body["version"] != version {
		t.Fatalf("body %v", body)
	}
}

func TestUnknownPathAndMethod(t *testing.T) {
	srv := httptest.NewServer(handler(time.Now(), log.New(io.Discard, "", 0)))
	defer srv.Close()
	if res, _ := http.Get(srv.URL + "/nope"); res.StatusCode != 404 {
		t.Fatalf("GET /nope: %d", res.StatusCode)
	}
	if res, _ := http.Post(srv.URL+"/health", "text/plain", nil); res.StatusCode != 405 {
		t.Fatalf("POST /health: %d", res.StatusCode)
	}
}

func TestUsageErrors(t *testing.T) {
	for _, args := range [][]string{{}, {"bogus"}, {"guest"}, {"guest", "--port", "0"}, {"guest", "--port", "x"}, {"guest", "--port", "80", "extra"}} {
		var out, errOut bytes.Buffer
		if code := run(args, &out, &errOut); code != 2 {
			t.Errorf("%v: exit %d, want 2", args, code)
		}
	}
	var out bytes.Buffer
	if code := run([]string{"version"}, &out, io.Discard); code != 0 || strings.TrimSpace(out.String()) != version {
		t.Fatalf("version: %d %q", code, out.String())
	}
}

func TestParseGuestFlags(t *testing.T) {
	addr, err := parseGuestFlags([]string{"--port=5000"}, io.Discard)
	if err != nil || addr != "0.0.0.0:5000" {
		t.Fatalf("%q %v", addr, err)
	}
}
