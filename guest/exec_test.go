package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

func postExec(t *testing.T, url, body string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodPost, url+"/exec", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Bearer "+testToken)
	res, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST /exec: %v", err)
	}
	defer res.Body.Close()
	raw, err := io.ReadAll(res.Body)
	if err != nil {
		t.Fatal(err)
	}
	return res, raw
}

func execOK(t *testing.T, url string, req map[string]any) execResponse {
	t.Helper()
	body, err := json.Marshal(req)
	if err != nil {
		t.Fatal(err)
	}
	res, raw := postExec(t, url, string(body))
	if res.StatusCode != http.StatusOK {
		t.Fatalf("status %d, body %q", res.StatusCode, raw)
	}
	if ct := res.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("content type %q", ct)
	}
	var out execResponse
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&out); err != nil {
		t.Fatalf("invalid answer %q: %v", raw, err)
	}
	return out
}

func TestExecRunsArgvWithExactEnvironmentInRoot(t *testing.T) {
	srv := newTestServer(t, io.Discard)
	got := execOK(t, srv.URL, map[string]any{"argv": []string{"/usr/bin/env"}, "env": []string{"A=1", "B=two words"}})
	if got.Code != 0 || got.Stdout != "A=1\nB=two words\n" || got.Stderr != "" || got.StdoutTruncated || got.TimedOut {
		t.Fatalf("env: %+v", got)
	}
	got = execOK(t, srv.URL, map[string]any{"argv": []string{"pwd"}, "env": []string{"PATH=/usr/bin:/bin"}})
	if got.Code != 0 || got.Stdout != "/\n" {
		t.Fatalf("pwd: %+v", got)
	}
	// No shell: the metacharacters reach the program as they are.
	got = execOK(t, srv.URL, map[string]any{"argv": []string{"echo", "$HOME", "a;b", "*"}, "env": []string{"PATH=/bin"}})
	if got.Stdout != "$HOME a;b *\n" {
		t.Fatalf("echo: %+v", got)
	}
}

func TestExecReportsExitCodeAndBothStreams(t *testing.T) {
	srv := newTestServer(t, io.Discard)
	got := execOK(t, srv.URL, map[string]any{"argv": []string{"/bin/sh", "-c", "echo out; echo err >&2; exit 3"}})
	if got.Code != 3 || got.Stdout != "out\n" || got.Stderr != "err\n" {
		t.Fatalf("%+v", got)
	}
	got = execOK(t, srv.URL, map[string]any{"argv": []string{"/bin/sh", "-c", "kill -TERM $$"}})
	if got.Code != 128+15 || got.TimedOut {
		t.Fatalf("killed by SIGTERM: %+v", got)
	}
}

func TestExecProgramThatCannotStartIs127(t *testing.T) {
	srv := newTestServer(t, io.Discard)
	plain := t.TempDir() + "/plain"
	if err := os.WriteFile(plain, []byte("#!/bin/sh\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		argv []string
		env  []string
		why  string
	}{
		{[]string{"no-such-program-x"}, []string{"PATH=/usr/bin:/bin"}, "not found in PATH /usr/bin:/bin"},
		// The command's PATH decides, not the operator's: without one, execvp's default.
		{[]string{"go"}, nil, "not found in PATH /bin:/usr/bin"},
		{[]string{"/no/such/file"}, nil, "no such file or directory"},
		{[]string{plain}, nil, "permission denied"},
	} {
		got := execOK(t, srv.URL, map[string]any{"argv": c.argv, "env": c.env})
		if got.Code != 127 || !strings.Contains(got.Stderr, "cannot run "+c.argv[0]) || !strings.Contains(got.Stderr, c.why) {
			t.Errorf("%q: %+v, want 127 and %q", c.argv, got, c.why)
		}
	}
}

func TestExecCapsEachStream(t *testing.T) {
	srv := newTestServer(t, io.Discard)
	got := execOK(t, srv.URL, map[string]any{"argv": []string{"/bin/sh", "-c", "head -c 100000 /dev/zero | tr '\\0' x; echo small >&2"}})
	if got.Code != 0 || len(got.Stdout) != outputCap || !got.StdoutTruncated || strings.Trim(got.Stdout, "x") != "" {
		t.Fatalf("stdout: %d bytes, truncated %v, code %d", len(got.Stdout), got.StdoutTruncated, got.Code)
	}
	if got.Stderr != "small\n" || got.StderrTruncated {
		t.Fatalf("stderr: %q, truncated %v", got.Stderr, got.StderrTruncated)
	}
}

// alive says whether pid is a live process (a zombie waiting for its reaper counts as dead).
func alive(pid int) bool {
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	fields := strings.Fields(string(stat[bytes.LastIndexByte(stat, ')')+1:]))
	return len(fields) > 0 && fields[0] != "Z" && fields[0] != "X"
}

func waitDead(t *testing.T, pid int) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); alive(pid); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still runs", pid)
		}
	}
}

func TestExecKillsTheProcessGroupAtTheTimeout(t *testing.T) {
	srv := newTestServer(t, io.Discard)
	start := time.Now()
	got := execOK(t, srv.URL, map[string]any{
		"argv":           []string{"/bin/sh", "-c", "sleep 60 & echo $!; sleep 60"},
		"timeoutSeconds": 1,
	})
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("answered after %s", took)
	}
	if !got.TimedOut || got.Code != 128+9 {
		t.Fatalf("%+v", got)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(got.Stdout))
	if err != nil {
		t.Fatalf("stdout %q: %v", got.Stdout, err)
	}
	waitDead(t, pid)
}

func TestExecEndsWhatTheProgramLeftRunning(t *testing.T) {
	srv := newTestServer(t, io.Discard)
	start := time.Now()
	// The background sleep keeps stdout open: the answer must not wait for it.
	got := execOK(t, srv.URL, map[string]any{"argv": []string{"/bin/sh", "-c", "sleep 60 & echo $!"}})
	if took := time.Since(start); took > 5*time.Second {
		t.Fatalf("answered after %s", took)
	}
	if got.Code != 0 || got.TimedOut {
		t.Fatalf("%+v", got)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(got.Stdout))
	if err != nil {
		t.Fatalf("stdout %q: %v", got.Stdout, err)
	}
	waitDead(t, pid)
}

func TestExecDoesNotWaitForOutputHeldOutsideTheGroup(t *testing.T) {
	srv := newTestServer(t, io.Discard)
	start := time.Now()
	// A process of its own session keeps stdout open: the answer waits drainGrace, not 30 s.
	got := execOK(t, srv.URL, map[string]any{
		"argv": []string{"/bin/sh", "-c", "setsid /bin/sh -c 'echo $$; exec sleep 30' & sleep 1"},
	})
	took := time.Since(start)
	pid, err := strconv.Atoi(strings.TrimSpace(got.Stdout))
	if err != nil {
		t.Fatalf("stdout %q: %v", got.Stdout, err)
	}
	_ = syscall.Kill(pid, syscall.SIGKILL)
	if took < drainGrace || took > drainGrace+4*time.Second {
		t.Fatalf("answered after %s", took)
	}
	if got.Code != 0 {
		t.Fatalf("%+v", got)
	}
}

func TestExecBadRequestsAre400WithTheReason(t *testing.T) {
	srv := newTestServer(t, io.Discard)
	for body, why := range map[string]string{
		``:                                        "invalid JSON",
		`{"argv":`:                                "invalid JSON",
		`[]`:                                      "invalid JSON",
		`{"argv":["true"]} {}`:                    "more than one value",
		`{"argv":["true"],"cwd":"/tmp"}`:          `unknown field "cwd"`,
		`{"argv":[]}`:                             "argv must name a program",
		`{}`:                                      "argv must name a program",
		`{"argv":[""]}`:                           "argv must name a program",
		`{"argv":["true","a\u0000b"]}`:            "NUL byte",
		`{"argv":["true"],"env":["NOEQUALS"]}`:    "not NAME=VALUE",
		`{"argv":["true"],"env":["=x"]}`:          "not NAME=VALUE",
		`{"argv":["true"],"env":["A=\u0000"]}`:    "NUL byte",
		`{"argv":["true"],"timeoutSeconds":-1}`:   "timeoutSeconds must be between 1 and 600",
		`{"argv":["true"],"timeoutSeconds":601}`:  "timeoutSeconds must be between 1 and 600",
		`{"argv":["true"],"timeoutSeconds":1.5}`:  "invalid JSON",
		`{"argv":["true"],"timeoutSeconds":"10"}`: "invalid JSON",
		`{"argv":"true"}`:                         "invalid JSON",
		`{"argv":["true"],"env":{"A":"1"}}`:       "invalid JSON",
		`{"argv":["true"],"x":"` + strings.Repeat("y", maxExecRequest) + `"}`: "too large",
	} {
		res, raw := postExec(t, srv.URL, body)
		if res.StatusCode != http.StatusBadRequest || !strings.Contains(string(raw), why) {
			t.Errorf("%.60q: %d %q, want 400 and %q", body, res.StatusCode, raw, why)
		}
	}
}

func TestExecDefaultTimeout(t *testing.T) {
	req, err := parseExecRequest(strings.NewReader(`{"argv":["true"]}`))
	if err != nil || req.TimeoutSeconds != defaultTimeoutSeconds || req.Env != nil {
		t.Fatalf("%+v, %v", req, err)
	}
	req, err = parseExecRequest(strings.NewReader(`{"argv":["true"],"timeoutSeconds":600}`))
	if err != nil || req.TimeoutSeconds != 600 {
		t.Fatalf("%+v, %v", req, err)
	}
}

func TestNonPostOnExecIs405(t *testing.T) {
	srv := newTestServer(t, io.Discard)
	for _, method := range []string{http.MethodGet, http.MethodPut, http.MethodDelete} {
		res, _ := do(t, method, srv.URL+"/exec")
		if res.StatusCode != http.StatusMethodNotAllowed || res.Header.Get("Allow") != http.MethodPost {
			t.Errorf("%s /exec: %d, Allow %q", method, res.StatusCode, res.Header.Get("Allow"))
		}
	}
}

func TestExecIsLoggedWithoutItsEnvironment(t *testing.T) {
	var logs bytes.Buffer
	srv := newTestServer(t, &logs)
	execOK(t, srv.URL, map[string]any{"argv": []string{"/bin/true"}, "env": []string{"SECRET=hunter2"}})
	if !strings.Contains(logs.String(), `exec "/bin/true": code 0`) || strings.Contains(logs.String(), "hunter2") {
		t.Fatalf("log: %q", logs.String())
	}
}

func TestExecKillsTheCommandWhenTheClientGoesAway(t *testing.T) {
	srv := newTestServer(t, io.Discard)
	pidFile := t.TempDir() + "/pid"
	body, _ := json.Marshal(map[string]any{"argv": []string{"/bin/sh", "-c", `echo $$ > "$0"; exec sleep 60`, pidFile}})
	ctx, cancel := context.WithCancel(context.Background())
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, srv.URL+"/exec", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+testToken)
	done := make(chan struct{})
	go func() {
		defer close(done)
		if res, err := http.DefaultClient.Do(req); err == nil {
			res.Body.Close()
		}
	}()
	var pid int
	for deadline := time.Now().Add(5 * time.Second); pid == 0; time.Sleep(20 * time.Millisecond) {
		if raw, err := os.ReadFile(pidFile); err == nil {
			pid, _ = strconv.Atoi(strings.TrimSpace(string(raw)))
		}
		if time.Now().After(deadline) {
			t.Fatal("the command never started")
		}
	}
	cancel()
	<-done
	waitDead(t, pid)
}

func TestExecIsOffUnlessTheCommandLineArmsItAndNeedsTheToken(t *testing.T) {
	off := httptest.NewServer(handler(time.Now(), log.New(io.Discard, "", 0), ""))
	t.Cleanup(off.Close)
	if res, raw := postExec(t, off.URL, `{"argv":["true"]}`); res.StatusCode != http.StatusNotFound {
		t.Fatalf("unarmed: %d %q", res.StatusCode, raw)
	}
	srv := newTestServer(t, io.Discard)
	for _, auth := range []string{"", "Bearer wrong", "Bearer " + testToken + "x", testToken} {
		req, _ := http.NewRequest(http.MethodPost, srv.URL+"/exec", strings.NewReader(`{"argv":["true"]}`))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		res, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.StatusCode != http.StatusUnauthorized && !(auth == testToken && res.StatusCode == http.StatusOK) {
			t.Errorf("Authorization %q: %d", auth, res.StatusCode)
		}
	}
}

func TestExecTokenComesFromTheKernelCommandLine(t *testing.T) {
	for cmdline, want := range map[string]string{
		"console=ttyS0 rootfs.exec_token=" + testToken + " ip=x": testToken,
		"console=ttyS0 rootfs.exec_token=short":                  "",
		"console=ttyS0 root=/dev/vda":                            "",
		"":                                                       "",
	} {
		if got := execTokenFromCmdline(cmdline); got != want {
			t.Errorf("%q: %q, want %q", cmdline, got, want)
		}
	}
}
