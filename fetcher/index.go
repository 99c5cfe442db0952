package main

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"regexp"

	"github.com/klauspost/compress/zstd"
)

// The block store's index, as docs/block-store.md defines it.

const (
	blockBytes      = 4096
	frameBlocks     = 256
	digestBytes     = 32
	frameEntryBytes = 24
	maxBlocks       = 1 << 24
	maxHeaderBytes  = 1 << 20
)

var (
	magic     = []byte("RFSBIDX1")
	sha256Hex = regexp.MustCompile(`^[0-9a-f]{64}$`)
	// Only names this tool writes reach a path or a URL.
	storeKey = regexp.MustCompile(`^(vmlinux|rootfs-[a-z0-9][a-z0-9-]{0,31}\.ext4)$`)
)

type frame struct {
	pack   string
	count  int
	offset int64
	length int64
}

type header struct {
	Format     int      `json:"format"`
	Key        string   `json:"key"`
	SizeBytes  int64    `json:"sizeBytes"`
	Sha256     string   `json:"sha256"`
	BlockBytes int      `json:"blockBytes"`
	Packs      []string `json:"packs"`
	Frames     int      `json:"frames"`
	Slots      int      `json:"slots"`
	Blocks     int      `json:"blocks"`
}

type index struct {
	header
	frames    []frame
	firstSlot []int
	digests   []byte
	// Per block of the file: 0 for a zero block, else 1 + slot.
	blockMap []uint32
}

func (ix *index) digest(slot int) []byte { return ix.digests[slot*digestBytes : (slot+1)*digestBytes] }

// frameOf is the frame holding slot (binary search over firstSlot).
func (ix *index) frameOf(slot int) int {
	lo, hi := 0, len(ix.frames)-1
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if ix.firstSlot[mid] <= slot {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo
}

// decodeIndex decompresses and checks an index object; it refuses anything out of range.
func decodeIndex(object []byte) (*index, error) {
	dec, err := zstd.NewReader(nil, zstd.WithDecoderMaxMemory(1<<30))
	if err != nil {
		return nil, err
	}
	defer dec.Close()
	raw, err := dec.DecodeAll(object, nil)
	if err != nil {
		return nil, fmt.Errorf("not a zstd index: %w", err)
	}
	bad := func(format string, a ...any) error {
		return fmt.Errorf("not a valid block index: "+format, a...)
	}
	if len(raw) < 12 || !bytes.Equal(raw[:8], magic) {
		return nil, bad("no RFSBIDX1 magic")
	}
	h := int(binary.LittleEndian.Uint32(raw[8:12]))
	if h > maxHeaderBytes || 12+h > len(raw) {
		return nil, bad("header length %d out of range", h)
	}
	ix := &index{}
	if err := json.Unmarshal(raw[12:12+h], &ix.header); err != nil {
		return nil, bad("header: %v", err)
	}
	hd := ix.header
	if hd.Format != 1 || hd.BlockBytes != blockBytes || !storeKey.MatchString(hd.Key) || !sha256Hex.MatchString(hd.Sha256) {
		return nil, bad("header fields (format, blockBytes, key, sha256)")
	}
	if hd.SizeBytes < 0 || hd.Blocks != int((hd.SizeBytes+blockBytes-1)/blockBytes) || hd.Blocks > maxBlocks {
		return nil, bad("%d blocks for %d bytes", hd.Blocks, hd.SizeBytes)
	}
	if hd.Slots > hd.Blocks || hd.Frames > hd.Slots || hd.Frames < 0 {
		return nil, bad("more slots or frames than blocks")
	}
	for _, p := range hd.Packs {
		if !sha256Hex.MatchString(p) {
			return nil, bad("pack name %q", p)
		}
	}
	tableAt := 12 + h
	digestsAt := tableAt + hd.Frames*frameEntryBytes
	mapAt := digestsAt + hd.Slots*digestBytes
	if len(raw) != mapAt+hd.Blocks*4 {
		return nil, bad("%d bytes, the header implies %d", len(raw), mapAt+hd.Blocks*4)
	}
	slots := 0
	for i := 0; i < hd.Frames; i++ {
		e := raw[tableAt+i*frameEntryBytes:]
		p := int(binary.LittleEndian.Uint32(e[0:4]))
		count := int(binary.LittleEndian.Uint32(e[4:8]))
		offset := binary.LittleEndian.Uint64(e[8:16])
		length := binary.LittleEndian.Uint64(e[16:24])
		if p >= len(hd.Packs) {
			return nil, bad("frame %d names pack %d of %d", i, p, len(hd.Packs))
		}
		if count < 1 || count > frameBlocks || length < 1 || length > 1<<30 || offset > 1<<50 {
			return nil, bad("frame %d: %d blocks at %d (+%d)", i, count, offset, length)
		}
		ix.frames = append(ix.frames, frame{pack: hd.Packs[p], count: count, offset: int64(offset), length: int64(length)})
		ix.firstSlot = append(ix.firstSlot, slots)
		slots += count
	}
	if slots != hd.Slots {
		return nil, bad("the frames hold %d slots, the header says %d", slots, hd.Slots)
	}
	ix.digests = raw[digestsAt:mapAt]
	ix.blockMap = make([]uint32, hd.Blocks)
	for i := range ix.blockMap {
		v := binary.LittleEndian.Uint32(raw[mapAt+i*4:])
		if int(v) > slots {
			return nil, bad("block %d names slot %d of %d", i, int(v)-1, slots)
		}
		ix.blockMap[i] = v
	}
	return ix, nil
}
