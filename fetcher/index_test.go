package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

func encodeTestIndex(t *testing.T, mutate func(h map[string]any, tables []byte) []byte) []byte {
	t.Helper()
	h := map[string]any{
		"format": 1, "key": "rootfs-bash.ext4", "sizeBytes": 3 * 4096, "sha256": strings.Repeat("a", 64),
		"blockBytes": 4096, "packs": []string{strings.Repeat("b", 64)}, "frames": 1, "slots": 2, "blocks": 3,
	}
	var tables bytes.Buffer
	entry := make([]byte, 24)
	binary.LittleEndian.PutUint32(entry[0:], 0)
	binary.LittleEndian.PutUint32(entry[4:], 2)
	binary.LittleEndian.PutUint64(entry[8:], 0)
	binary.LittleEndian.PutUint64(entry[16:], 100)
	tables.Write(entry)
	tables.Write(bytes.Repeat([]byte{1}, 64))
	for _, v := range []uint32{1, 0, 2} {
		binary.Write(&tables, binary.LittleEndian, v)
	}
	tb := tables.Bytes()
	if mutate != nil {
		tb = mutate(h, tb)
	}
	js, _ := json.Marshal(h)
	var raw bytes.Buffer
	raw.Write(magic)
	binary.Write(&raw, binary.LittleEndian, uint32(len(js)))
	raw.Write(js)
	raw.Write(tb)
	enc, _ := zstd.NewWriter(nil)
	return enc.EncodeAll(raw.Bytes(), nil)
}

func TestDecodesAnIndexAndRefusesOutOfRangeOnes(t *testing.T) {
	ix, err := decodeIndex(encodeTestIndex(t, nil))
	if err != nil {
		t.Fatal(err)
	}
	if len(ix.frames) != 1 || ix.frames[0].count != 2 || ix.blockMap[1] != 0 || ix.blockMap[2] != 2 || ix.frameOf(1) != 0 {
		t.Fatalf("decoded %+v", ix)
	}
	bad := map[string]func(h map[string]any, tb []byte) []byte{
		"slot beyond the table": func(h map[string]any, tb []byte) []byte {
			binary.LittleEndian.PutUint32(tb[len(tb)-4:], 9)
			return tb
		},
		"pack beyond the list": func(h map[string]any, tb []byte) []byte { binary.LittleEndian.PutUint32(tb[0:], 5); return tb },
		"hostile key":          func(h map[string]any, tb []byte) []byte { h["key"] = "../../etc/passwd"; return tb },
		"too many blocks":      func(h map[string]any, tb []byte) []byte { h["blocks"] = 4; return tb },
		"cut short":            func(h map[string]any, tb []byte) []byte { return tb[:len(tb)-2] },
	}
	for name, m := range bad {
		if _, err := decodeIndex(encodeTestIndex(t, m)); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
