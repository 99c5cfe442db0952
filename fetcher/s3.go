package main

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"sort"
	"strings"
	"time"
)

// bucket reaches an S3 bucket by plain HTTP requests, signed with AWS Signature V4 when the
// environment has credentials (AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN).
type bucket struct {
	base   *url.URL
	region string
	key    string
	secret string
	token  string
	client *http.Client
	now    func() time.Time
}

func newBucket(rawURL, region string) (*bucket, error) {
	u, err := url.Parse(strings.TrimRight(rawURL, "/"))
	if err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return nil, fmt.Errorf("--bucket-url %q is not a bucket URL (scheme://host[:port][/bucket], no credentials or query)", rawURL)
	}
	switch u.Scheme {
	case "https":
	case "http":
		// What is fetched is installed as root: plain http only to this machine (tests, a local server).
		ip := net.ParseIP(u.Hostname())
		if u.Hostname() != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, fmt.Errorf("--bucket-url %q: http is allowed for loopback addresses only; use https", rawURL)
		}
	default:
		return nil, fmt.Errorf("--bucket-url %q: expected an https:// URL", rawURL)
	}
	return &bucket{
		base:   u,
		region: region,
		key:    os.Getenv("AWS_ACCESS_KEY_ID"),
		secret: os.Getenv("AWS_SECRET_ACCESS_KEY"),
		token:  os.Getenv("AWS_SESSION_TOKEN"),
		client: &http.Client{Timeout: 10 * time.Minute},
		now:    time.Now,
	}, nil
}

// request builds a GET of key (query parameters sorted, as SigV4 wants them), signed if credentials are set.
func (b *bucket) request(key string, query url.Values, rangeHeader string) (*http.Request, error) {
	u := *b.base
	u.Path = b.base.Path + "/" + key
	u.RawPath = ""
	u.RawQuery = canonicalQuery(query)
	req, err := http.NewRequest(http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	if rangeHeader != "" {
		req.Header.Set("Range", rangeHeader)
	}
	if b.key != "" {
		b.sign(req, b.now().UTC())
	}
	return req, nil
}

func uriEncode(s string, slash bool) string {
	var sb strings.Builder
	for _, c := range []byte(s) {
		switch {
		case c >= 'A' && c <= 'Z', c >= 'a' && c <= 'z', c >= '0' && c <= '9', c == '-', c == '_', c == '.', c == '~':
			sb.WriteByte(c)
		case c == '/' && !slash:
			sb.WriteByte(c)
		default:
			fmt.Fprintf(&sb, "%%%02X", c)
		}
	}
	return sb.String()
}

func canonicalQuery(q url.Values) string {
	keys := make([]string, 0, len(q))
	for k := range q {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := []string{}
	for _, k := range keys {
		vals := append([]string(nil), q[k]...)
		sort.Strings(vals)
		for _, v := range vals {
			parts = append(parts, uriEncode(k, true)+"="+uriEncode(v, true))
		}
	}
	return strings.Join(parts, "&")
}

func hmacSHA256(key []byte, data string) []byte {
	h := hmac.New(sha256.New, key)
	h.Write([]byte(data))
	return h.Sum(nil)
}

// sign adds AWS Signature V4 headers; the payload is not hashed (a GET has none).
func (b *bucket) sign(req *http.Request, t time.Time) { b.signWith(req, t, "UNSIGNED-PAYLOAD") }

func (b *bucket) signWith(req *http.Request, t time.Time, payloadHash string) {
	amzDate := t.Format("20060102T150405Z")
	day := t.Format("20060102")
	req.Header.Del("Authorization")
	req.Header.Set("x-amz-date", amzDate)
	req.Header.Set("x-amz-content-sha256", payloadHash)
	if b.token != "" {
		req.Header.Set("x-amz-security-token", b.token)
	}
	names := []string{"host"}
	for name := range req.Header {
		names = append(names, strings.ToLower(name))
	}
	sort.Strings(names)
	var headers strings.Builder
	for _, n := range names {
		v := req.Host
		if n != "host" {
			v = strings.TrimSpace(req.Header.Get(n))
		} else if v == "" {
			v = req.URL.Host
		}
		headers.WriteString(n + ":" + v + "\n")
	}
	signed := strings.Join(names, ";")
	canonical := strings.Join([]string{
		req.Method,
		uriEncode(req.URL.Path, false),
		req.URL.RawQuery,
		headers.String(),
		signed,
		req.Header.Get("x-amz-content-sha256"),
	}, "\n")
	sum := sha256.Sum256([]byte(canonical))
	scope := day + "/" + b.region + "/s3/aws4_request"
	toSign := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	k := hmacSHA256([]byte("AWS4"+b.secret), day)
	k = hmacSHA256(k, b.region)
	k = hmacSHA256(k, "s3")
	k = hmacSHA256(k, "aws4_request")
	sig := hex.EncodeToString(hmacSHA256(k, toSign))
	req.Header.Set("Authorization", "AWS4-HMAC-SHA256 Credential="+b.key+"/"+scope+", SignedHeaders="+signed+", Signature="+sig)
}

// httpError is an answer other than the one asked for: its status and S3's reason.
type httpError struct {
	Status int
	Reason string
}

func (e *httpError) Error() string {
	if e.Reason != "" {
		return fmt.Sprintf("HTTP %d (%s)", e.Status, e.Reason)
	}
	return fmt.Sprintf("HTTP %d", e.Status)
}

func transient(err error) bool {
	if he, ok := err.(*httpError); ok {
		return he.Status >= 500 || he.Status == 429
	}
	return err != nil
}

// open GETs key (a byte range when rng is set), retrying what may pass (5xx, a dropped connection).
func (b *bucket) open(key string, query url.Values, rng string) (io.ReadCloser, error) {
	var last error
	for attempt := 0; attempt < 4; attempt++ {
		if attempt > 0 {
			time.Sleep(time.Duration(500<<attempt) * time.Millisecond)
		}
		req, err := b.request(key, query, rng)
		if err != nil {
			return nil, err
		}
		res, err := b.client.Do(req)
		if err != nil {
			last = err
			continue
		}
		want := http.StatusOK
		if rng != "" {
			want = http.StatusPartialContent
		}
		if res.StatusCode == want {
			return res.Body, nil
		}
		body, _ := io.ReadAll(io.LimitReader(res.Body, 4096))
		res.Body.Close()
		last = &httpError{Status: res.StatusCode, Reason: s3Reason(body)}
		if !transient(last) {
			break
		}
	}
	return nil, last
}

// get reads a whole object of at most max bytes.
func (b *bucket) get(key string, max int64) ([]byte, error) {
	body, err := b.open(key, nil, "")
	if err != nil {
		return nil, err
	}
	defer body.Close()
	data, err := io.ReadAll(io.LimitReader(body, max+1))
	if err != nil {
		return nil, err
	}
	if int64(len(data)) > max {
		return nil, fmt.Errorf("%s has more than %d bytes", key, max)
	}
	return data, nil
}

func s3Reason(body []byte) string {
	var e struct {
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	}
	if xml.Unmarshal(body, &e) != nil || e.Code == "" {
		return ""
	}
	return e.Code + ": " + e.Message
}

// list returns every key under prefix (ListObjectsV2, page after page).
func (b *bucket) list(prefix string) ([]string, error) {
	var keys []string
	token := ""
	for {
		q := url.Values{"list-type": {"2"}, "prefix": {prefix}}
		if token != "" {
			q.Set("continuation-token", token)
		}
		body, err := b.open("", q, "")
		if err != nil {
			return nil, err
		}
		var page struct {
			Contents []struct {
				Key string `xml:"Key"`
			} `xml:"Contents"`
			IsTruncated           bool   `xml:"IsTruncated"`
			NextContinuationToken string `xml:"NextContinuationToken"`
		}
		err = xml.NewDecoder(io.LimitReader(body, 64<<20)).Decode(&page)
		body.Close()
		if err != nil {
			return nil, fmt.Errorf("listing %s: %w", prefix, err)
		}
		for _, c := range page.Contents {
			keys = append(keys, c.Key)
		}
		if !page.IsTruncated || page.NextContinuationToken == "" {
			return keys, nil
		}
		token = page.NextContinuationToken
	}
}
