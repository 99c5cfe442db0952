/**
 * bench/blocks: what issue 13's block store would hold and send, measured on the real images
 * before it is built. Not a test: it prints tables (and a last JSON line) to weigh the design by.
 *
 *   node dist/bench/blocks.js [--images DIR] [--kernel FILE] [--block 4096] [--frame-kib 1024]
 *       [--level 3] [--slow-level 19] [--slow-image LANG] [--artifacts DIR] [--jobs 2]
 *
 * It cuts every image and the kernel into fixed blocks (the given size, and 64 KiB and 512 KiB to
 * compare), skips zero blocks, names the others by sha256, and counts per image and across all of
 * them what is unique. The unique blocks, in first-seen order, are packed into frames of
 * `--frame-kib` raw bytes that the zstd command compresses one process per frame (`--jobs` at
 * once); the index is one digest per block. `--slow-level` compresses one image's blocks at that
 * level too (0 skips it). Then, when the artifacts folder holds two builds of a language, it counts
 * the blocks of the newer build that the older builds do not have: what a host would fetch.
 */
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { z } from 'zod';
import { Name } from '../src/config/schema';
import {
  BlockBytes,
  BlockLayout,
  changeBetween,
  DIGEST_BYTES,
  FramePacker,
  Hasher,
  imageArtifacts,
  type ImageFile,
  imagesIn,
  isZero,
  keyOf,
  newestPairs,
  readChunks,
  TRUNCATED_DIGEST_BYTES,
  ZstdPool,
} from './lib/blocks';

const KiB = 1024;
const MiB = 1024 * KiB;
const GiB = 1024 * MiB;
/** The bucket's plain objects today and the goal for a new host (five images + kernel). */
const TODAY_BYTES = 5.4 * GiB;
const GOAL_BYTES = 1.1 * GiB;
/** Issue 13: bytes after one language's image changed, as a share of that image's zstd size. */
const UPDATE_GOAL_SHARE = 0.1;
const COMPARE_BLOCKS = [64 * KiB, 512 * KiB];

const Options = z.object({
  images: z.string().min(1),
  kernel: z.string().min(1),
  block: BlockBytes,
  frameKiB: z
    .number()
    .int()
    .min(4)
    .max(64 * 1024),
  level: z.number().int().min(1).max(19),
  slowLevel: z.number().int().min(0).max(19),
  slowImage: Name.optional(),
  artifacts: z.string().min(1),
  jobs: z.number().int().min(1).max(64),
});
type Options = z.infer<typeof Options>;

function parseArgs(argv: string[]): Options {
  const raw: Record<string, unknown> = {
    images: '/srv/firecracker/images',
    kernel: '/srv/firecracker/vmlinux',
    block: 4096,
    frameKiB: 1024,
    level: 3,
    slowLevel: 19,
    artifacts: '/srv/firecracker/artifacts',
    jobs: 2,
  };
  const numbers: Record<string, string> = {
    '--block': 'block',
    '--frame-kib': 'frameKiB',
    '--level': 'level',
    '--slow-level': 'slowLevel',
    '--jobs': 'jobs',
  };
  const strings: Record<string, string> = {
    '--images': 'images',
    '--kernel': 'kernel',
    '--slow-image': 'slowImage',
    '--artifacts': 'artifacts',
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = argv[++i];
    if (v === undefined) throw new Error(`${a} needs a value (see the comment at the top of bench/blocks.ts)`);
    if (numbers[a]) raw[numbers[a]] = Number(v);
    else if (strings[a]) raw[strings[a]] = v;
    else throw new Error(`unknown argument ${a} (see the comment at the top of bench/blocks.ts)`);
  }
  const parsed = Options.safeParse(raw);
  if (!parsed.success) throw new Error(`bad arguments: ${z.prettifyError(parsed.error)}`);
  return { ...parsed.data, images: path.resolve(parsed.data.images), kernel: path.resolve(parsed.data.kernel) };
}

const seconds = (from: bigint) => Number(process.hrtime.bigint() - from) / 1e9;
const log = (msg: string) => console.error(`bench/blocks: ${msg}`);

function fmtBytes(b: number): string {
  if (b >= GiB) return `${(b / GiB).toFixed(2)} GiB`;
  if (b >= MiB) return `${(b / MiB).toFixed(1)} MiB`;
  if (b >= KiB) return `${(b / KiB).toFixed(1)} KiB`;
  return `${b} B`;
}
const fmtBlock = (b: number) => (b >= MiB ? `${b / MiB} MiB` : `${b / KiB} KiB`);
const pct = (part: number, whole: number) => (whole ? `${((100 * part) / whole).toFixed(1)}%` : '-');

/** A plain-text table: the first column left-aligned, the others right-aligned. */
function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (r: string[]) =>
    r
      .map((c, i) => (i === 0 ? c.padEnd(widths[i]!) : c.padStart(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n');
}

interface LayoutResult {
  blockBytes: number;
  totalBytes: number;
  blocks: number;
  zeroBytes: number;
  nonZeroBytes: number;
  uniqueBytes: number;
  uniqueBlocks: number;
  frames: number;
  packBytes: number;
  zstdProcessSeconds: number;
  hashMiBps: number;
  index: { entries: number; sha256Bytes: number; sha256ZstdBytes: number; truncBytes: number; truncZstdBytes: number };
  /** Packs plus the compressed index of full digests: what a new host downloads. */
  downloadBytes: number;
  files: Array<{
    name: string;
    sizeBytes: number;
    zeroBytes: number;
    nonZeroBytes: number;
    uniqueInFileBytes: number;
    newBytes: number;
  }>;
}

/** Experiment 1: all images and the kernel, one read each, every block size at once. */
async function layoutsOf(files: ImageFile[], opts: Options, pool: ZstdPool) {
  const sizes = [...new Set([opts.block, ...COMPARE_BLOCKS])].sort((a, b) => a - b);
  const layouts = sizes.map(
    (b) => new BlockLayout(b, new Hasher(), new FramePacker(opts.frameKiB * KiB, b, pool, opts.level)),
  );
  const started = process.hrtime.bigint();
  for (const f of files) {
    const size = fs.statSync(f.file).size;
    log(`reading ${f.name} (${fmtBytes(size)})`);
    for (const l of layouts) l.startFile(f.name, size);
    await readChunks(f.file, async (chunk) => {
      for (const l of layouts) l.addChunk(chunk);
      for (const l of layouts) await l.packer!.drain(opts.jobs * 4);
    });
  }
  const scanSeconds = seconds(started);
  for (const l of layouts) await l.packer!.finish();
  const packSeconds = seconds(started);
  const results: LayoutResult[] = [];
  for (const l of layouts) {
    const full = l.index(DIGEST_BYTES);
    const trunc = l.index(TRUNCATED_DIGEST_BYTES);
    const zargs = [`-${opts.level}`, '-c', '-T1'];
    const [fullZ, truncZ] = await Promise.all([pool.run(zargs, full), pool.run(zargs, trunc)]);
    const t = l.totals;
    const packer = l.packer!;
    results.push({
      blockBytes: l.blockBytes,
      totalBytes: t.sizeBytes,
      blocks: t.blocks,
      zeroBytes: t.zeroBytes,
      nonZeroBytes: t.nonZeroBytes,
      uniqueBytes: t.newBytes,
      uniqueBlocks: l.uniqueBlocks,
      frames: packer.frames,
      packBytes: packer.packedBytes,
      zstdProcessSeconds: packer.zstdMs / 1000,
      hashMiBps: l.hasher.bytes / MiB / l.hasher.seconds,
      index: {
        entries: t.blocks,
        sha256Bytes: full.length,
        sha256ZstdBytes: fullZ.bytes,
        truncBytes: trunc.length,
        truncZstdBytes: truncZ.bytes,
      },
      downloadBytes: packer.packedBytes + fullZ.bytes,
      files: l.files.map((c) => ({
        name: c.name,
        sizeBytes: c.sizeBytes,
        zeroBytes: c.zeroBytes,
        nonZeroBytes: c.nonZeroBytes,
        uniqueInFileBytes: c.uniqueInFileBytes,
        newBytes: c.newBytes,
      })),
    });
    if (packer.rawBytes !== t.newBytes)
      throw new Error(`packed ${packer.rawBytes} bytes but counted ${t.newBytes} unique (block ${l.blockBytes})`);
  }
  return { results, scanSeconds, packSeconds };
}

/** One image's own unique blocks compressed at the usual level and at a slow one, in the same frames. */
async function levelCompare(image: ImageFile, opts: Options, pool: ZstdPool) {
  const levels = [opts.level, opts.slowLevel];
  const packers = levels.map((lv) => new FramePacker(opts.frameKiB * KiB, opts.block, pool, lv));
  const seen = new Set<string>();
  const hasher = new Hasher();
  log(`compressing ${image.name}'s blocks at levels ${levels.join(' and ')}`);
  await readChunks(image.file, async (chunk) => {
    for (let off = 0; off < chunk.length; off += opts.block) {
      const block = chunk.subarray(off, off + opts.block);
      if (isZero(block)) continue;
      const key = keyOf(hasher.digest(block));
      if (seen.has(key)) continue;
      seen.add(key);
      for (const p of packers) p.add(block);
    }
    for (const p of packers) await p.drain(opts.jobs * 2);
  });
  for (const p of packers) await p.finish();
  return {
    image: image.name,
    blockBytes: opts.block,
    rawBytes: packers[0]!.rawBytes,
    frames: packers[0]!.frames,
    levels: packers.map((p, i) => ({
      level: levels[i]!,
      packBytes: p.packedBytes,
      zstdProcessSeconds: p.zstdMs / 1000,
    })),
  };
}

interface UpdateRow {
  language: string;
  older: string;
  newer: string;
  changed: string;
  sizeBytes: number;
  nonZeroBytes: number;
  uniqueBytes: number;
  imageZstdBytes: number;
  /** Blocks of the newer build missing from the older build of the same language. */
  newVsSame: { bytes: number; packBytes: number };
  /** Blocks of the newer build missing from every older build in the comparison (a host that has them all). */
  newVsAll: { bytes: number; packBytes: number };
}

/**
 * Experiment 2: per language, the newest build against the one before. The older builds of every
 * language are read first (their digests only); then each newer build, whose blocks missing from
 * them are counted and packed like a new pack would be.
 */
async function updates(opts: Options, pool: ZstdPool): Promise<{ rows: UpdateRow[]; single: string[] } | string> {
  if (!fs.existsSync(opts.artifacts)) return `no artifacts folder at ${opts.artifacts}`;
  const { pairs, single } = newestPairs(imageArtifacts(opts.artifacts));
  if (!pairs.length) return `one build per language only in ${opts.artifacts} (${single.join(', ') || 'none'})`;
  if (pairs.length > 30) throw new Error(`${pairs.length} languages: more than the 30 the bit masks hold`);
  const bs = opts.block;
  const hasher = new Hasher();
  /** Digest key → bit i set when the older build of pairs[i] has the block. */
  const older = new Map<string, number>();
  for (const [i, p] of pairs.entries()) {
    log(`reading the older ${p.language} build ${p.older.key}`);
    await readChunks(p.older.file, (chunk) => {
      for (let off = 0; off < chunk.length; off += bs) {
        const block = chunk.subarray(off, off + bs);
        if (isZero(block)) continue;
        const key = keyOf(hasher.digest(block));
        older.set(key, (older.get(key) ?? 0) | (1 << i));
      }
    });
  }
  const rows: UpdateRow[] = [];
  for (const [i, p] of pairs.entries()) {
    log(`reading the newer ${p.language} build ${p.newer.key}`);
    const imageZstd = pool.run([`-${opts.level}`, '-c', '-T1', '--', p.newer.file]);
    const same = new FramePacker(opts.frameKiB * KiB, bs, pool, opts.level);
    const all = new FramePacker(opts.frameKiB * KiB, bs, pool, opts.level);
    const seen = new Set<string>();
    let nonZeroBytes = 0;
    let uniqueBytes = 0;
    let sameBytes = 0;
    let allBytes = 0;
    const sizeBytes = await readChunks(p.newer.file, async (chunk) => {
      for (let off = 0; off < chunk.length; off += bs) {
        const block = chunk.subarray(off, off + bs);
        if (isZero(block)) continue;
        nonZeroBytes += block.length;
        const key = keyOf(hasher.digest(block));
        if (seen.has(key)) continue;
        seen.add(key);
        uniqueBytes += block.length;
        const mask = older.get(key) ?? 0;
        if ((mask & (1 << i)) === 0) {
          sameBytes += block.length;
          same.add(block);
        }
        if (mask === 0) {
          allBytes += block.length;
          all.add(block);
        }
      }
      await same.drain(opts.jobs * 2);
      await all.drain(opts.jobs * 2);
    });
    await same.finish();
    await all.finish();
    rows.push({
      language: p.language,
      older: p.older.key,
      newer: p.newer.key,
      changed: changeBetween(p.older, p.newer),
      sizeBytes,
      nonZeroBytes,
      uniqueBytes,
      imageZstdBytes: (await imageZstd).bytes,
      newVsSame: { bytes: sameBytes, packBytes: same.packedBytes },
      newVsAll: { bytes: allBytes, packBytes: all.packedBytes },
    });
  }
  return { rows, single };
}

async function main(): Promise<void> {
  const started = process.hrtime.bigint();
  const opts = parseArgs(process.argv.slice(2));
  const images = imagesIn(opts.images);
  if (!images.length) throw new Error(`no rootfs-<lang>.ext4 in ${opts.images}`);
  if (!fs.existsSync(opts.kernel)) throw new Error(`no kernel at ${opts.kernel}`);
  const files = [...images, { name: path.basename(opts.kernel), file: opts.kernel }];
  const pool = new ZstdPool(opts.jobs);

  const { results, scanSeconds, packSeconds } = await layoutsOf(files, opts, pool);
  const primary = results.find((r) => r.blockBytes === opts.block)!;

  let compare: Awaited<ReturnType<typeof levelCompare>> | undefined;
  if (opts.slowLevel > 0) {
    const slowName =
      opts.slowImage ??
      [...primary.files.slice(0, images.length)].sort((a, b) => a.nonZeroBytes - b.nonZeroBytes)[0]!.name;
    const image = images.find((i) => i.name === slowName);
    if (!image) throw new Error(`--slow-image ${slowName}: no rootfs-${slowName}.ext4 in ${opts.images}`);
    compare = await levelCompare(image, opts, pool);
  }
  const update = await updates(opts, pool);
  const wallSeconds = seconds(started);

  const out: string[] = [];
  const p = (s = '') => out.push(s);
  p(
    `bench/blocks: ${images.length} images + ${path.basename(opts.kernel)} from ${opts.images}; ` +
      `frames of ${opts.frameKiB} KiB, zstd -${opts.level} (the command, ${opts.jobs} at once); ` +
      `${os.cpus().length} cores, ${new Date().toISOString()}`,
  );
  p();
  p(`Per image, blocks of ${fmtBlock(opts.block)} (zero blocks are not stored)`);
  p(
    table(
      ['image', 'size', 'zero', 'non-zero', 'unique in image', 'new to the store'],
      primary.files.map((f) => [
        f.name,
        fmtBytes(f.sizeBytes),
        fmtBytes(f.zeroBytes),
        fmtBytes(f.nonZeroBytes),
        fmtBytes(f.uniqueInFileBytes),
        fmtBytes(f.newBytes),
      ]),
    ),
  );
  p('("new to the store": what the image adds after those above it.)');
  p();
  p(`All ${images.length} images + kernel, by block size`);
  p(
    table(
      ['block', 'total', 'zero skipped', 'non-zero', 'unique', 'frames', `zstd -${opts.level}`, 'ratio', 'zstd proc s'],
      results.map((r) => [
        fmtBlock(r.blockBytes),
        fmtBytes(r.totalBytes),
        fmtBytes(r.zeroBytes),
        fmtBytes(r.nonZeroBytes),
        fmtBytes(r.uniqueBytes),
        String(r.frames),
        fmtBytes(r.packBytes),
        pct(r.packBytes, r.uniqueBytes),
        r.zstdProcessSeconds.toFixed(1),
      ]),
    ),
  );
  p();
  p('Index: one digest per block, zero blocks included (as zero digests)');
  p(
    table(
      ['block', 'entries', 'sha256 (32 B)', 'zstd', '16-byte prefix', 'zstd'],
      results.map((r) => [
        fmtBlock(r.blockBytes),
        String(r.index.entries),
        fmtBytes(r.index.sha256Bytes),
        fmtBytes(r.index.sha256ZstdBytes),
        fmtBytes(r.index.truncBytes),
        fmtBytes(r.index.truncZstdBytes),
      ]),
    ),
  );
  p();
  p(`Goal: bytes a new host downloads for ${images.length} images + kernel`);
  p(
    table(
      ['layout', 'bytes', 'of today', 'goal met'],
      [
        ['plain objects today (issue 13)', fmtBytes(TODAY_BYTES), '100%', ''],
        [`plain objects, measured here`, fmtBytes(primary.totalBytes), pct(primary.totalBytes, TODAY_BYTES), ''],
        ...results.map((r) => [
          `${fmtBlock(r.blockBytes)} blocks: packs + zstd index`,
          fmtBytes(r.downloadBytes),
          pct(r.downloadBytes, TODAY_BYTES),
          r.downloadBytes <= GOAL_BYTES ? 'yes' : 'no',
        ]),
        ['goal', fmtBytes(GOAL_BYTES), pct(GOAL_BYTES, TODAY_BYTES), ''],
      ],
    ),
  );
  p();
  if (compare) {
    p(`zstd levels on ${compare.image}'s own unique blocks (${fmtBytes(compare.rawBytes)}, ${compare.frames} frames)`);
    p(
      table(
        ['level', 'packs', 'ratio', 'zstd proc s', 'MiB/s per process'],
        compare.levels.map((l) => [
          `-${l.level}`,
          fmtBytes(l.packBytes),
          pct(l.packBytes, compare.rawBytes),
          l.zstdProcessSeconds.toFixed(1),
          (compare.rawBytes / MiB / l.zstdProcessSeconds).toFixed(0),
        ]),
      ),
    );
    p();
  }
  const frames = results.reduce((s, r) => s + r.frames, 0);
  const frameSeconds = results.reduce((s, r) => s + r.zstdProcessSeconds, 0);
  p('Time');
  p(
    `  sha256 (node crypto, one hash per block): ` +
      results.map((r) => `${fmtBlock(r.blockBytes)} ${r.hashMiBps.toFixed(0)} MiB/s`).join(', '),
  );
  p(
    `  zstd command: ${frames} frames, ${((1000 * frameSeconds) / frames).toFixed(1)} ms per frame ` +
      `(spawn to exit), ${frameSeconds.toFixed(1)} process-seconds for all block sizes`,
  );
  p(
    `  read + hash of all block sizes ${scanSeconds.toFixed(1)} s, until the last frame ` +
      `${packSeconds.toFixed(1)} s; whole run ${wallSeconds.toFixed(1)} s (${pool.spawned} zstd processes)`,
  );
  p();
  p(`Update: the newest build of a language against the one before (${fmtBlock(opts.block)} blocks)`);
  if (typeof update === 'string') p(`  skipped: ${update}`);
  else {
    p(
      table(
        ['language', 'changed', 'image zstd', 'new vs its older', 'zstd', 'new vs all older', 'zstd', 'of image zstd'],
        update.rows.map((r) => [
          r.language,
          r.changed,
          fmtBytes(r.imageZstdBytes),
          fmtBytes(r.newVsSame.bytes),
          fmtBytes(r.newVsSame.packBytes),
          fmtBytes(r.newVsAll.bytes),
          fmtBytes(r.newVsAll.packBytes),
          pct(r.newVsAll.packBytes, r.imageZstdBytes),
        ]),
      ),
    );
    p(
      `  ("all older": the previous build of every language listed; the goal is ≤ ${pct(UPDATE_GOAL_SHARE, 1)} ` +
        `of the image's zstd size, the plain image compressed whole.)`,
    );
    if (update.single.length) p(`  one build only, skipped: ${update.single.join(', ')}`);
  }
  p();
  console.log(out.join('\n'));
  console.log(
    JSON.stringify({
      bench: 'blocks',
      blockBytes: opts.block,
      frameKiB: opts.frameKiB,
      level: opts.level,
      layouts: results,
      todayBytes: TODAY_BYTES,
      goalBytes: GOAL_BYTES,
      levelCompare: compare ?? null,
      update: typeof update === 'string' ? { skipped: update } : update,
      zstdProcesses: pool.spawned,
      scanSeconds,
      wallSeconds,
    }),
  );
}

main().catch((err: unknown) => {
  console.error('bench/blocks failed:', err);
  process.exit(1);
});
