import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import type { StoreContext } from '../client';
import { crc32Base64, type FileDigest } from '../digest';
import { StoreError } from '../errors';
import { putFile } from '../multipart';
import { track } from '../progress';
import {
  BLOCK_BYTES,
  blocksOf,
  DIGEST_BYTES,
  encodeIndex,
  fetchBytesOf,
  FRAME_BLOCKS,
  indexKey,
  packKey,
  sha256Hex,
  type BlockIndex,
  type FrameRef,
  type Head,
  type HeadVersion,
  type IndexManifest,
} from './format';
import { statObject } from '../client';
import { loadIndex, putImmutable, readHead, readHeads, updateHead } from './objects';
import { pruneStore } from './prune';
import { blocksDir, indexCacheDir } from './paths';
import { compress, compressFrames } from './zstd';

/**
 * Publishing one file into the block store: its blocks that the store lacks go into one new pack,
 * its index names every block, and its head makes that index current. A file the head already
 * names (same content and manifest) costs one small read.
 */

export const ZSTD_LEVEL = 3;
/** Frames compressed by one zstd process; two such batches run at once. */
const BATCH_FRAMES = 32;
const PARALLEL_BATCHES = 2;
const READ_BYTES = 8 << 20;
const ZEROS = Buffer.alloc(BLOCK_BYTES);
export const DEFAULT_KEEP_VERSIONS = 5;

export interface PublishBlocksInput {
  file: string;
  key: string;
  /** The file's sha256, CRC32 and size, as the plain upload computed them (cached beside the file). */
  digest: FileDigest & { crc32: string };
  manifest: IndexManifest;
  /** Versions a head keeps (never dropping its current one). */
  keepVersions?: number;
  /** Publish nothing unless the head's current version already holds this content (the build's probe). */
  onlyIfStored?: boolean;
}

export interface PublishBlocksResult {
  key: string;
  /** `current`: the head already named this content and manifest; `absent`: see onlyIfStored. */
  status: 'published' | 'current' | 'absent';
  index: string;
  /** Blocks of the file that are not zero, and how many of them were new to the store. */
  dataBlocks: number;
  newBlocks: number;
  /** Bytes of the new pack (0 when every block was stored already). */
  packBytes: number;
  /** What a host with nothing fetches for this version. */
  fetchBytes: number;
  seconds: number;
}

/** A frame as the publisher knows it: where it is (a new one's pack is set once written) and its blocks' digests. */
interface KnownFrame extends FrameRef {
  digests: Buffer;
}
interface Location {
  frame: KnownFrame;
  pos: number;
}

/** Every block the store holds that the heads' versions name: digest (base64) → frame and position. */
async function knownBlocks(ctx: StoreContext, heads: Head[]): Promise<Map<string, Location>> {
  const known = new Map<string, Location>();
  const seenFrames = new Set<string>();
  const indexes = new Set(heads.flatMap((h) => h.versions.map((v) => v.index)));
  for (const sha of indexes) {
    const index = await loadIndex(ctx, indexCacheDir(ctx.workspace), sha);
    index.frames.forEach((f, i) => {
      const id = `${f.pack}:${f.offset}`;
      if (seenFrames.has(id)) return;
      seenFrames.add(id);
      const first = index.firstSlot[i]!;
      const frame: KnownFrame = {
        ...f,
        digests: index.digests.subarray(first * DIGEST_BYTES, (first + f.count) * DIGEST_BYTES),
      };
      for (let j = 0; j < f.count; j++) {
        const d = frame.digests.toString('base64', j * DIGEST_BYTES, (j + 1) * DIGEST_BYTES);
        if (!known.has(d)) known.set(d, { frame, pos: j });
      }
    });
  }
  return known;
}

/** Builds the index tables from each block's location (undefined: a zero block). */
function indexTables(locations: Array<Location | undefined>): {
  frames: KnownFrame[];
  digests: Buffer;
  map: Uint32Array;
} {
  const used = [...new Set(locations.filter((l): l is Location => !!l).map((l) => l.frame))];
  // Frames in pack order, so a host fetches neighbours in one range.
  used.sort((a, b) => (a.pack === b.pack ? a.offset - b.offset : a.pack < b.pack ? -1 : 1));
  const first = new Map<KnownFrame, number>();
  let slots = 0;
  for (const f of used) {
    first.set(f, slots);
    slots += f.count;
  }
  const map = new Uint32Array(locations.length);
  locations.forEach((l, i) => {
    if (l) map[i] = 1 + first.get(l.frame)! + l.pos;
  });
  return { frames: used, digests: Buffer.concat(used.map((f) => f.digests)), map };
}

/** Writes the frames of new blocks, compressed, into one pack file; sets each frame's offset and length. */
class PackWriter {
  private readonly fd: number;
  private readonly hash = crypto.createHash('sha256');
  private crc = 0;
  private written = 0;
  private batch: Array<{ frame: KnownFrame; content: Buffer }> = [];
  private readonly running: Array<Promise<{ frames: KnownFrame[]; compressed: Buffer[] }>> = [];
  readonly frames: KnownFrame[] = [];

  constructor(
    readonly file: string,
    private readonly tmpDir: string,
    private readonly signal?: AbortSignal,
  ) {
    this.fd = fs.openSync(file, 'w');
  }

  get bytes(): number {
    return this.written;
  }

  async add(frame: KnownFrame, content: Buffer): Promise<void> {
    this.frames.push(frame);
    this.batch.push({ frame, content });
    if (this.batch.length >= BATCH_FRAMES) await this.startBatch();
  }

  private async startBatch(): Promise<void> {
    const batch = this.batch;
    this.batch = [];
    if (!batch.length) return;
    const dir = fs.mkdtempSync(path.join(this.tmpDir, 'batch-'));
    this.running.push(
      compressFrames(
        batch.map((b) => b.content),
        dir,
        ZSTD_LEVEL,
        this.signal,
      )
        .then((compressed) => ({ frames: batch.map((b) => b.frame), compressed }))
        .finally(() => fs.rmSync(dir, { recursive: true, force: true })),
    );
    while (this.running.length >= PARALLEL_BATCHES) await this.append();
  }

  /** Appends the oldest running batch, so frames land in the order they were added. */
  private async append(): Promise<void> {
    const { frames, compressed } = await this.running.shift()!;
    frames.forEach((f, i) => {
      const bytes = compressed[i]!;
      f.offset = this.written;
      f.length = bytes.length;
      fs.writeSync(this.fd, bytes, 0, bytes.length, this.written);
      this.hash.update(bytes);
      this.crc = zlib.crc32(bytes, this.crc);
      this.written += bytes.length;
    });
  }

  /** Waits for every frame, closes the file; returns its digest. Each frame's pack is set to it. */
  async finish(): Promise<{ sha256: string; crc32: string; sizeBytes: number }> {
    await this.startBatch();
    while (this.running.length) await this.append();
    fs.fsyncSync(this.fd);
    fs.closeSync(this.fd);
    const sha256 = this.hash.digest('hex');
    for (const f of this.frames) f.pack = sha256;
    return { sha256, crc32: crc32Base64(this.crc), sizeBytes: this.written };
  }

  async abandon(): Promise<void> {
    await Promise.allSettled(this.running);
    try {
      fs.closeSync(this.fd);
    } catch {
      // already closed
    }
  }
}

/**
 * Reads the file once: each non-zero block is looked up among the store's blocks, and those it
 * lacks go, in file order and once each, into new frames of the pack.
 */
async function scanInto(
  ctx: StoreContext,
  input: PublishBlocksInput,
  known: Map<string, Location>,
  pack: PackWriter,
): Promise<{ locations: Array<Location | undefined>; dataBlocks: number; newBlocks: number }> {
  const { file, digest } = input;
  const blocks = blocksOf(digest.sizeBytes);
  const locations = new Array<Location | undefined>(blocks);
  const progress = track(ctx.progress, input.key, 'checksum', digest.sizeBytes);
  const buf = Buffer.alloc(READ_BYTES);
  const fd = fs.openSync(file, 'r');
  let frame: KnownFrame | undefined;
  let content: Buffer | undefined;
  let dataBlocks = 0;
  let newBlocks = 0;
  let crc = 0;
  let pos = 0;
  try {
    while (pos < digest.sizeBytes) {
      if (ctx.signal?.aborted) throw new StoreError('interrupted', `Publishing ${input.key} was interrupted.`);
      const want = Math.min(READ_BYTES, digest.sizeBytes - pos);
      let got = 0;
      while (got < want) {
        const n = fs.readSync(fd, buf, got, want - got, pos + got);
        if (n === 0) break;
        got += n;
      }
      if (got !== want)
        throw new StoreError(
          'invalid-input',
          `${file} is shorter than its recorded ${digest.sizeBytes} bytes: it changed while it was published.`,
        );
      crc = zlib.crc32(buf.subarray(0, got), crc);
      // A last partial block is padded with zeros, as the format says.
      if (got % BLOCK_BYTES) buf.fill(0, got, got + BLOCK_BYTES - (got % BLOCK_BYTES));
      for (let at = 0; at < got; at += BLOCK_BYTES) {
        const block = buf.subarray(at, at + BLOCK_BYTES);
        if (block.equals(ZEROS)) continue;
        dataBlocks++;
        const d = crypto.createHash('sha256').update(block).digest();
        const id = d.toString('base64');
        let loc = known.get(id);
        if (!loc) {
          if (!frame || frame.count === FRAME_BLOCKS) {
            if (frame) await pack.add(frame, content!);
            frame = { pack: '', offset: 0, length: 0, count: 0, digests: Buffer.alloc(FRAME_BLOCKS * DIGEST_BYTES) };
            content = Buffer.alloc(FRAME_BLOCKS * BLOCK_BYTES);
          }
          block.copy(content!, frame.count * BLOCK_BYTES);
          d.copy(frame.digests, frame.count * DIGEST_BYTES);
          loc = { frame, pos: frame.count++ };
          known.set(id, loc);
          newBlocks++;
        }
        locations[(pos + at) / BLOCK_BYTES] = loc;
      }
      pos += got;
      progress.add(got);
    }
  } finally {
    fs.closeSync(fd);
  }
  if (frame) {
    frame.digests = frame.digests.subarray(0, frame.count * DIGEST_BYTES);
    await pack.add(frame, content!.subarray(0, frame.count * BLOCK_BYTES));
  }
  progress.end();
  if (crc32Base64(crc) !== digest.crc32) {
    throw new StoreError(
      'invalid-input',
      `${file} changed while it was published (its CRC32 is no longer the one computed before).`,
    );
  }
  return { locations, dataBlocks, newBlocks };
}

const sameManifest = (a: IndexManifest, b: IndexManifest) => JSON.stringify(a) === JSON.stringify(b);

/** Publishes `input.file` as the current version of `input.key`. */
export function publishBlocks(ctx: StoreContext, input: PublishBlocksInput): Promise<PublishBlocksResult> {
  // One publish at a time per bucket in this process: a build's images, published side by side,
  // would each store the blocks they share (their common base) before any of them named them.
  const bucket = `${ctx.config.endpoint ?? ctx.config.region} ${ctx.config.bucket}`;
  const run = (publishing.get(bucket) ?? Promise.resolve()).then(
    () => publishOne(ctx, input),
    () => publishOne(ctx, input),
  );
  const tail = run.catch(() => undefined);
  publishing.set(bucket, tail);
  void tail.then(() => {
    if (publishing.get(bucket) === tail) publishing.delete(bucket);
  });
  return run;
}

const publishing = new Map<string, Promise<unknown>>();

async function publishOne(ctx: StoreContext, input: PublishBlocksInput): Promise<PublishBlocksResult> {
  const started = Date.now();
  const { key, digest } = input;
  const cache = indexCacheDir(ctx.workspace);
  const done = (
    status: PublishBlocksResult['status'],
    index: BlockIndex | undefined,
    indexSha: string,
    extra: Partial<PublishBlocksResult> = {},
  ) => ({
    key,
    status,
    index: indexSha,
    dataBlocks: index ? index.map.reduce((n, s) => n + (s ? 1 : 0), 0) : 0,
    newBlocks: 0,
    packBytes: 0,
    fetchBytes: index ? fetchBytesOf(index) : 0,
    seconds: (Date.now() - started) / 1000,
    ...extra,
  });

  const head = (await readHead(ctx, key))?.head;
  const currentVersion = head?.versions.find((v) => v.index === head.current);
  const sameContent =
    currentVersion && currentVersion.sha256 === digest.sha256 && currentVersion.sizeBytes === digest.sizeBytes;
  if (input.onlyIfStored && !sameContent) return done('absent', undefined, '');

  let tables: { frames: FrameRef[]; digests: Buffer; map: Uint32Array };
  let counts = { dataBlocks: 0, newBlocks: 0, packBytes: 0 };
  if (sameContent && head) {
    // The blocks are stored already; only the facts may have changed (a new boot time, versions).
    const current = await loadIndex(ctx, cache, head.current);
    if (sameManifest(current.header.manifest, input.manifest)) return done('current', current, head.current);
    if (input.onlyIfStored) return done('current', current, head.current);
    tables = current;
  } else {
    // Every head's versions: the blocks any of them names are known.
    const heads = await readHeads(ctx);
    const known = await knownBlocks(ctx, heads);
    const tmp = fs.mkdtempSync(path.join(ensureDir(path.join(blocksDir(ctx.workspace), 'tmp')), 'publish-'));
    const pack = new PackWriter(path.join(tmp, 'pack'), tmp, ctx.signal);
    try {
      const scanned = await scanInto(ctx, input, known, pack);
      const packed = await pack.finish();
      if (pack.frames.length) {
        const pkey = packKey(packed.sha256);
        await putFile(ctx, {
          key: pkey,
          file: pack.file,
          digest: packed,
          metadata: { sha256: packed.sha256 },
          stateDir: path.join(blocksDir(ctx.workspace), 'uploads'),
          contentType: 'application/octet-stream',
        });
      }
      tables = indexTables(scanned.locations);
      counts = { dataBlocks: scanned.dataBlocks, newBlocks: scanned.newBlocks, packBytes: packed.sizeBytes };
    } catch (err) {
      await pack.abandon();
      throw err;
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  }

  const raw = encodeIndex(
    { key, sizeBytes: digest.sizeBytes, sha256: digest.sha256, manifest: input.manifest },
    tables.frames,
    tables.digests,
    tables.map,
  );
  const index = await compress(raw, ZSTD_LEVEL, ctx.signal);
  const indexSha = sha256Hex(index);
  await putImmutable(ctx, indexKey(indexSha), index, 'application/octet-stream');
  fs.mkdirSync(cache, { recursive: true });
  fs.writeFileSync(path.join(cache, `${indexSha}.index`), index);

  const fetchBytes = tables.frames.reduce((n, f) => n + f.length, 0);
  const version: HeadVersion = {
    index: indexSha,
    sha256: digest.sha256,
    sizeBytes: digest.sizeBytes,
    fetchBytes,
    publishedAt: new Date().toISOString(),
    ...(input.manifest.builtAt ? { builtAt: input.manifest.builtAt } : {}),
    versions: input.manifest.versions,
  };
  const keep = input.keepVersions ?? DEFAULT_KEEP_VERSIONS;
  await updateHead(ctx, key, (cur) => {
    const others = (cur?.versions ?? []).filter((v) => v.index !== indexSha);
    return { format: 1, key, current: indexSha, versions: [version, ...others].slice(0, Math.max(1, keep)) };
  });
  // A prune that ran while this file was scanned may have taken a pack of a version it dropped:
  // the index must never name a pack that is gone (publishing again stores its blocks anew).
  for (const pack of new Set(tables.frames.map((f) => f.pack))) {
    if (!(await statObject(ctx, packKey(pack)))) {
      throw new StoreError(
        'other',
        `Cannot publish ${key}: pack ${pack.slice(0, 12)}… was pruned while this version was written; publish again.`,
        {
          bucket: ctx.config.bucket,
          key,
          transient: true,
        },
      );
    }
  }
  await pruneStore(ctx);
  return {
    key,
    status: 'published',
    index: indexSha,
    ...counts,
    fetchBytes,
    seconds: (Date.now() - started) / 1000,
  };
}

function ensureDir(dir: string): string {
  fs.mkdirSync(dir, { recursive: true });
  return dir;
}
