package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"
)

// POST /exec runs one program in the guest, the way `env -i K=V... argv...` would from `/`:
// no shell, exactly the given environment, stdin from /dev/null, in a process group of its
// own that is killed at the timeout and, so that nothing it started outlives it, when it exits.
// The answer carries the exit code (128+N when killed by signal N, 127 when the program could
// not be started, with the reason in stderr) and the first outputCap bytes of each stream.

const (
	maxExecRequest        = 1 << 20
	outputCap             = 64 << 10
	defaultTimeoutSeconds = 60
	maxTimeoutSeconds     = 600
	// What execvp searches when the environment has no PATH (glibc's _CS_PATH).
	defaultSearchPath = "/bin:/usr/bin"
	// How long the output pipes may stay open after the group is killed: a process that left
	// the group (setsid) and kept them open must not hold the answer forever.
	drainGrace = 2 * time.Second
)

type execRequest struct {
	Argv []string `json:"argv"`
	Env  []string `json:"env"`
	// TimeoutSeconds: 0 or absent means defaultTimeoutSeconds.
	TimeoutSeconds int `json:"timeoutSeconds"`
}

type execResponse struct {
	Code            int    `json:"code"`
	Stdout          string `json:"stdout"`
	Stderr          string `json:"stderr"`
	StdoutTruncated bool   `json:"stdoutTruncated"`
	StderrTruncated bool   `json:"stderrTruncated"`
	TimedOut        bool   `json:"timedOut"`
}

// parseExecRequest reads one JSON object and refuses what cannot be run as asked.
func parseExecRequest(body io.Reader) (execRequest, error) {
	var req execRequest
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, fmt.Errorf("invalid JSON: %w", err)
	}
	if dec.More() {
		return req, errors.New("invalid JSON: more than one value")
	}
	if len(req.Argv) == 0 || req.Argv[0] == "" {
		return req, errors.New("argv must name a program")
	}
	for _, a := range req.Argv {
		if strings.IndexByte(a, 0) >= 0 {
			return req, fmt.Errorf("argv: %q contains a NUL byte", a)
		}
	}
	for _, e := range req.Env {
		name, _, ok := strings.Cut(e, "=")
		if !ok || name == "" {
			return req, fmt.Errorf("env: %q is not NAME=VALUE", e)
		}
		if strings.IndexByte(e, 0) >= 0 {
			return req, fmt.Errorf("env: %q contains a NUL byte", e)
		}
	}
	if req.TimeoutSeconds < 0 || req.TimeoutSeconds > maxTimeoutSeconds {
		return req, fmt.Errorf("timeoutSeconds must be between 1 and %d (0 or absent: %d)", maxTimeoutSeconds, defaultTimeoutSeconds)
	}
	if req.TimeoutSeconds == 0 {
		req.TimeoutSeconds = defaultTimeoutSeconds
	}
	return req, nil
}

// lookPath finds a program as execvp does with the command's own PATH, not the operator's.
func lookPath(name string, env []string) (string, error) {
	if strings.Contains(name, "/") {
		return name, nil
	}
	search := defaultSearchPath
	for _, e := range env {
		if v, ok := strings.CutPrefix(e, "PATH="); ok {
			search = v
		}
	}
	for _, dir := range filepath.SplitList(search) {
		if dir == "" {
			dir = "."
		}
		p := filepath.Join(dir, name)
		if st, err := os.Stat(p); err == nil && st.Mode().IsRegular() && st.Mode().Perm()&0o111 != 0 {
			if !filepath.IsAbs(p) {
				p = "/" + p // the command runs in /
			}
			return p, nil
		}
	}
	return "", fmt.Errorf("%s: not found in PATH %s", name, search)
}

// cappedBuffer keeps the first outputCap bytes and counts the rest.
type cappedBuffer struct {
	data []byte
	cut  bool
}

func (b *cappedBuffer) Write(p []byte) (int, error) {
	room := outputCap - len(b.data)
	if len(p) > room {
		b.data = append(b.data, p[:max(room, 0)]...)
		b.cut = true
	} else {
		b.data = append(b.data, p...)
	}
	return len(p), nil
}

// runExec runs the request; ctx ending (the client went away) kills the command like the timeout.
func runExec(ctx context.Context, req execRequest) execResponse {
	env := req.Env
	if env == nil {
		env = []string{}
	}
	cannot := func(err error) execResponse {
		return execResponse{Code: 127, Stderr: fmt.Sprintf("infra.operator: cannot run %s: %v\n", req.Argv[0], err)}
	}
	prog, err := lookPath(req.Argv[0], env)
	if err != nil {
		return cannot(err)
	}
	outR, outW, err := os.Pipe()
	if err != nil {
		return cannot(err)
	}
	errR, errW, err := os.Pipe()
	if err != nil {
		outR.Close()
		outW.Close()
		return cannot(err)
	}
	cmd := &exec.Cmd{
		Path:        prog,
		Args:        req.Argv,
		Env:         env,
		Dir:         "/",
		Stdout:      outW,
		Stderr:      errW,
		SysProcAttr: &syscall.SysProcAttr{Setpgid: true},
	}
	startErr := cmd.Start()
	outW.Close()
	errW.Close()
	if startErr != nil {
		outR.Close()
		errR.Close()
		return cannot(startErr)
	}
	pgid := cmd.Process.Pid
	var stdout, stderr cappedBuffer
	var readers sync.WaitGroup
	for _, p := range []struct {
		r *os.File
		b *cappedBuffer
	}{{outR, &stdout}, {errR, &stderr}} {
		readers.Add(1)
		go func() {
			defer readers.Done()
			_, _ = io.Copy(p.b, p.r)
		}()
	}

	waited := make(chan error, 1)
	go func() { waited <- cmd.Wait() }()
	timer := time.NewTimer(time.Duration(req.TimeoutSeconds) * time.Second)
	defer timer.Stop()
	timedOut := false
	var waitErr error
	select {
	case waitErr = <-waited:
	case <-timer.C:
		timedOut = true
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		waitErr = <-waited
	case <-ctx.Done():
		_ = syscall.Kill(-pgid, syscall.SIGKILL)
		waitErr = <-waited
	}
	// Whatever the program left running in its group goes with it (and closes the pipes).
	_ = syscall.Kill(-pgid, syscall.SIGKILL)
	drained := make(chan struct{})
	go func() { readers.Wait(); close(drained) }()
	select {
	case <-drained:
	case <-time.After(drainGrace):
		outR.Close()
		errR.Close()
		<-drained
	}
	outR.Close()
	errR.Close()

	res := execResponse{
		Stdout:          string(stdout.data),
		Stderr:          string(stderr.data),
		StdoutTruncated: stdout.cut,
		StderrTruncated: stderr.cut,
		TimedOut:        timedOut,
	}
	var exitErr *exec.ExitError
	switch {
	case waitErr == nil:
		res.Code = 0
	case errors.As(waitErr, &exitErr):
		if ws, ok := exitErr.Sys().(syscall.WaitStatus); ok && ws.Signaled() {
			res.Code = 128 + int(ws.Signal())
		} else {
			res.Code = exitErr.ExitCode()
		}
	default:
		res.Code = 127
		res.Stderr += fmt.Sprintf("infra.operator: waiting for %s: %v\n", req.Argv[0], waitErr)
	}
	return res
}
