package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
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

type span struct {
	pack       string
	start, end int64
	frames     []int
}

// spans are the frames to fetch as byte ranges of their packs; neighbours share one request.
func (j *job) spans() []span {
	ids := make([]int, 0, len(j.frames))
	for f := range j.frames {
		ids = append(ids, f)
	}
	fr := j.ix.frames
	sort.Slice(ids, func(a, b int) bool {
		if fr[ids[a]].pack != fr[ids[b]].pack {
			return fr[ids[a]].pack < fr[ids[b]].pack
		}
		return fr[ids[a]].offset < fr[ids[b]].offset
	})
	var out []span
	for _, f := range ids {
		x := fr[f]
		if n := len(out); n > 0 && out[n-1].pack == x.pack && out[n-1].end == x.offset && out[n-1].end-out[n-1].start+x.length <= 64<<20 {
			out[n-1].end += x.length
			out[n-1].frames = append(out[n-1].frames, f)
		} else {
			out = append(out, span{x.pack, x.offset, x.offset + x.length, []int{f}})
		}
	}
	return out
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

// fetchSpan fetches one range, decompresses each frame, checks and writes the blocks the job wants.
func (s *syncer) fetchSpan(j *job, out *os.File, sp span) (int64, error) {
	key := "blocks/packs/" + sp.pack + ".pack"
	body, err := s.b.open(key, nil, fmt.Sprintf("bytes=%d-%d", sp.start, sp.end-1))
	if err != nil {
		return 0, fmt.Errorf("cannot fetch %s bytes %d-%d: %w", key, sp.start, sp.end-1, err)
	}
	data, err := io.ReadAll(io.LimitReader(body, sp.end-sp.start+1))
	body.Close()
	if err != nil {
		return 0, fmt.Errorf("cannot fetch %s bytes %d-%d: %w", key, sp.start, sp.end-1, err)
	}
	if int64(len(data)) != sp.end-sp.start {
		return int64(len(data)), fmt.Errorf("%s bytes %d-%d: %d bytes came", key, sp.start, sp.end-1, len(data))
	}
	for _, f := range sp.frames {
		fr := j.ix.frames[f]
		raw, err := s.decoder.DecodeAll(data[fr.offset-sp.start:fr.offset-sp.start+fr.length], make([]byte, 0, fr.count*blockBytes))
		if err != nil || len(raw) != fr.count*blockBytes {
			return int64(len(data)), fmt.Errorf("%s: the frame at byte %d does not decompress to its %d blocks (%v)", key, fr.offset, fr.count, err)
		}
		for i := 0; i < fr.count; i++ {
			slot := j.ix.firstSlot[f] + i
			if _, want := j.targets[slot]; !want {
				continue
			}
			if _, copied := j.copies[slot]; copied {
				continue
			}
			block := raw[i*blockBytes : (i+1)*blockBytes]
			if sum := sha256.Sum256(block); !bytes.Equal(sum[:], j.ix.digest(slot)) {
				return int64(len(data)), fmt.Errorf("%s: a block of the frame at byte %d does not match its digest", key, fr.offset)
			}
			if err := j.writeSlot(out, slot, block); err != nil {
				return int64(len(data)), err
			}
		}
	}
	return int64(len(data)), nil
}

func fileSha256(file string) (string, error) {
	f, err := os.Open(file)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.CopyBuffer(h, f, make([]byte, 8<<20)); err != nil {
		return "", err
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

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

// syncKey brings one file up to date; it returns the bytes fetched.
func (s *syncer) syncKey(key string) (int64, error) {
	started := time.Now()
	data, err := s.b.get("blocks/heads/"+key+".json", 1<<20)
	if err != nil {
		return 0, fmt.Errorf("cannot read the head of %s: %w", key, err)
	}
	var h head
	if err := json.Unmarshal(data, &h); err != nil || h.Format != 1 || h.Key != key || !sha256Hex.MatchString(h.Current) {
		return 0, fmt.Errorf("blocks/heads/%s.json is not a valid head", key)
	}
	dest := s.destOf(key)
	if r := readRecord(dest); r != nil && r.Index == h.Current {
		s.log("%s is up to date (version %s)", key, h.Current[:12])
		return 0, nil
	}
	ix, err := s.loadIndex(h.Current, true)
	if err != nil {
		return 0, err
	}
	if ix.Key != key {
		return 0, fmt.Errorf("the index of %s describes %s", key, ix.Key)
	}
	if pin, ok := s.pins[key]; ok && pin != ix.Sha256 {
		return 0, fmt.Errorf("%s changed since this was pinned (the store's current version has sha256 %s, the pin %s); not installed", key, ix.Sha256, pin)
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return 0, err
	}
	kept := filepath.Join(s.workspace, ".blocks", "versions", filepath.Base(dest), h.Current)
	if r := readRecord(kept); r != nil && r.Index == h.Current {
		tmp := fmt.Sprintf("%s.%d.rollback", dest, os.Getpid())
		if err := os.Rename(kept, tmp); err == nil {
			os.Remove(beside(kept, ".blocks.json"))
			s.log("%s: version %s was kept here: nothing to fetch", key, h.Current[:12])
			return 0, s.install(tmp, dest, h.Current)
		}
	}
	j := s.plan(key, h.Current, ix)
	s.log("%s: version %s: fetch %d bytes, %d block(s) from local files, %d already in place", key, h.Current[:12], j.fetchBytes(), j.local, j.inPlace)
	partial := partialOf(dest, h.Current)
	out, err := os.OpenFile(partial, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		return 0, err
	}
	defer out.Close()
	if err := out.Truncate(ix.SizeBytes); err != nil {
		return 0, err
	}
	if err := j.copyLocal(out); err != nil {
		return 0, err
	}
	var fetched int64
	var mu sync.Mutex
	var firstErr error
	sem := make(chan struct{}, s.concurrency)
	var wg sync.WaitGroup
	for _, sp := range j.spans() {
		wg.Add(1)
		sem <- struct{}{}
		go func(sp span) {
			defer wg.Done()
			defer func() { <-sem }()
			n, err := s.fetchSpan(j, out, sp)
			if err != nil {
				// Once more: a transfer may have been damaged; a damaged pack fails again.
				var n2 int64
				n2, err = s.fetchSpan(j, out, sp)
				n += n2
			}
			mu.Lock()
			fetched += n
			if err != nil && firstErr == nil {
				firstErr = err
			}
			mu.Unlock()
		}(sp)
	}
	wg.Wait()
	if firstErr != nil {
		return fetched, firstErr
	}
	if err := out.Truncate(ix.SizeBytes); err != nil {
		return fetched, err
	}
	if err := out.Sync(); err != nil {
		return fetched, err
	}
	sum, err := fileSha256(partial)
	if err != nil {
		return fetched, err
	}
	if sum != ix.Sha256 {
		os.Remove(partial)
		return fetched, fmt.Errorf("%s: the assembled file has sha256 %s, its index says %s; not installed", key, sum, ix.Sha256)
	}
	if err := s.install(partial, dest, h.Current); err != nil {
		return fetched, err
	}
	s.log("%s: installed version %s (%d bytes fetched, %.1f s)", key, h.Current[:12], fetched, time.Since(started).Seconds())
	return fetched, nil
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
