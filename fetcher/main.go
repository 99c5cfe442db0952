// rootfs-fetch: the block store's sync for hosts that have nothing yet but a shell and curl. A
// bootstrap script fetches this static binary from the bucket, checks its sha256, and runs
//
//	rootfs-fetch sync --bucket-url URL --region REGION --workspace DIR
//	    [--key KEY ...] [--pin KEY=SHA256 ...] [--default-language python] [--concurrency 4]
//
// It does what `rootfs s3 download` does with the block store (docs/block-store.md): each file's
// current version is assembled from blocks already on this host and frames fetched by range (all
// files at once, so a frame they share is fetched once), every block checked against its sha256
// and the whole file against the index, then renamed into place. Credentials come from
// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN; without them requests are
// unsigned. Exit 0: all in place; 1: a file failed (each says why); 2: usage.
package main

import (
	"flag"
	"fmt"
	"os"
	"regexp"
	"strings"
	"time"

	"github.com/klauspost/compress/zstd"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

var language = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,31}$`)

func logf(format string, a ...any) {
	fmt.Fprintf(os.Stderr, "%s rootfs-fetch: %s\n", time.Now().UTC().Format("2006-01-02T15:04:05Z"), fmt.Sprintf(format, a...))
}

func usage(msg string) int {
	fmt.Fprintf(os.Stderr, "rootfs-fetch: %s\nusage: rootfs-fetch sync --bucket-url URL --region REGION --workspace DIR [--key KEY ...] [--pin KEY=SHA256 ...] [--default-language LANG] [--concurrency N]\n", msg)
	return 2
}

func run(args []string) int {
	if len(args) < 1 || args[0] != "sync" {
		return usage("expected the sync command")
	}
	fs := flag.NewFlagSet("sync", flag.ContinueOnError)
	bucketURL := fs.String("bucket-url", "", "the bucket's base URL")
	region := fs.String("region", "us-east-1", "the bucket's region")
	workspace := fs.String("workspace", "", "where vmlinux and images/ go")
	defaultLanguage := fs.String("default-language", "python", "the image rootfs.ext4 points at")
	concurrency := fs.Int("concurrency", 4, "ranges fetched at once")
	var keys, pins multi
	fs.Var(&keys, "key", "a file to sync (default: every file the block store holds)")
	fs.Var(&pins, "pin", "KEY=SHA256: install KEY only with this content; other keys are skipped")
	if err := fs.Parse(args[1:]); err != nil {
		return 2
	}
	if *bucketURL == "" || *workspace == "" {
		return usage("--bucket-url and --workspace are required")
	}
	if !language.MatchString(*defaultLanguage) || *concurrency < 1 || *concurrency > 64 {
		return usage("bad --default-language or --concurrency")
	}
	for _, k := range keys {
		if !storeKey.MatchString(k) {
			return usage(fmt.Sprintf("--key %q is not vmlinux or rootfs-<lang>.ext4", k))
		}
	}
	pinned := map[string]string{}
	for _, p := range pins {
		k, v, ok := strings.Cut(p, "=")
		if !ok || !storeKey.MatchString(k) || !sha256Hex.MatchString(v) {
			return usage(fmt.Sprintf("--pin %q is not KEY=SHA256", p))
		}
		pinned[k] = v
	}
	b, err := newBucket(*bucketURL, *region)
	if err != nil {
		return usage(err.Error())
	}
	dec, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(1<<30))
	if err != nil {
		logf("error: %v", err)
		return 1
	}
	defer dec.Close()
	s := &syncer{b: b, workspace: *workspace, concurrency: *concurrency, pins: pinned, log: logf, decoder: dec}
	all, err := s.keys(keys)
	if err != nil {
		logf("error: %v", err)
		return 1
	}
	var todo []string
	for _, k := range all {
		if len(pinned) > 0 {
			if _, ok := pinned[k]; !ok {
				logf("%s is not pinned: skipped", k)
				continue
			}
		}
		todo = append(todo, k)
	}
	total, errs := s.syncAll(todo)
	failed := 0
	for _, k := range todo {
		if err, ok := errs[k]; ok {
			logf("error: %s: %v", k, err)
			failed++
		}
	}
	for k := range pinned {
		found := false
		for _, a := range all {
			found = found || a == k
		}
		if !found {
			logf("error: %s is pinned but the block store has no version of it", k)
			failed++
		}
	}
	s.link(*defaultLanguage)
	logf("done: %d file(s), %d bytes fetched, %d failed", len(all), total, failed)
	if failed > 0 {
		return 1
	}
	return 0
}

func main() { os.Exit(run(os.Args[1:])) }
