package main

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"
)

// The example of AWS's Signature V4 documentation for S3 ("GET Object", with a Range header):
// the signature must come out exactly as printed there.
func TestSignatureV4MatchesAWSExample(t *testing.T) {
	b := &bucket{
		base:   &url.URL{Scheme: "https", Host: "examplebucket.s3.amazonaws.com"},
		region: "us-east-1",
		key:    "AKIAIOSFODNN7EXAMPLE",
		secret: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY",
	}
	req, _ := http.NewRequest(http.MethodGet, "https://examplebucket.s3.amazonaws.com/test.txt", nil)
	req.Header.Set("Range", "bytes=0-9")
	// The example signs the empty payload's hash; the tool's requests say UNSIGNED-PAYLOAD instead.
	b.signWith(req, time.Date(2013, 5, 24, 0, 0, 0, 0, time.UTC), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855")
	got := req.Header.Get("Authorization")
	want := "AWS4-HMAC-SHA256 Credential=AKIAIOSFODNN7EXAMPLE/20130524/us-east-1/s3/aws4_request, " +
		"SignedHeaders=host;range;x-amz-content-sha256;x-amz-date, " +
		"Signature=f0e8bdb87c964420e857bd35b5d6ed310bd44f0170aba48dd91039c6036bdb41"
	if got != want {
		t.Fatalf("Authorization:\n got %s\nwant %s", got, want)
	}
}

func TestRefusesPlainHTTPBeyondLoopbackAndCredentialsInURL(t *testing.T) {
	for _, u := range []string{"http://example.com/b", "https://user:pw@example.com/b", "ftp://127.0.0.1/b", "https://h/b?x=1"} {
		if _, err := newBucket(u, "us-east-1"); err == nil {
			t.Errorf("%s was accepted", u)
		}
	}
	for _, u := range []string{"http://127.0.0.1:9000/b", "https://b.s3.us-east-1.amazonaws.com"} {
		if _, err := newBucket(u, "us-east-1"); err != nil {
			t.Errorf("%s was refused: %v", u, err)
		}
	}
}

func TestQueryIsSortedAndEncodedForSigning(t *testing.T) {
	q := url.Values{"prefix": {"blocks/heads/"}, "list-type": {"2"}, "continuation-token": {"a+b/c="}}
	if got := canonicalQuery(q); got != "continuation-token=a%2Bb%2Fc%3D&list-type=2&prefix=blocks%2Fheads%2F" {
		t.Fatal(got)
	}
	if !strings.Contains(uriEncode("/b/blocks/heads/x.json", false), "/blocks/heads/") {
		t.Fatal("slashes of a path stay")
	}
}
