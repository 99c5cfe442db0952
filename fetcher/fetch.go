package main

import (
	"bytes"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"sync"
	"time"
)

// How the files of one run are brought in together (as the TypeScript store's syncMany does): each
// file's local blocks are copied first; then every frame any file still lacks is fetched once, by
// range, a few ranges at once, and its blocks written to every file that wants them; a file is
// checked whole and installed as soon as its last frame is in, while the others go on.

// use is one file's claim on a frame: the frame's number in that file's index.
type use struct {
	j     *job
	frame int
}

// shared is a frame of a pack, wanted by one or more files (frames are the same bytes whichever
// index names them).
type shared struct {
	pack           string
	offset, length int64
	count          int
	uses           []use
	// rank is the place, in fetch order, of the first file that wants the frame.
	rank int
}

// frameID names a frame by where its bytes are, whichever index lists it.
type frameID struct {
	pack   string
	offset int64
}

type span struct {
	pack       string
	start, end int64
	frames     []*shared
}

// spans are the frames to fetch, as byte ranges of their packs, file after file in rank order:
// neighbours share one request.
func spans(frames map[frameID]*shared) []span {
	list := make([]*shared, 0, len(frames))
	for _, f := range frames {
		list = append(list, f)
	}
	sort.Slice(list, func(a, b int) bool {
		if list[a].rank != list[b].rank {
			return list[a].rank < list[b].rank
		}
		if list[a].pack != list[b].pack {
			return list[a].pack < list[b].pack
		}
		return list[a].offset < list[b].offset
	})
	var out []span
	for _, f := range list {
		if n := len(out); n > 0 && out[n-1].pack == f.pack && out[n-1].end == f.offset && out[n-1].end-out[n-1].start+f.length <= 64<<20 {
			out[n-1].end += f.length
			out[n-1].frames = append(out[n-1].frames, f)
		} else {
			out = append(out, span{f.pack, f.offset, f.offset + f.length, []*shared{f}})
		}
	}
	return out
}

// buffers are one fetching goroutine's, reused from range to range: a range as it came, and a
// frame decompressed.
type buffers struct{ data, raw []byte }

// fetchSpan fetches one range, decompresses each frame once, and writes every block some file
// wants, each checked against that file's index first. Nothing is written unless the frame checks out.
func (s *syncer) fetchSpan(sp span, buf *buffers) (int64, error) {
	key := "blocks/packs/" + sp.pack + ".pack"
	body, err := s.b.open(key, nil, fmt.Sprintf("bytes=%d-%d", sp.start, sp.end-1))
	if err != nil {
		return 0, fmt.Errorf("cannot fetch %s bytes %d-%d: %w", key, sp.start, sp.end-1, err)
	}
	size := int(sp.end - sp.start)
	if cap(buf.data) < size {
		buf.data = make([]byte, size)
	}
	data := buf.data[:size]
	n, err := io.ReadFull(body, data)
	if err == nil {
		// One byte more would be a range the server did not keep to.
		var extra [1]byte
		if m, _ := body.Read(extra[:]); m > 0 {
			n, err = n+m, errors.New("more bytes than asked for")
		}
	}
	body.Close()
	if err == io.ErrUnexpectedEOF || err == io.EOF {
		return int64(n), fmt.Errorf("%s bytes %d-%d: %d bytes came", key, sp.start, sp.end-1, n)
	}
	if err != nil {
		return int64(n), fmt.Errorf("cannot fetch %s bytes %d-%d: %w", key, sp.start, sp.end-1, err)
	}
	raw := buf.raw
	defer func() { buf.raw = raw }()
	for _, f := range sp.frames {
		raw, err = s.decoder.DecodeAll(data[f.offset-sp.start:f.offset-sp.start+f.length], raw[:0])
		if err != nil || len(raw) != f.count*blockBytes {
			return int64(n), fmt.Errorf("%s: the frame at byte %d does not decompress to its %d blocks (%v)", key, f.offset, f.count, err)
		}
		sums, hashed := make([][32]byte, f.count), make([]bool, f.count)
		for _, u := range f.uses {
			// The places in this file of the blocks it takes from the frame, checked first.
			var places []place
			for i := 0; i < f.count; i++ {
				slot := u.j.ix.firstSlot[u.frame] + i
				if _, want := u.j.targets[slot]; !want {
					continue
				}
				if _, copied := u.j.copies[slot]; copied {
					continue
				}
				// Hashed once, checked against each file's own index.
				if !hashed[i] {
					sums[i], hashed[i] = sha256.Sum256(raw[i*blockBytes:(i+1)*blockBytes]), true
				}
				if !bytes.Equal(sums[i][:], u.j.ix.digest(slot)) {
					return int64(n), fmt.Errorf("%s: a block of the frame at byte %d does not match its digest", key, f.offset)
				}
				for _, b := range u.j.targets[slot] {
					places = append(places, place{int64(b) * blockBytes, i})
				}
			}
			if err := writePlaces(u.j.out, raw, places); err != nil {
				return int64(n), err
			}
		}
	}
	return int64(n), nil
}

// place is where a block of a decompressed frame goes in a file.
type place struct {
	pos   int64
	block int
}

// writePlaces writes the blocks of frame to their places, one write per run of blocks that lie
// side by side both in the frame and in the file (most of them: a frame holds a file's new blocks
// in the order they came).
func writePlaces(out *os.File, frame []byte, places []place) error {
	sort.Slice(places, func(a, b int) bool { return places[a].pos < places[b].pos })
	for i := 0; i < len(places); {
		n := 1
		for i+n < len(places) && places[i+n].pos == places[i].pos+int64(n)*blockBytes && places[i+n].block == places[i].block+n {
			n++
		}
		from := places[i].block * blockBytes
		if _, err := out.WriteAt(frame[from:from+n*blockBytes], places[i].pos); err != nil {
			return err
		}
		i += n
	}
	return nil
}

// prepare decides what one key needs. It returns nil when nothing is left to fetch: the file is
// up to date, or a version kept here was put back, or an error says why not.
func (s *syncer) prepare(key string) (*job, error) {
	data, err := s.b.get("blocks/heads/"+key+".json", 1<<20)
	if err != nil {
		return nil, fmt.Errorf("cannot read the head of %s: %w", key, err)
	}
	var h head
	if err := json.Unmarshal(data, &h); err != nil || h.Format != 1 || h.Key != key || !sha256Hex.MatchString(h.Current) {
		return nil, fmt.Errorf("blocks/heads/%s.json is not a valid head", key)
	}
	dest := s.destOf(key)
	if r := readRecord(dest); r != nil && r.Index == h.Current {
		s.log("%s is up to date (version %s)", key, h.Current[:12])
		return nil, nil
	}
	ix, err := s.loadIndex(h.Current, true)
	if err != nil {
		return nil, err
	}
	if ix.Key != key {
		return nil, fmt.Errorf("the index of %s describes %s", key, ix.Key)
	}
	if pin, ok := s.pins[key]; ok && pin != ix.Sha256 {
		return nil, fmt.Errorf("%s changed since this was pinned (the store's current version has sha256 %s, the pin %s); not installed", key, ix.Sha256, pin)
	}
	if err := os.MkdirAll(filepath.Dir(dest), 0o755); err != nil {
		return nil, err
	}
	kept := filepath.Join(s.workspace, ".blocks", "versions", filepath.Base(dest), h.Current)
	if r := readRecord(kept); r != nil && r.Index == h.Current {
		tmp := fmt.Sprintf("%s.%d.rollback", dest, os.Getpid())
		if err := os.Rename(kept, tmp); err == nil {
			os.Remove(beside(kept, ".blocks.json"))
			s.log("%s: version %s was kept here: nothing to fetch", key, h.Current[:12])
			return nil, s.install(tmp, dest, h.Current)
		}
	}
	j := s.plan(key, h.Current, ix)
	s.log("%s: version %s: fetch %d bytes, %d block(s) from local files, %d already in place", key, h.Current[:12], j.fetchBytes(), j.local, j.inPlace)
	j.partial = partialOf(dest, h.Current)
	if j.out, err = os.OpenFile(j.partial, os.O_RDWR|os.O_CREATE, 0o644); err != nil {
		return nil, err
	}
	if err := j.out.Truncate(ix.SizeBytes); err != nil {
		j.out.Close()
		return nil, err
	}
	if err := j.copyLocal(j.out); err != nil {
		j.out.Close()
		return nil, err
	}
	return j, nil
}

// finish checks the assembled file whole against its index and installs it.
func (s *syncer) finish(j *job) error {
	defer j.out.Close()
	if err := j.out.Truncate(j.ix.SizeBytes); err != nil {
		return err
	}
	if err := j.out.Sync(); err != nil {
		return err
	}
	sum, err := fileSha256(j.partial)
	if err != nil {
		return err
	}
	if sum != j.ix.Sha256 {
		os.Remove(j.partial)
		return fmt.Errorf("the assembled file has sha256 %s, its index says %s; not installed", sum, j.ix.Sha256)
	}
	if err := s.install(j.partial, j.dest, j.sha); err != nil {
		return err
	}
	s.log("%s: installed version %s (%.1f s)", j.key, j.sha[:12], time.Since(j.started).Seconds())
	return nil
}

// syncAll brings every key up to date, fetching what they lack together. It returns the bytes
// fetched and, per key that failed, why.
func (s *syncer) syncAll(keys []string) (int64, map[string]error) {
	failed := map[string]error{}
	var jobs []*job
	for _, k := range keys {
		j, err := s.prepare(k)
		if err != nil {
			failed[k] = err
		} else if j != nil {
			j.started = time.Now()
			jobs = append(jobs, j)
		}
	}
	// The largest files first: each is checked whole (a read and a sha256 of all its bytes, holes
	// included) as soon as its frames are in, so the longest checks overlap the fetching of the
	// others and the last file to complete is a short one to check.
	sort.SliceStable(jobs, func(a, b int) bool { return jobs[a].ix.SizeBytes > jobs[b].ix.SizeBytes })
	frames := map[frameID]*shared{}
	for rank, j := range jobs {
		for f := range j.frames {
			fr := j.ix.frames[f]
			id := frameID{fr.pack, fr.offset}
			sh := frames[id]
			if sh == nil {
				sh = &shared{pack: fr.pack, offset: fr.offset, length: fr.length, count: fr.count, rank: rank}
				frames[id] = sh
			}
			sh.uses = append(sh.uses, use{j, f})
		}
		j.pending = len(j.frames)
	}

	var mu sync.Mutex
	var fetched int64
	var finishing sync.WaitGroup
	// Whole-file checks run beside the fetches, one per core at most (each hashes a file).
	checks := make(chan struct{}, runtime.NumCPU())
	done := func(j *job) {
		finishing.Add(1)
		go func() {
			defer finishing.Done()
			checks <- struct{}{}
			err := s.finish(j)
			<-checks
			if err != nil {
				mu.Lock()
				failed[j.key] = err
				mu.Unlock()
			}
		}()
	}
	for _, j := range jobs {
		if j.pending == 0 {
			done(j)
		}
	}

	work := make(chan span)
	var fetching sync.WaitGroup
	for w := 0; w < s.concurrency; w++ {
		fetching.Add(1)
		go func() {
			defer fetching.Done()
			var buf buffers
			for sp := range work {
				n, err := s.fetchSpan(sp, &buf)
				if err != nil {
					// Once more: a transfer may have been damaged; a damaged pack fails again.
					var n2 int64
					n2, err = s.fetchSpan(sp, &buf)
					n += n2
				}
				mu.Lock()
				fetched += n
				var ready []*job
				for _, f := range sp.frames {
					for _, u := range f.uses {
						if err != nil && u.j.err == nil {
							u.j.err = err
						}
						if u.j.pending--; u.j.pending == 0 {
							ready = append(ready, u.j)
						}
					}
				}
				for _, j := range ready {
					if j.err != nil {
						j.out.Close()
						failed[j.key] = j.err
					}
				}
				mu.Unlock()
				for _, j := range ready {
					if j.err == nil {
						done(j)
					}
				}
			}
		}()
	}
	for _, sp := range spans(frames) {
		work <- sp
	}
	close(work)
	fetching.Wait()
	finishing.Wait()
	return fetched, failed
}
