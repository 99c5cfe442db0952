/**
 * The parts of bench/blocks: files read in large chunks and cut into fixed blocks, each non-zero
 * block named by its sha256; the unique blocks packed into frames that the zstd command compresses
 * one process per frame; the image artifacts of a workspace found and paired by language.
 */
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { z } from 'zod';
import { NAME_PATTERN } from '../../src/config/schema';

/** Large reads: the images are read once per experiment, never held in memory. */
export const READ_BYTES = 8 << 20;
export const DIGEST_BYTES = 32;
export const TRUNCATED_DIGEST_BYTES = 16;

/** Block sizes a layout accepts: powers of two that divide the read size. */
export const BlockBytes = z
  .number()
  .int()
  .refine((n) => n >= 512 && n <= READ_BYTES && (n & (n - 1)) === 0, {
    error: `a block is a power of two from 512 bytes to ${READ_BYTES} bytes`,
  });

/** Reads `file` in chunks of READ_BYTES (the last one shorter), each filled completely. */
export async function readChunks(file: string, onChunk: (chunk: Buffer) => void | Promise<void>): Promise<number> {
  let fh: fs.promises.FileHandle;
  try {
    fh = await fs.promises.open(file, 'r');
  } catch (err) {
    throw new Error(`cannot open ${file} to read its blocks`, { cause: err });
  }
  const buf = Buffer.allocUnsafe(READ_BYTES);
  let total = 0;
  try {
    for (;;) {
      let fill = 0;
      while (fill < READ_BYTES) {
        const { bytesRead } = await fh.read(buf, fill, READ_BYTES - fill, total + fill);
        if (bytesRead === 0) break;
        fill += bytesRead;
      }
      if (fill === 0) break;
      await onChunk(buf.subarray(0, fill));
      total += fill;
      if (fill < READ_BYTES) break;
    }
  } catch (err) {
    throw new Error(`reading ${file} at byte ${total} failed`, { cause: err });
  } finally {
    await fh.close();
  }
  return total;
}

const ZEROS = Buffer.alloc(READ_BYTES);
export const isZero = (block: Buffer): boolean => block.equals(ZEROS.subarray(0, block.length));

/** sha256 of each block, with the time spent in it: the hashing throughput the table prints. */
export class Hasher {
  bytes = 0;
  private ns = 0n;

  digest(block: Buffer): Buffer {
    const t = process.hrtime.bigint();
    const d = crypto.createHash('sha256').update(block).digest();
    this.ns += process.hrtime.bigint() - t;
    this.bytes += block.length;
    return d;
  }

  get seconds(): number {
    return Number(this.ns) / 1e9;
  }
}

/** The unique-set key: a 16-byte prefix of the digest, as the index with truncated digests would have it. */
export const keyOf = (digest: Buffer): string => digest.toString('base64', 0, TRUNCATED_DIGEST_BYTES);

/** One zstd process run: bytes it wrote and how long it lived. */
export interface ZstdRun {
  bytes: number;
  ms: number;
}

/**
 * Runs the zstd command, at most `jobs` at once: `args` after `-q`, `input` on stdin when given.
 * Resolves with the number of bytes on stdout (they are counted, not kept).
 */
export class ZstdPool {
  spawned = 0;
  busyMs = 0;
  private running = 0;
  private readonly waiting: Array<() => void> = [];

  constructor(
    private readonly jobs: number,
    private readonly command = 'zstd',
  ) {}

  async run(args: string[], input?: Buffer): Promise<ZstdRun> {
    if (this.running >= this.jobs) await new Promise<void>((resolve) => this.waiting.push(resolve));
    this.running++;
    this.spawned++;
    try {
      const r = await zstdCount(this.command, ['-q', ...args], input);
      this.busyMs += r.ms;
      return r;
    } finally {
      this.running--;
      this.waiting.shift()?.();
    }
  }
}

function zstdCount(command: string, args: string[], input: Buffer | undefined): Promise<ZstdRun> {
  const started = process.hrtime.bigint();
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    let bytes = 0;
    let stderr = '';
    let stdinError: Error | undefined;
    child.stdout.on('data', (c: Buffer) => (bytes += c.length));
    child.stderr.on('data', (c: Buffer) => (stderr = (stderr + c.toString('utf8')).slice(-2000)));
    child.once('error', (err) => reject(new Error(`cannot run ${command} ${args.join(' ')}`, { cause: err })));
    child.once('close', (code, signal) => {
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      if (code === 0) resolve({ bytes, ms });
      else
        reject(
          new Error(`${command} ${args.join(' ')} failed (${code ?? signal}): ${stderr.trim() || 'no message'}`, {
            cause: stdinError,
          }),
        );
    });
    child.stdin.on('error', (err) => (stdinError = err));
    // Without input zstd reads the file named in args; its stdin just ends.
    child.stdin.end(input);
  });
}

/**
 * Packs blocks, in the order given, into frames of at most `frameBytes` raw bytes (a block never
 * spans two frames: a host fetches a frame by range and finds whole blocks in it), and has each
 * frame compressed on its own.
 */
export class FramePacker {
  frames = 0;
  rawBytes = 0;
  packedBytes = 0;
  zstdMs = 0;
  private frame: Buffer;
  private fill = 0;
  private readonly capacity: number;
  private readonly pending: Array<Promise<void>> = [];
  private error: unknown;

  constructor(
    frameBytes: number,
    blockBytes: number,
    private readonly pool: ZstdPool,
    private readonly level: number,
  ) {
    this.capacity = Math.max(frameBytes, blockBytes);
    this.frame = Buffer.allocUnsafe(this.capacity);
  }

  add(block: Buffer): void {
    if (this.fill > 0 && this.fill + block.length > this.capacity) this.flush();
    block.copy(this.frame, this.fill);
    this.fill += block.length;
  }

  /** Waits until at most `max` frames are still being compressed: bounds the memory held. */
  async drain(max: number): Promise<void> {
    while (this.pending.length > max) await this.pending.shift();
    this.check();
  }

  async finish(): Promise<void> {
    if (this.fill > 0) this.flush();
    await Promise.all(this.pending.splice(0));
    this.check();
  }

  private flush(): void {
    const data = this.frame.subarray(0, this.fill);
    this.frame = Buffer.allocUnsafe(this.capacity);
    this.fill = 0;
    this.frames++;
    this.rawBytes += data.length;
    this.pending.push(
      this.pool.run([`-${this.level}`, '-c', '-T1'], data).then(
        (r) => {
          this.packedBytes += r.bytes;
          this.zstdMs += r.ms;
        },
        (err: unknown) => {
          this.error ??= err;
        },
      ),
    );
  }

  private check(): void {
    if (this.error) throw new Error('compressing a frame failed', { cause: this.error });
  }
}

/** Byte counts of one file at one block size. */
export interface FileCounts {
  name: string;
  sizeBytes: number;
  blocks: number;
  zeroBytes: number;
  nonZeroBytes: number;
  /** Distinct non-zero blocks of this file, in bytes. */
  uniqueInFileBytes: number;
  /** What this file added to the store after the files before it. */
  newBytes: number;
}

/**
 * One block size over a sequence of files: the store's unique set, each file's index (one digest
 * per block, zeros for a zero block), and the unique blocks packed in first-seen order.
 */
export class BlockLayout {
  readonly files: FileCounts[] = [];
  readonly indexes: Buffer[] = [];
  uniqueBlocks = 0;
  /** Digest key → the ordinal of the last file that had the block. */
  private readonly seen = new Map<string, number>();
  private current?: { counts: FileCounts; index: Buffer; ordinal: number };

  constructor(
    readonly blockBytes: number,
    readonly hasher: Hasher,
    readonly packer?: FramePacker,
  ) {
    BlockBytes.parse(blockBytes);
  }

  startFile(name: string, sizeBytes: number): void {
    const blocks = Math.ceil(sizeBytes / this.blockBytes);
    const counts = { name, sizeBytes, blocks, zeroBytes: 0, nonZeroBytes: 0, uniqueInFileBytes: 0, newBytes: 0 };
    this.files.push(counts);
    const index = Buffer.alloc(blocks * DIGEST_BYTES);
    this.indexes.push(index);
    this.current = { counts, index, ordinal: 0 };
  }

  /** A chunk of the current file, in order; its length is a multiple of the block size but at the end. */
  addChunk(chunk: Buffer): void {
    const cur = this.current;
    if (!cur) throw new Error('addChunk before startFile');
    const fileNo = this.files.length - 1;
    for (let off = 0; off < chunk.length; off += this.blockBytes) {
      const block = chunk.subarray(off, Math.min(off + this.blockBytes, chunk.length));
      const ordinal = cur.ordinal++;
      if (isZero(block)) {
        cur.counts.zeroBytes += block.length;
        continue;
      }
      cur.counts.nonZeroBytes += block.length;
      const digest = this.hasher.digest(block);
      digest.copy(cur.index, ordinal * DIGEST_BYTES);
      const key = keyOf(digest);
      const last = this.seen.get(key);
      if (last === fileNo) continue;
      this.seen.set(key, fileNo);
      cur.counts.uniqueInFileBytes += block.length;
      if (last === undefined) {
        cur.counts.newBytes += block.length;
        this.uniqueBlocks++;
        this.packer?.add(block);
      }
    }
  }

  get totals(): Omit<FileCounts, 'name' | 'uniqueInFileBytes'> {
    const sum = (f: (c: FileCounts) => number) => this.files.reduce((s, c) => s + f(c), 0);
    return {
      sizeBytes: sum((c) => c.sizeBytes),
      blocks: sum((c) => c.blocks),
      zeroBytes: sum((c) => c.zeroBytes),
      nonZeroBytes: sum((c) => c.nonZeroBytes),
      newBytes: sum((c) => c.newBytes),
    };
  }

  /** All files' indexes end to end, with the full digests or their 16-byte prefixes. */
  index(digestBytes: number): Buffer {
    const all = Buffer.concat(this.indexes);
    if (digestBytes === DIGEST_BYTES) return all;
    const out = Buffer.allocUnsafe((all.length / DIGEST_BYTES) * digestBytes);
    for (let i = 0, o = 0; i < all.length; i += DIGEST_BYTES, o += digestBytes) all.copy(out, o, i, i + digestBytes);
    return out;
  }
}

/** An image file the store would hold: a language's rootfs, or the kernel. */
export interface ImageFile {
  name: string;
  file: string;
}

const ROOTFS_FILE = /^rootfs-([a-z][a-z0-9-]{0,31})\.ext4$/;

/** The `rootfs-<lang>.ext4` files of a folder, by name. */
export function imagesIn(dir: string): ImageFile[] {
  let names: string[];
  try {
    names = fs.readdirSync(dir);
  } catch (err) {
    throw new Error(`cannot list the images in ${dir}`, { cause: err });
  }
  return names
    .map((n) => ROOTFS_FILE.exec(n))
    .filter((m): m is RegExpExecArray => m !== null && NAME_PATTERN.test(m[1]!))
    .map((m) => ({ name: m[1]!, file: path.join(dir, m[0]) }))
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

const ArtifactMeta = z.object({
  key: z.string().regex(/^image-[0-9a-f]{32}$/),
  step: z.literal('image'),
  createdAt: z.iso.datetime(),
  data: z.object({
    file: z.string().regex(ROOTFS_FILE),
    sizeBytes: z.number().int().nonnegative().optional(),
    origin: z.object({ packages: z.array(z.string()).optional() }).optional(),
  }),
});

const KeyInput = z.object({ input: z.record(z.string(), z.unknown()).optional() });

/** An image artifact of the build workspace: one build of one language. */
export interface ImageArtifact extends ImageFile {
  key: string;
  createdAt: string;
  packages?: string[];
  input?: Record<string, unknown>;
}

/** The image artifacts under `dir` (`image-<key>/meta.json` with step `image` and its rootfs file). */
export function imageArtifacts(dir: string): ImageArtifact[] {
  let entries: string[];
  try {
    entries = fs.readdirSync(dir);
  } catch (err) {
    throw new Error(`cannot list the artifacts in ${dir}`, { cause: err });
  }
  const out: ImageArtifact[] = [];
  for (const entry of entries.filter((e) => /^image-[0-9a-f]{32}$/.test(e))) {
    const metaFile = path.join(dir, entry, 'meta.json');
    if (!fs.existsSync(metaFile)) continue;
    let meta: z.infer<typeof ArtifactMeta>;
    try {
      meta = ArtifactMeta.parse(JSON.parse(fs.readFileSync(metaFile, 'utf8')));
    } catch (err) {
      throw new Error(`${metaFile} is not an image artifact's meta.json`, { cause: err });
    }
    const file = path.join(dir, entry, meta.data.file);
    if (meta.key !== entry || !fs.existsSync(file)) continue;
    let input: Record<string, unknown> | undefined;
    const keyInput = path.join(dir, entry, 'key-input.json');
    if (fs.existsSync(keyInput)) input = KeyInput.parse(JSON.parse(fs.readFileSync(keyInput, 'utf8'))).input;
    out.push({
      name: ROOTFS_FILE.exec(meta.data.file)![1]!,
      file,
      key: meta.key,
      createdAt: meta.createdAt,
      ...(meta.data.origin?.packages ? { packages: meta.data.origin.packages } : {}),
      ...(input ? { input } : {}),
    });
  }
  return out;
}

/** Per language, its newest two builds (older first); languages with one build go to `single`. */
export function newestPairs(artifacts: ImageArtifact[]): {
  pairs: Array<{ language: string; older: ImageArtifact; newer: ImageArtifact }>;
  single: string[];
} {
  const by = new Map<string, ImageArtifact[]>();
  for (const a of artifacts) by.set(a.name, [...(by.get(a.name) ?? []), a]);
  const pairs: Array<{ language: string; older: ImageArtifact; newer: ImageArtifact }> = [];
  const single: string[] = [];
  for (const language of [...by.keys()].sort()) {
    const list = by.get(language)!.sort((a, b) => Date.parse(a.createdAt) - Date.parse(b.createdAt));
    if (list.length < 2) single.push(language);
    else pairs.push({ language, older: list.at(-2)!, newer: list.at(-1)! });
  }
  return { pairs, single };
}

/** What differs between two builds' inputs and package lists, in a few words. */
export function changeBetween(older: ImageArtifact, newer: ImageArtifact): string {
  const parts: string[] = [];
  if (older.input && newer.input) {
    const keys = [...new Set([...Object.keys(older.input), ...Object.keys(newer.input)])].sort();
    const changed = keys.filter((k) => JSON.stringify(older.input![k]) !== JSON.stringify(newer.input![k]));
    if (changed.length) parts.push(`input ${changed.join(', ')}`);
  }
  if (older.packages && newer.packages) {
    const before = new Set(older.packages);
    const after = new Set(newer.packages);
    const n = [...after].filter((p) => !before.has(p)).length + [...before].filter((p) => !after.has(p)).length;
    parts.push(n ? `${n} package versions` : 'packages same');
  }
  return parts.join('; ') || 'unknown';
}
