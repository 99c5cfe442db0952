package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"os"
	"path/filepath"
	"testing"
)

// A sparse file hashes as the bytes it reads as, whatever its holes: leading, inner, trailing, all.
func TestFileSha256OfSparseFiles(t *testing.T) {
	dir := t.TempDir()
	data := bytes.Repeat([]byte("rootfs"), 2000)
	cases := map[string]func(f *os.File){
		"holes around data": func(f *os.File) {
			f.WriteAt(data, 3<<20)
			f.WriteAt(data, 9<<20+123)
			f.Truncate(16 << 20)
		},
		"data at both ends": func(f *os.File) {
			f.WriteAt(data, 0)
			f.Truncate(5 << 20)
			f.WriteAt(data, 5<<20)
		},
		"one hole": func(f *os.File) { f.Truncate(3<<20 + 5) },
		"no holes": func(f *os.File) { f.Write(data) },
		"empty":    func(f *os.File) {},
	}
	for name, make := range cases {
		file := filepath.Join(dir, name)
		f, err := os.Create(file)
		if err != nil {
			t.Fatal(err)
		}
		make(f)
		f.Close()
		all, _ := os.ReadFile(file)
		want := sha256.Sum256(all)
		got, err := fileSha256(file)
		if err != nil || got != hex.EncodeToString(want[:]) {
			t.Errorf("%s: fileSha256 = %s, %v; want %x", name, got, err, want)
		}
	}
}

// Blocks that lie side by side in the frame and in the file go in one write; the others alone.
func TestWritePlaces(t *testing.T) {
	frame := make([]byte, 4*blockBytes)
	for i := range 4 {
		frame[i*blockBytes] = byte('a' + i)
	}
	file := filepath.Join(t.TempDir(), "out")
	out, err := os.Create(file)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	// Blocks 0-1 at file blocks 5-6 (one run), block 3 at 7 (not after block 1 in the frame),
	// block 2 at 0 and again at 9 (a block used twice).
	places := []place{{7 * blockBytes, 3}, {5 * blockBytes, 0}, {9 * blockBytes, 2}, {6 * blockBytes, 1}, {0, 2}}
	if err := writePlaces(out, frame, places); err != nil {
		t.Fatal(err)
	}
	got, _ := os.ReadFile(file)
	want := map[int]byte{0: 'c', 5: 'a', 6: 'b', 7: 'd', 9: 'c'}
	if len(got) != 10*blockBytes {
		t.Fatalf("%d bytes written, want %d", len(got), 10*blockBytes)
	}
	for b := range 10 {
		if got[b*blockBytes] != want[b] {
			t.Errorf("block %d starts with %q, want %q", b, got[b*blockBytes], want[b])
		}
	}
}
