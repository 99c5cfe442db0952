package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/klauspost/compress/zstd"
)

// syncer brings the block store's current version of each file to this host, as
// docs/block-store.md ("Reading") and the TypeScript store do, with the same files on disk.
type syncer struct {
	b           *bucket
	workspace   string
	concurrency int
	pins        map[string]string
	log         func(format string, a ...any)
	decoder     *zstd.Decoder
}

type head struct {
	Format   int    `json:"format"`
	Key      string `json:"key"`
	Current  string `json:"current"`
	Versions []struct {
		Index  string `json:"index"`
		Sha256 string `json:"sha256"`
	} `json:"versions"`
}

type record struct {
	Format    int    `json:"format"`
	Index     string `json:"index"`
	SizeBytes int64  `json:"sizeBytes"`
	MtimeNs   string `json:"mtimeNs"`
	Ino       string `json:"ino"`
}

func (s *syncer) destOf(key string) string {
	if key == "vmlinux" {
		return filepath.Join(s.workspace, key)
	}
	return filepath.Join(s.workspace, "images", key)
}

func beside(file, suffix string) string {
	return filepath.Join(filepath.Dir(file), "."+filepath.Base(file)+suffix)
}

func statIDs(file string) (size int64, mtimeNs, ino string, err error) {
	var st syscall.Stat_t
	if err = syscall.Stat(file, &st); err != nil {
		return
	}
	return st.Size, strconv.FormatInt(st.Mtim.Sec*1e9+st.Mtim.Nsec, 10), strconv.FormatUint(st.Ino, 10), nil
}

// readRecord is the record of file when it still describes it (same size, mtime and inode).
func readRecord(file string) *record {
	data, err := os.ReadFile(beside(file, ".blocks.json"))
	if err != nil {
		return nil
	}
	var r record
	if json.Unmarshal(data, &r) != nil || r.Format != 1 || !sha256Hex.MatchString(r.Index) {
		return nil
	}
	size, mtime, ino, err := statIDs(file)
	if err != nil || size != r.SizeBytes || mtime != r.MtimeNs || ino != r.Ino {
		return nil
	}
	return &r
}

func writeRecord(file, index string) error {
	size, mtime, ino, err := statIDs(file)
	if err != nil {
		return err
	}
	data, _ := json.Marshal(record{Format: 1, Index: index, SizeBytes: size, MtimeNs: mtime, Ino: ino})
	target := beside(file, ".blocks.json")
	tmp := fmt.Sprintf("%s.%d.tmp", target, os.Getpid())
	if err := os.WriteFile(tmp, append(data, '\n'), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, target)
}

// loadIndex reads an index from the host's cache or the bucket, checked against its name either way.
func (s *syncer) loadIndex(sha string, fetch bool) (*index, error) {
	cache := filepath.Join(s.workspace, ".blocks", "indexes", sha+".index")
	data, err := os.ReadFile(cache)
	if err == nil {
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != sha {
			data = nil
		}
	} else {
		data = nil
	}
	if data == nil {
		if !fetch {
			return nil, errors.New("not cached")
		}
		key := "blocks/indexes/" + sha + ".index"
		if data, err = s.b.get(key, 256<<20); err != nil {
			return nil, fmt.Errorf("cannot read %s: %w", key, err)
		}
		if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != sha {
			return nil, fmt.Errorf("%s does not match its name", key)
		}
		if err := os.MkdirAll(filepath.Dir(cache), 0o755); err == nil {
			tmp := fmt.Sprintf("%s.%d.tmp", cache, os.Getpid())
			if os.WriteFile(tmp, data, 0o644) == nil {
				_ = os.Rename(tmp, cache)
			}
		}
	}
	return decodeIndex(data)
}

// source is a file on this host whose blocks are known (its record names a cached index).
type source struct {
	file string
	ix   *index
}

func (s *syncer) recordSources() []source {
	files := []string{filepath.Join(s.workspace, "vmlinux")}
	images, _ := filepath.Glob(filepath.Join(s.workspace, "images", "*.ext4"))
	files = append(files, images...)
	kept, _ := filepath.Glob(filepath.Join(s.workspace, ".blocks", "versions", "*", "*"))
	for _, k := range kept {
		if sha256Hex.MatchString(filepath.Base(k)) {
			files = append(files, k)
		}
	}
	var out []source
	for _, f := range files {
		r := readRecord(f)
		if r == nil {
			continue
		}
		if ix, err := s.loadIndex(r.Index, false); err == nil {
			out = append(out, source{f, ix})
		}
	}
	return out
}

type job struct {
	key, dest, sha string
	ix             *index
	targets        map[int][]int  // slot -> blocks of the file still to write
	copies         map[int][2]any // slot -> (file, block there)
	frames         map[int]bool   // frames to fetch
	inPlace, local int

	// While it is fetched (fetch.go):
	partial string
	out     *os.File
	pending int // its frames not yet in
	err     error
	started time.Time
}

// scanPositions reads file block by block where the job wants data and calls match for each block whose digest is its slot's.
func scanPositions(file string, j *job, match func(slot, block int, content []byte)) {
	f, err := os.Open(file)
	if err != nil {
		return
	}
	defer f.Close()
	buf := make([]byte, 8<<20)
	zero := make([]byte, blockBytes)
	for pos := int64(0); pos < j.ix.SizeBytes; pos += int64(len(buf)) {
		n, _ := f.ReadAt(buf, pos)
		if n <= 0 {
			return
		}
		for at := 0; at < n; at += blockBytes {
			block := int((pos + int64(at)) / blockBytes)
			if block >= len(j.ix.blockMap) || j.ix.blockMap[block] == 0 {
				continue
			}
			content := make([]byte, blockBytes)
			copy(content, buf[at:min(at+blockBytes, n)])
			if bytes.Equal(content, zero) {
				continue
			}
			slot := int(j.ix.blockMap[block]) - 1
			if sum := sha256.Sum256(content); bytes.Equal(sum[:], j.ix.digest(slot)) {
				match(slot, block, content)
			}
		}
	}
}

func dropTarget(j *job, slot, block int) {
	list := j.targets[slot]
	for i, b := range list {
		if b == block {
			list = append(list[:i], list[i+1:]...)
			break
		}
	}
	if len(list) == 0 {
		delete(j.targets, slot)
	} else {
		j.targets[slot] = list
	}
}

func partialOf(dest, sha string) string { return beside(dest, "."+sha[:12]+".blocks-partial") }

// plan decides, for one key, what is already here and what must be fetched.
func (s *syncer) plan(key, sha string, ix *index) *job {
	dest := s.destOf(key)
	j := &job{key: key, dest: dest, sha: sha, ix: ix, targets: map[int][]int{}, copies: map[int][2]any{}, frames: map[int]bool{}}
	for i, v := range ix.blockMap {
		if v != 0 {
			j.targets[int(v)-1] = append(j.targets[int(v)-1], i)
		}
	}
	if _, err := os.Stat(partialOf(dest, sha)); err == nil {
		scanPositions(partialOf(dest, sha), j, func(slot, block int, _ []byte) {
			dropTarget(j, slot, block)
			j.inPlace++
		})
	}
	wanted := map[string]int{}
	for slot := range j.targets {
		wanted[string(ix.digest(slot))] = slot
	}
	for _, src := range s.recordSources() {
		for k, v := range src.ix.blockMap {
			if v == 0 || len(wanted) == 0 {
				continue
			}
			d := string(src.ix.digest(int(v) - 1))
			if slot, ok := wanted[d]; ok {
				j.copies[slot] = [2]any{src.file, k}
				delete(wanted, d)
			}
		}
	}
	if _, err := os.Stat(dest); err == nil && readRecord(dest) == nil {
		scanPositions(dest, j, func(slot, block int, _ []byte) {
			if _, ok := j.copies[slot]; !ok {
				j.copies[slot] = [2]any{dest, block}
			}
		})
	}
	for slot, blocks := range j.targets {
		if _, ok := j.copies[slot]; ok {
			j.local += len(blocks)
		} else {
			j.frames[ix.frameOf(slot)] = true
		}
	}
	return j
}

func (j *job) fetchBytes() int64 {
	var n int64
	for f := range j.frames {
		n += j.ix.frames[f].length
	}
	return n
}

// writeSlot writes a checked block to every block of the file that holds it.
func (j *job) writeSlot(out *os.File, slot int, content []byte) error {
	for _, b := range j.targets[slot] {
		if _, err := out.WriteAt(content, int64(b)*blockBytes); err != nil {
			return err
		}
	}
	return nil
}

// copyLocal copies the blocks found on this host, each checked; one that fails is fetched instead.
func (j *job) copyLocal(out *os.File) error {
	open := map[string]*os.File{}
	defer func() {
		for _, f := range open {
			f.Close()
		}
	}()
	buf := make([]byte, blockBytes)
	for slot, src := range j.copies {
		file, block := src[0].(string), src[1].(int)
		f := open[file]
		if f == nil {
			var err error
			if f, err = os.Open(file); err != nil {
				j.frames[j.ix.frameOf(slot)] = true
				delete(j.copies, slot)
				continue
			}
			open[file] = f
		}
		clear(buf)
		_, _ = f.ReadAt(buf, int64(block)*blockBytes)
		if sum := sha256.Sum256(buf); !bytes.Equal(sum[:], j.ix.digest(slot)) {
			j.frames[j.ix.frameOf(slot)] = true
			delete(j.copies, slot)
			continue
		}
		if err := j.writeSlot(out, slot, buf); err != nil {
			return err
		}
	}
	return nil
}

// fileSha256 is the sha256 of a file that may be sparse: its holes are hashed as the zeros they
// read as, without reading them.
func fileSha256(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return "", err
	}
	h := sha256.New()
	buf := make([]byte, 8<<20)
	zeros := make([]byte, 1<<20)
	size := st.Size()
	for pos := int64(0); pos < size; {
		data, err := f.Seek(pos, seekData)
		if err != nil {
			// ENXIO: nothing but a hole up to the end. Another error: a file system without
			// SEEK_DATA; read everything.
			if errors.Is(err, syscall.ENXIO) {
				data = size
			} else {
				data = pos
			}
		}
		for ; pos < data; pos += int64(len(zeros)) {
			h.Write(zeros[:min(int64(len(zeros)), data-pos)])
		}
		pos = data
		if pos >= size {
			break
		}
		hole, err := f.Seek(pos, seekHole)
		if err != nil {
			hole = size
		}
		for pos < hole {
			n, err := f.ReadAt(buf[:min(int64(len(buf)), hole-pos)], pos)
			if n == 0 && err != nil {
				return "", err
			}
			h.Write(buf[:n])
			pos += int64(n)
		}
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Whence values of lseek(2) for sparse files (Linux).
const (
	seekData = 3
	seekHole = 4
)

// install puts file at dest; the file it replaces, when a record names its version, is kept aside (the newest one).
func (s *syncer) install(file, dest, sha string) error {
	if old := readRecord(dest); old != nil && old.Index != sha {
		dir := filepath.Join(s.workspace, ".blocks", "versions", filepath.Base(dest))
		if err := os.MkdirAll(dir, 0o755); err == nil {
			entries, _ := os.ReadDir(dir)
			for _, e := range entries {
				os.Remove(filepath.Join(dir, e.Name()))
			}
			kept := filepath.Join(dir, old.Index)
			if os.Link(dest, kept) == nil {
				_ = writeRecord(kept, old.Index)
			}
		}
	}
	if err := os.Rename(file, dest); err != nil {
		return err
	}
	return writeRecord(dest, sha)
}

// keys are the files the block store holds: every head's, unless given.
func (s *syncer) keys(given []string) ([]string, error) {
	if len(given) > 0 {
		return given, nil
	}
	listed, err := s.b.list("blocks/heads/")
	if err != nil {
		return nil, fmt.Errorf("cannot list the block store's heads: %w", err)
	}
	var keys []string
	for _, k := range listed {
		name := strings.TrimSuffix(strings.TrimPrefix(k, "blocks/heads/"), ".json")
		if strings.HasSuffix(k, ".json") && storeKey.MatchString(name) {
			keys = append(keys, name)
		}
	}
	sort.Strings(keys)
	return keys, nil
}

// link points <workspace>/rootfs.ext4 at the default image, replacing only a symlink.
func (s *syncer) link(language string) {
	target := filepath.Join("images", "rootfs-"+language+".ext4")
	if _, err := os.Stat(filepath.Join(s.workspace, target)); err != nil {
		return
	}
	link := filepath.Join(s.workspace, "rootfs.ext4")
	if st, err := os.Lstat(link); err == nil && st.Mode()&os.ModeSymlink == 0 {
		s.log("%s is a file, not a link: left as it is", link)
		return
	}
	tmp := fmt.Sprintf("%s.%d.tmp", link, os.Getpid())
	os.Remove(tmp)
	if os.Symlink(target, tmp) == nil && os.Rename(tmp, link) == nil {
		s.log("%s -> %s", link, target)
	}
}
