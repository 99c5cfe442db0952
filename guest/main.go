// Command infra.operator is the reference guest operator baked into every rootfs image.
//
// systemd starts it as `infra.operator guest --port 5000`. It serves GET /health so a host
// can tell that the image booted and the unit started, and POST /exec so the pipeline's boot
// check can run a program inside the booted guest (argv, no shell, an exact environment) and
// read what it printed. /exec is armed only when the kernel command line carries
// rootfs.exec_token=<token> (the boot check's VM does, a production VM does not), and then
// only for requests that carry that token: otherwise it answers 404. Real deployments configure their own operator binary; this one exists
// so the pipeline can be built and tested end to end.
package main

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

const usage = `usage:
  infra.operator guest --port N [--listen ADDR]   serve GET /health and POST /exec
  infra.operator version                          print the version
`

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return 2
	}
	switch args[0] {
	case "version", "--version":
		fmt.Fprintln(stdout, version)
		return 0
	case "help", "--help", "-h":
		fmt.Fprint(stderr, usage)
		return 2
	case "guest":
		addr, err := parseGuestFlags(args[1:], stderr)
		if err != nil {
			fmt.Fprintf(stderr, "infra.operator guest: %v\n", err)
			return 2
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		if err := serve(ctx, addr, log.New(stdout, "", log.LstdFlags)); err != nil {
			fmt.Fprintf(stderr, "infra.operator guest: %v\n", err)
			return 1
		}
		return 0
	default:
		fmt.Fprintf(stderr, "infra.operator: unknown command %q\n%s", args[0], usage)
		return 2
	}
}

func parseGuestFlags(args []string, stderr io.Writer) (string, error) {
	fs := flag.NewFlagSet("guest", flag.ContinueOnError)
	fs.SetOutput(stderr)
	port := fs.Int("port", 0, "TCP port to listen on (required)")
	listen := fs.String("listen", "0.0.0.0", "address to listen on")
	if err := fs.Parse(args); err != nil {
		return "", err
	}
	if fs.NArg() > 0 {
		return "", fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	if *port < 1 || *port > 65535 {
		return "", errors.New("--port must be between 1 and 65535")
	}
	return net.JoinHostPort(*listen, strconv.Itoa(*port)), nil
}

// handler serves the operator's HTTP API.
func handler(started time.Time, logger *log.Logger, execToken string) http.Handler {
	mux := http.NewServeMux()
	running := make(chan struct{}, maxConcurrentExecs)
	mux.HandleFunc("/health", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet {
			w.Header().Set("Allow", http.MethodGet)
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		hostname, _ := os.Hostname()
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(map[string]any{
			"status":        "ok",
			"version":       version,
			"hostname":      hostname,
			"uptimeSeconds": int64(time.Since(started).Seconds()),
		})
	})
	mux.HandleFunc("/exec", func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodPost {
			w.Header().Set("Allow", http.MethodPost)
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		if execToken == "" {
			http.Error(w, "POST /exec is off: the guest was not booted with "+execTokenParam+"<token>", http.StatusNotFound)
			return
		}
		got := strings.TrimPrefix(r.Header.Get("Authorization"), "Bearer ")
		if subtle.ConstantTimeCompare([]byte(got), []byte(execToken)) != 1 {
			http.Error(w, "POST /exec needs the token the guest was booted with", http.StatusUnauthorized)
			return
		}
		select {
		case running <- struct{}{}:
			defer func() { <-running }()
		default:
			http.Error(w, "too many programs running at once", http.StatusTooManyRequests)
			return
		}
		req, err := parseExecRequest(http.MaxBytesReader(w, r.Body, maxExecRequest))
		if err != nil {
			http.Error(w, "bad request: "+err.Error(), http.StatusBadRequest)
			return
		}
		res := runExec(r.Context(), req)
		logger.Printf("exec %q: code %d", req.Argv[0], res.Code)
		w.Header().Set("Content-Type", "application/json")
		_ = json.NewEncoder(w).Encode(res)
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		logger.Printf("%s %s %s", r.RemoteAddr, r.Method, r.URL.Path)
		mux.ServeHTTP(w, r)
	})
}

// execTokenParam arms POST /exec when it is on the kernel command line with a token of 32 or more characters.
const execTokenParam = "rootfs.exec_token="

// maxConcurrentExecs bounds the programs /exec runs at once; more requests answer 429.
const maxConcurrentExecs = 4

// execTokenFromCmdline is the token the kernel command line arms /exec with, or "" when it does not.
func execTokenFromCmdline(cmdline string) string {
	for _, field := range strings.Fields(cmdline) {
		if v, ok := strings.CutPrefix(field, execTokenParam); ok && len(v) >= 32 {
			return v
		}
	}
	return ""
}

func serve(ctx context.Context, addr string, logger *log.Logger) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return err
	}
	cmdline, _ := os.ReadFile("/proc/cmdline")
	token := execTokenFromCmdline(string(cmdline))
	srv := &http.Server{
		Handler:           handler(time.Now(), logger, token),
		ReadHeaderTimeout: 10 * time.Second,
		// A request (headers and its small JSON body) arrives within this; the answer may take longer.
		ReadTimeout: 30 * time.Second,
	}
	logger.Printf("infra.operator %s listening on %s (POST /exec %s)", version, ln.Addr(), map[bool]string{true: "armed", false: "off"}[token != ""])
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return err
	case <-ctx.Done():
		logger.Printf("shutting down")
		shutdownCtx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		return srv.Shutdown(shutdownCtx)
	}
}
