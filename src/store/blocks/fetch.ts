import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GetObjectCommand } from '@aws-sdk/client-s3';
import { DEFAULT_RETRY, send, withRetry, type StoreContext } from '../client';
import { digestFile, rememberDigest } from '../digest';
import { brokeMidway, StoreError, where } from '../errors';
import { imagesDir, kernelPath, localPathOf } from '../layout';
import { track } from '../progress';
import {
  BLOCK_BYTES,
  DIGEST_BYTES,
  frameOfSlot,
  packKey,
  shortName,
  slotDigest,
  type BlockIndex,
  type FrameRef,
} from './format';
import { loadIndex, readHead } from './objects';
import { indexCacheDir, partialOf, versionsDir, versionsRoot } from './paths';
import { forgetRecord, readRecord, writeRecord } from './records';
import { capture } from '../../util/exec';
import { runZstd } from './zstd';

/**
 * Bringing one file of the block store to a host: its current version is assembled from blocks
 * the host already has (checked against their digests) and frames fetched by range for the rest,
 * written sparse into a partial file that a later run resumes, checked whole, then renamed into
 * place. The version it replaces is kept, so a rollback to it fetches nothing.
 */

/** Adjacent frames of a pack are fetched in one request up to this size. */
const MAX_RANGE_BYTES = 64 << 20;
const RANGE_CONCURRENCY = 4;
const READ_BYTES = 8 << 20;
export const DEFAULT_KEEP_LOCAL_VERSIONS = 1;

export interface BlockPlan {
  key: string;
  dest: string;
  index: string;
  sizeBytes: number;
  /** Nothing to do: the file holds this version already. */
  unchanged: boolean;
  /** A kept earlier version of the file is this one: it is put back, nothing is read. */
  keptVersion?: string;
  /** Blocks already in place in an unfinished download, blocks copied from local files, blocks to fetch. */
  blocksInPlace: number;
  blocksLocal: number;
  blocksToFetch: number;
  /** Compressed bytes of the frames to fetch, and how many ranges they take. */
  fetchBytes: number;
  ranges: number;
}

export interface BlockSyncResult extends BlockPlan {
  status: 'unchanged' | 'downloaded';
  bytesFetched: number;
  seconds: number;
}

/** A file on this host that holds a known version: its blocks can be copied. */
interface RecordSource {
  file: string;
  index: BlockIndex;
}

/** Files this host has with a valid record and a cached index: sources of blocks. */
function recordSources(ctx: StoreContext): Promise<RecordSource[]> {
  const files: string[] = [kernelPath(ctx.workspace)];
  const dir = imagesDir(ctx.workspace);
  if (fs.existsSync(dir)) for (const n of fs.readdirSync(dir)) if (n.endsWith('.ext4')) files.push(path.join(dir, n));
  const versions = versionsRoot(ctx.workspace);
  if (fs.existsSync(versions)) {
    for (const name of fs.readdirSync(versions)) {
      for (const v of fs.readdirSync(path.join(versions, name)))
        if (/^[0-9a-f]{64}$/.test(v)) files.push(path.join(versions, name, v));
    }
  }
  const cache = indexCacheDir(ctx.workspace);
  return Promise.all(
    files.map(async (file) => {
      const rec = readRecord(file);
      if (!rec || !fs.existsSync(path.join(cache, `${rec.index}.index`))) return undefined;
      try {
        return { file, index: await loadIndex(ctx, cache, rec.index) };
      } catch {
        return undefined;
      }
    }),
  ).then((all) => all.filter((s): s is RecordSource => !!s));
}

/** Positional writes into the partial, contiguous blocks gathered into one writev. */
class BlockWriter {
  private start = -1;
  private parts: Buffer[] = [];
  constructor(private readonly fd: number) {}

  put(block: number, content: Buffer): void {
    if (this.start < 0 || block !== this.start + this.parts.length || this.parts.length >= 256) {
      this.flush();
      this.start = block;
    }
    this.parts.push(content);
  }

  flush(): void {
    if (!this.parts.length) return;
    const total = this.parts.length * BLOCK_BYTES;
    let done = fs.writevSync(this.fd, this.parts, this.start * BLOCK_BYTES);
    // writev may write less than asked (rarely, on a regular file): the rest goes one block at a time.
    for (let i = Math.floor(done / BLOCK_BYTES); done < total; i++) {
      const part = this.parts[i]!.subarray(done - i * BLOCK_BYTES);
      done += fs.writeSync(this.fd, part, 0, part.length, this.start * BLOCK_BYTES + done);
    }
    this.parts = [];
    this.start = -1;
  }
}

const ZEROS = Buffer.alloc(BLOCK_BYTES);
const digestOf = (block: Buffer): Buffer => crypto.hash('sha256', block, 'buffer');

/** The work for one key, decided before anything is written. */
class KeyJob {
  /** Target blocks of each slot not yet written (the slot's content may go to several blocks). */
  readonly targets = new Map<number, number[]>();
  /** Slots copied from a local file: slot → [file, block there]. */
  readonly copies = new Map<number, [string, number]>();
  readonly frames: number[] = [];

  constructor(
    readonly key: string,
    readonly dest: string,
    readonly indexSha: string,
    readonly index: BlockIndex,
  ) {}
}

/** Unfinished downloads of other versions of `dest`: their version is no longer the one wanted. */
function removeStalePartials(dest: string, keep: string): void {
  const dir = path.dirname(dest);
  if (!fs.existsSync(dir)) return;
  const prefix = `.${path.basename(dest)}.`;
  for (const name of fs.readdirSync(dir)) {
    if (name.startsWith(prefix) && name.endsWith('.blocks-partial') && path.join(dir, name) !== keep)
      fs.rmSync(path.join(dir, name), { force: true });
  }
}

/** Plans the sync of `key`; undefined when the block store has no version of it. */
export async function planBlocks(
  ctx: StoreContext,
  key: string,
): Promise<{ plan: BlockPlan; job?: KeyJob } | undefined> {
  const read = await readHead(ctx, key);
  if (!read) return undefined;
  const sha = read.head.current;
  const dest = localPathOf(ctx.workspace, key);
  const base: BlockPlan = {
    key,
    dest,
    index: sha,
    sizeBytes: read.head.versions.find((v) => v.index === sha)!.sizeBytes,
    unchanged: false,
    blocksInPlace: 0,
    blocksLocal: 0,
    blocksToFetch: 0,
    fetchBytes: 0,
    ranges: 0,
  };
  if (readRecord(dest)?.index === sha) return { plan: { ...base, unchanged: true } };
  const kept = path.join(versionsDir(ctx.workspace, path.basename(dest)), sha);
  if (readRecord(kept)?.index === sha) return { plan: { ...base, keptVersion: kept } };

  const index = await loadIndex(ctx, indexCacheDir(ctx.workspace), sha);
  const job = new KeyJob(key, dest, sha, index);
  index.map.forEach((s, i) => {
    if (!s) return;
    const list = job.targets.get(s - 1);
    if (list) list.push(i);
    else job.targets.set(s - 1, [i]);
  });

  // An unfinished download of this version: the blocks it holds already are left in place.
  const partial = partialOf(dest, sha);
  removeStalePartials(dest, partial);
  if (fs.existsSync(partial)) base.blocksInPlace = await keepInPlace(partial, job);

  // Blocks of files this host has (any language, any version), by digest.
  const wanted = new Map<string, number>();
  for (const slot of job.targets.keys()) wanted.set(slotDigest(index, slot).toString('base64'), slot);
  for (const src of await recordSources(ctx)) {
    src.index.map.forEach((s, k) => {
      if (!s || !wanted.size) return;
      const d = slotDigest(src.index, s - 1).toString('base64');
      const slot = wanted.get(d);
      if (slot === undefined) return;
      job.copies.set(slot, [src.file, k]);
      wanted.delete(d);
    });
  }
  // The file being replaced, when nothing says which version it holds (a plain download, a copy):
  // a block found at its own position with the right digest is as good as any.
  if (fs.existsSync(dest) && !readRecord(dest)) await findInPlace(dest, job);

  const frames = new Set<number>();
  for (const [slot, blocks] of job.targets) {
    if (job.copies.has(slot)) base.blocksLocal += blocks.length;
    else {
      frames.add(frameOfSlot(index, slot));
      base.blocksToFetch += blocks.length;
    }
  }
  job.frames.push(...[...frames].sort((a, b) => a - b));
  base.fetchBytes = job.frames.reduce((n, f) => n + index.frames[f]!.length, 0);
  base.ranges = rangesOf(job.frames.map((f) => sharedFrame(index, f))).length;
  return { plan: base, job };
}

/** Reads `file` block by block where the job wants data; calls `onMatch(slot, block)` for each block whose digest is the slot's. */
async function scanPositions(
  file: string,
  job: KeyJob,
  onMatch: (slot: number, block: number, content: Buffer) => void,
): Promise<void> {
  const { index } = job;
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.alloc(READ_BYTES);
  try {
    const size = Math.min(fs.fstatSync(fd).size, index.header.sizeBytes);
    for (let pos = 0; pos < size; pos += READ_BYTES) {
      const n = fs.readSync(fd, buf, 0, Math.min(READ_BYTES, size - pos), pos);
      for (let at = 0; at + BLOCK_BYTES <= n || (at < n && pos + n === size); at += BLOCK_BYTES) {
        const block = Math.floor((pos + at) / BLOCK_BYTES);
        const s = index.map[block]!;
        if (!s) continue;
        const content = Buffer.alloc(BLOCK_BYTES);
        buf.copy(content, 0, at, Math.min(at + BLOCK_BYTES, n));
        // A stored block is never all zeros (those are holes): no need to hash one.
        if (content.equals(ZEROS)) continue;
        if (digestOf(content).equals(slotDigest(index, s - 1))) onMatch(s - 1, block, content);
      }
    }
  } finally {
    fs.closeSync(fd);
  }
}

function dropTarget(job: KeyJob, slot: number, block: number): void {
  const list = job.targets.get(slot);
  if (!list) return;
  const rest = list.filter((b) => b !== block);
  if (rest.length) job.targets.set(slot, rest);
  else job.targets.delete(slot);
}

async function keepInPlace(partial: string, job: KeyJob): Promise<number> {
  let n = 0;
  await scanPositions(partial, job, (slot, block) => {
    dropTarget(job, slot, block);
    n++;
  });
  return n;
}

async function findInPlace(file: string, job: KeyJob): Promise<void> {
  await scanPositions(file, job, (slot, block) => {
    if (!job.copies.has(slot)) job.copies.set(slot, [file, block]);
  });
}

/** A frame as fetched: where it is, and its blocks' digests (from any index that lists it). */
interface SharedFrame extends FrameRef {
  digests: Buffer;
}

interface Range {
  pack: string;
  start: number;
  end: number;
  frames: SharedFrame[];
}

const frameId = (f: FrameRef) => `${f.pack}:${f.offset}`;

function sharedFrame(index: BlockIndex, f: number): SharedFrame {
  const fr = index.frames[f]!;
  const first = index.firstSlot[f]!;
  return { ...fr, digests: index.digests.subarray(first * DIGEST_BYTES, (first + fr.count) * DIGEST_BYTES) };
}

/** Frames as byte ranges of their packs: neighbours (no gap) share one request. */
function rangesOf(frames: SharedFrame[]): Range[] {
  const sorted = [...frames].sort((a, b) => (a.pack === b.pack ? a.offset - b.offset : a.pack < b.pack ? -1 : 1));
  const ranges: Range[] = [];
  for (const fr of sorted) {
    const last = ranges.at(-1);
    if (
      last &&
      last.pack === fr.pack &&
      last.end === fr.offset &&
      last.end - last.start + fr.length <= MAX_RANGE_BYTES
    ) {
      last.end += fr.length;
      last.frames.push(fr);
    } else ranges.push({ pack: fr.pack, start: fr.offset, end: fr.offset + fr.length, frames: [fr] });
  }
  return ranges;
}

/**
 * What several files fetch together: each frame once, attributed to the first file (in order)
 * that needs it; `plan.fetchBytes` and `plan.ranges` say what each file's share is.
 */
export function shareFrames(planned: Array<{ plan: BlockPlan; job?: KeyJob }>): void {
  const seen = new Set<string>();
  for (const { plan, job } of planned) {
    if (!job) continue;
    const own = job.frames.map((f) => sharedFrame(job.index, f)).filter((f) => !seen.has(frameId(f)));
    for (const f of own) seen.add(frameId(f));
    plan.fetchBytes = own.reduce((n, f) => n + f.length, 0);
    plan.ranges = rangesOf(own).length;
  }
}

/** Who waits for a block: the file, its slot, and the writer of its partial. */
interface Waiter {
  job: KeyJob;
  slot: number;
  writer: BlockWriter;
}

/**
 * Fetches one range, decompresses it, checks each block someone waits for against its digest and
 * writes it to every file (and place) that needs it. Returns the bytes received.
 */
async function fetchRange(
  ctx: StoreContext,
  range: Range,
  waiting: Map<string, Waiter[]>,
  onBytes: (n: number) => void,
): Promise<number> {
  const key = packKey(range.pack);
  let received = 0;
  const damaged = (why: string) =>
    new StoreError(
      'checksum',
      `Cannot download from ${where(ctx.config, key)}: bytes ${range.start}-${range.end - 1} are damaged: they ${why}.`,
      {
        bucket: ctx.config.bucket,
        key,
        // Fetched again once or twice: a transfer may have been damaged; a damaged pack fails every time.
        transient: true,
      },
    );
  // Blocks in the order zstd gives them back: frame after frame.
  const order: Buffer[] = [];
  const frameAt: number[] = [];
  for (const f of range.frames) {
    for (let j = 0; j < f.count; j++) {
      order.push(f.digests.subarray(j * DIGEST_BYTES, (j + 1) * DIGEST_BYTES));
      frameAt.push(f.offset);
    }
  }
  let next = 0;
  let carry: Buffer | undefined;
  const pending: Array<[Waiter[], Buffer]> = [];
  const one = (block: Buffer) => {
    const digest = order[next++];
    if (digest === undefined) throw new Error('more data than the frames hold');
    const waiters = waiting.get(digest.toString('base64'));
    if (!waiters?.length) return;
    if (!digestOf(block).equals(digest))
      throw damaged(`hold a block that does not match its digest (the frame at byte ${frameAt[next - 1]})`);
    // zstd's output chunks are fresh buffers: a block can stay a view of its chunk until written.
    pending.push([waiters, block]);
  };
  const take = (chunk: Buffer) => {
    let at = 0;
    if (carry) {
      const need = BLOCK_BYTES - carry.length;
      if (chunk.length < need) {
        carry = Buffer.concat([carry, chunk]);
        return;
      }
      one(Buffer.concat([carry, chunk.subarray(0, need)]));
      carry = undefined;
      at = need;
    }
    for (; at + BLOCK_BYTES <= chunk.length; at += BLOCK_BYTES) one(chunk.subarray(at, at + BLOCK_BYTES));
    if (at < chunk.length) carry = Buffer.from(chunk.subarray(at));
  };
  let decodeError: unknown;
  await send(ctx, { key, verb: 'download', action: 's3:GetObject' }, async (c) => {
    const res = await c.send(
      new GetObjectCommand({ Bucket: ctx.config.bucket, Key: key, Range: `bytes=${range.start}-${range.end - 1}` }),
      { abortSignal: ctx.signal },
    );
    const body = res.Body as AsyncIterable<Buffer>;
    let bodyError: unknown;
    async function* counted() {
      try {
        for await (const chunk of body) {
          received += chunk.length;
          onBytes(chunk.length);
          yield chunk;
        }
      } catch (err) {
        bodyError = err;
        throw err;
      }
    }
    try {
      await runZstd(['-d', '-c'], counted(), take, ctx.signal);
    } catch (err) {
      // The transfer's own failure is the S3 client's to describe; anything else is the data's.
      if (bodyError) throw bodyError;
      decodeError = err;
    }
  });
  if (decodeError instanceof StoreError) throw decodeError;
  if (decodeError) throw damaged(`do not decompress (${(decodeError as Error).message.slice(0, 200)})`);
  if (next !== order.length || carry || received !== range.end - range.start)
    throw damaged(`hold ${next} of the ${order.length} blocks their frames list`);
  // Written only once the whole range checked out: a range fetched again writes it all again.
  const writers = new Set<BlockWriter>();
  for (const [waiters, content] of pending) {
    for (const w of waiters) {
      for (const b of w.job.targets.get(w.slot) ?? []) w.writer.put(b, content);
      writers.add(w.writer);
    }
  }
  for (const w of writers) w.flush();
  // Nobody waits for these blocks any more.
  for (const [waiters] of pending) waiters.length = 0;
  return received;
}

/** Blocks read from a local file at once: neighbours there are read together. */
const COPY_RUN_BLOCKS = 256;

/** Copies the planned local blocks, each checked; a block that fails its check is fetched instead. */
function copyLocal(job: KeyJob, writer: BlockWriter): number[] {
  const failed: number[] = [];
  const bySource = new Map<string, Array<[number, number]>>();
  for (const [slot, [file, block]] of job.copies) {
    const list = bySource.get(file) ?? [];
    list.push([block, slot]);
    bySource.set(file, list);
  }
  for (const [file, list] of bySource) {
    list.sort((a, b) => a[0] - b[0]);
    const fd = fs.openSync(file, 'r');
    try {
      for (let i = 0; i < list.length; ) {
        // A run of blocks adjacent in the source, read in one call.
        let j = i + 1;
        while (j < list.length && j - i < COPY_RUN_BLOCKS && list[j]![0] === list[j - 1]![0] + 1) j++;
        const first = list[i]![0];
        const buf = Buffer.alloc((j - i) * BLOCK_BYTES);
        fs.readSync(fd, buf, 0, buf.length, first * BLOCK_BYTES);
        for (let k = i; k < j; k++) {
          const [block, slot] = list[k]!;
          const content = buf.subarray((block - first) * BLOCK_BYTES, (block - first + 1) * BLOCK_BYTES);
          if (!digestOf(content).equals(slotDigest(job.index, slot))) {
            job.copies.delete(slot);
            failed.push(slot);
            continue;
          }
          for (const b of job.targets.get(slot) ?? []) writer.put(b, content);
        }
        i = j;
      }
    } finally {
      fs.closeSync(fd);
    }
  }
  writer.flush();
  return failed;
}

/**
 * The whole file's sha256: by the openssl command when there is one (another process, so another
 * core, while this one assembles the next file), else here.
 */
async function sha256Of(file: string, signal?: AbortSignal): Promise<string> {
  try {
    const { stdout } = await capture('openssl', ['dgst', '-sha256', '-r', file]);
    const hex = /^([0-9a-f]{64}) /.exec(stdout)?.[1];
    if (hex) return hex;
  } catch (err) {
    if (signal?.aborted) throw err;
  }
  return (await digestFile(file, { crc32: false, signal })).sha256;
}

/** Moves the file being replaced aside as a kept version, keeping the newest `keep`. */
function keepOldVersion(dest: string, workspace: string, keep: number): void {
  const rec = readRecord(dest);
  if (!rec || keep < 1) return;
  const dir = versionsDir(workspace, path.basename(dest));
  fs.mkdirSync(dir, { recursive: true });
  const kept = path.join(dir, rec.index);
  fs.rmSync(kept, { force: true });
  fs.linkSync(dest, kept);
  writeRecord(kept, rec.index);
  // Newest first by when each was set aside (its record's time: links and renames change a file's ctime).
  const setAside = (n: string) =>
    fs.statSync(path.join(dir, `.${n}.blocks.json`), { throwIfNoEntry: false })?.mtimeMs ?? 0;
  const others = fs
    .readdirSync(dir)
    .filter((n) => /^[0-9a-f]{64}$/.test(n) && n !== rec.index)
    .sort((a, b) => setAside(b) - setAside(a));
  for (const n of others.slice(keep - 1)) {
    fs.rmSync(path.join(dir, n), { force: true });
    fs.rmSync(path.join(dir, `.${n}.blocks.json`), { force: true });
  }
}

function install(
  file: string,
  dest: string,
  workspace: string,
  index: string,
  sha256: string | undefined,
  sizeBytes: number,
  keep: number,
): void {
  if (fs.existsSync(dest)) keepOldVersion(dest, workspace, keep);
  fs.renameSync(file, dest);
  writeRecord(dest, index);
  if (sha256) rememberDigest(dest, { sizeBytes, sha256 });
}

/** Carries out one plan: copies, fetches, checks, installs. */
export async function syncBlocks(
  ctx: StoreContext,
  planned: { plan: BlockPlan; job?: KeyJob },
  opts: { keepLocalVersions?: number } = {},
): Promise<BlockSyncResult> {
  const [r] = await syncMany(ctx, [planned], opts);
  if (r instanceof Error) throw r;
  return r!;
}

/** Puts back a version this host kept: nothing is fetched or read. */
async function restoreKept(ctx: StoreContext, plan: BlockPlan, keep: number): Promise<void> {
  const rec = readRecord(plan.keptVersion!)!;
  const tmp = `${plan.dest}.${process.pid}.rollback`;
  fs.rmSync(tmp, { force: true });
  // Taken out of the kept versions: it becomes the file, and the file it replaces is set aside.
  fs.renameSync(plan.keptVersion!, tmp);
  forgetRecord(plan.keptVersion!);
  const sha = (await readHead(ctx, plan.key))?.head.versions.find((v) => v.index === rec.index)?.sha256;
  install(tmp, plan.dest, ctx.workspace, rec.index, sha, plan.sizeBytes, keep);
}

/**
 * Carries out several plans together: each file's local blocks are copied into its partial, then
 * every frame any of them lacks is fetched once (a range at a time, a few at once) and its blocks
 * written to every file that needs them; each file is then checked whole and installed. A file
 * whose blocks could not all be had fails alone (its result is the error); the others go on.
 */
export async function syncMany(
  ctx: StoreContext,
  planned: Array<{ plan: BlockPlan; job?: KeyJob }>,
  opts: { keepLocalVersions?: number } = {},
): Promise<Array<BlockSyncResult | Error>> {
  const started = Date.now();
  const keep = opts.keepLocalVersions ?? DEFAULT_KEEP_LOCAL_VERSIONS;
  shareFrames(planned);
  const results: Array<BlockSyncResult | Error> = new Array<BlockSyncResult | Error>(planned.length);
  const done = (i: number, status: BlockSyncResult['status'], bytesFetched: number) =>
    (results[i] = { ...planned[i]!.plan, status, bytesFetched, seconds: (Date.now() - started) / 1000 });

  interface Open {
    i: number;
    job: KeyJob;
    partial: string;
    fd: number;
    writer: BlockWriter;
  }
  const open: Open[] = [];
  try {
    for (const [i, { plan, job }] of planned.entries()) {
      if (plan.unchanged) done(i, 'unchanged', 0);
      else if (plan.keptVersion) {
        fs.mkdirSync(path.dirname(plan.dest), { recursive: true });
        await restoreKept(ctx, plan, keep);
        done(i, 'downloaded', 0);
      } else if (!job) results[i] = new Error(`no job planned for ${plan.key}`);
      else {
        fs.mkdirSync(path.dirname(plan.dest), { recursive: true });
        const partial = partialOf(plan.dest, plan.index);
        const fd = fs.openSync(partial, fs.existsSync(partial) ? 'r+' : 'w', 0o644);
        fs.ftruncateSync(fd, job.index.header.sizeBytes);
        const writer = new BlockWriter(fd);
        open.push({ i, job, partial, fd, writer });
        for (const slot of copyLocal(job, writer)) {
          const f = frameOfSlot(job.index, slot);
          if (!job.frames.includes(f)) job.frames.push(f);
        }
      }
    }

    // Every block still missing, by digest: who waits for it, and the frames that hold them.
    const waiting = new Map<string, Waiter[]>();
    const frames = new Map<string, SharedFrame>();
    for (const o of open) {
      const { job } = o;
      for (const slot of job.targets.keys()) {
        if (job.copies.has(slot)) continue;
        const d = slotDigest(job.index, slot).toString('base64');
        const list = waiting.get(d) ?? [];
        list.push({ job, slot, writer: o.writer });
        waiting.set(d, list);
        const f = sharedFrame(job.index, frameOfSlot(job.index, slot));
        if (!frames.has(frameId(f))) frames.set(frameId(f), f);
      }
    }
    const ranges = rangesOf([...frames.values()]);
    const total = ranges.reduce((n, r) => n + r.end - r.start, 0);
    const progress = track(
      ctx.progress,
      open.length === 1 ? open[0]!.job.key : `${open.length} files`,
      'download',
      total,
    );
    let nextRange = 0;
    let rangeError: unknown;
    const worker = async () => {
      while (nextRange < ranges.length && !ctx.signal?.aborted) {
        const range = ranges[nextRange++]!;
        try {
          await withRetry(
            () => fetchRange(ctx, range, waiting, (b) => progress.add(b)),
            ctx.retry ?? DEFAULT_RETRY,
            ctx.signal,
          );
        } catch (err) {
          // The files waiting for its blocks fail; the others go on.
          if (
            err instanceof StoreError &&
            ['credentials', 'bad-credentials', 'no-bucket', 'interrupted'].includes(err.kind)
          )
            throw err;
          rangeError ??= err;
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(RANGE_CONCURRENCY, ranges.length) }, worker));
    progress.end();

    const unresolved = new Set<KeyJob>();
    for (const list of waiting.values()) for (const w of list) unresolved.add(w.job);
    await Promise.all(
      open.map(async (o) => {
        const { job, partial, fd } = o;
        const { plan } = planned[o.i]!;
        if (unresolved.has(job)) {
          // A server that checks its data at rest (MinIO) breaks a transfer off where the data is
          // damaged: when it does so every time, the pack is the likely cause, not the network.
          const why =
            rangeError instanceof StoreError && brokeMidway(rangeError)
              ? `the S3 server broke off the transfer of ${rangeError.key ?? 'a pack'} every time it was tried: the pack is likely damaged (corrupt) in the bucket — publish the image again.`
              : rangeError instanceof StoreError
                ? rangeError.userMessage
                : String((rangeError as Error)?.message ?? 'blocks were missing');
          results[o.i] = new StoreError('checksum', `Cannot download ${plan.key}: ${why} Nothing was installed.`, {
            bucket: ctx.config.bucket,
            key: plan.key,
            cause: rangeError,
          });
          return;
        }
        // The last block was written whole (padded); the file ends where the index says.
        fs.ftruncateSync(fd, job.index.header.sizeBytes);
        fs.fsyncSync(fd);
        const sha256 = await sha256Of(partial, ctx.signal);
        if (sha256 !== job.index.header.sha256) {
          fs.rmSync(partial, { force: true });
          results[o.i] = new StoreError(
            'checksum',
            `Cannot download ${plan.key}: the assembled file has sha256 ${sha256.slice(0, 12)}…, its index ${shortName(plan.index)} says ${job.index.header.sha256.slice(0, 12)}…; nothing was installed.`,
            { bucket: ctx.config.bucket, key: plan.key },
          );
          return;
        }
        fs.closeSync(fd);
        o.fd = -1;
        install(partial, plan.dest, ctx.workspace, plan.index, sha256, job.index.header.sizeBytes, keep);
        done(o.i, 'downloaded', plan.fetchBytes);
      }),
    );
  } finally {
    for (const o of open) if (o.fd >= 0) fs.closeSync(o.fd);
  }
  return results;
}
