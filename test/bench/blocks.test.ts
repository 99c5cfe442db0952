import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { projectRoot } from '../../src/util/paths';
import { tempDir } from '../support/process';

const KiB = 1024;
const UNIT = 4 * KiB;
const SCRIPT = path.join(projectRoot(), 'dist', 'bench', 'blocks.js');

/**
 * Images described as 4 KiB units by label: `Z` is zeros, `H` half zeros and half random, any
 * other label the same random 4 KiB wherever it appears. The expected figures below are counted
 * from the labels alone, not by hashing.
 */
class Units {
  private readonly content = new Map<string, Buffer>();

  bytes(labels: string[]): Buffer {
    return Buffer.concat(labels.map((l) => this.unit(l)));
  }

  private unit(label: string): Buffer {
    if (label === 'Z') return Buffer.alloc(UNIT);
    let b = this.content.get(label);
    if (!b) {
      b =
        label === 'H'
          ? Buffer.concat([Buffer.alloc(UNIT / 2), crypto.randomBytes(UNIT / 2)])
          : crypto.randomBytes(UNIT);
      this.content.set(label, b);
    }
    return b;
  }
}

const run = (prefix: string, from: number, n: number) => Array.from({ length: n }, (_, i) => `${prefix}${from + i}`);
const zeros = (n: number) => Array<string>(n).fill('Z');
const UNITS = 2048; // 8 MiB images

/** rootfs-a: data, a zero MiB, more data, a repeat of its first 64 KiB, a half-zero unit, zeros. */
const imageA = [...run('R', 0, 128), ...zeros(256), ...run('R', 128, 128), ...run('R', 0, 16), 'H', ...zeros(1519)];
/** rootfs-b: a's first 512 KiB with one unit changed, its own data, a's second run elsewhere, a repeat. */
const imageB = [
  ...run('R', 0, 5),
  'D',
  ...run('R', 6, 122),
  ...run('S', 0, 128),
  ...zeros(1280),
  ...run('R', 128, 128),
  ...run('S', 0, 16),
  'S200',
  'Z',
  'S201',
  ...zeros(365),
];
const KERNEL_BYTES = 10_000;
/** The random content of both images and the kernel: 256 R, 128 S, S200, S201 and D units, half of H. */
const RANDOM_BYTES = 387 * UNIT + UNIT / 2 + KERNEL_BYTES;

interface Expected {
  zeroBytes: number;
  nonZeroBytes: number;
  uniqueInFileBytes: number;
  newBytes: number;
}

/** The figures for blocks of `bs` bytes, from the labels: a block is the labels of its units. */
function expected(images: string[][], bs: number): Expected[] {
  const per = bs / UNIT;
  const store = new Set<string>();
  return images.map((units) => {
    const e: Expected = { zeroBytes: 0, nonZeroBytes: 0, uniqueInFileBytes: 0, newBytes: 0 };
    const own = new Set<string>();
    for (let i = 0; i < units.length; i += per) {
      const labels = units.slice(i, i + per);
      const id = labels.join(',');
      if (labels.every((l) => l === 'Z')) {
        e.zeroBytes += bs;
        continue;
      }
      e.nonZeroBytes += bs;
      if (!own.has(id)) e.uniqueInFileBytes += bs;
      own.add(id);
      if (!store.has(id)) e.newBytes += bs;
      store.add(id);
    }
    return e;
  });
}

interface Layout {
  blockBytes: number;
  totalBytes: number;
  zeroBytes: number;
  nonZeroBytes: number;
  uniqueBytes: number;
  frames: number;
  packBytes: number;
  index: { entries: number; sha256Bytes: number; truncBytes: number; sha256ZstdBytes: number };
  downloadBytes: number;
  files: Array<Expected & { name: string; sizeBytes: number }>;
}

interface Report {
  layouts: Layout[];
  levelCompare: { image: string; rawBytes: number; levels: Array<{ level: number; packBytes: number }> };
  update: {
    rows: Array<{
      language: string;
      changed: string;
      uniqueBytes: number;
      imageZstdBytes: number;
      newVsSame: { bytes: number; packBytes: number };
      newVsAll: { bytes: number; packBytes: number };
    }>;
    single: string[];
  };
}

function runScript(args: string[]): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [SCRIPT, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString('utf8')));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString('utf8')));
    child.once('error', reject);
    child.once('close', (code) => resolve({ code, stdout, stderr }));
  });
}

/** An image artifact folder as the build writes it: meta.json, key-input.json and the rootfs. */
function writeArtifact(
  dir: string,
  language: string,
  createdAt: string,
  content: Buffer,
  input: Record<string, unknown>,
  packages: string[],
): void {
  const key = `image-${crypto.randomBytes(16).toString('hex')}`;
  const file = `rootfs-${language}.ext4`;
  fs.mkdirSync(path.join(dir, key), { recursive: true });
  fs.writeFileSync(path.join(dir, key, file), content);
  const meta = { key, step: 'image', createdAt, data: { file, sizeBytes: content.length, origin: { packages } } };
  fs.writeFileSync(path.join(dir, key, 'meta.json'), JSON.stringify(meta));
  fs.writeFileSync(path.join(dir, key, 'key-input.json'), JSON.stringify({ key, language, input }));
}

describe('bench/blocks', () => {
  let dir: string;
  let report: Report;
  let stdout: string;
  const units = new Units();
  // The newer build of a: one unit new anywhere, one taken from b's older build, one now zero.
  const imageA2 = [...imageA];
  imageA2[0] = 'X';
  imageA2[1] = 'S5';
  imageA2[384] = 'Z';

  before(async () => {
    dir = tempDir('bench-blocks');
    const images = path.join(dir, 'images');
    const artifacts = path.join(dir, 'artifacts');
    fs.mkdirSync(images);
    fs.mkdirSync(artifacts);
    assert.equal(imageA.length, UNITS);
    assert.equal(imageB.length, UNITS);
    fs.writeFileSync(path.join(images, 'rootfs-a.ext4'), units.bytes(imageA));
    fs.writeFileSync(path.join(images, 'rootfs-b.ext4'), units.bytes(imageB));
    fs.writeFileSync(path.join(images, 'vmlinux'), crypto.randomBytes(KERNEL_BYTES));
    fs.writeFileSync(path.join(images, 'notes.txt'), 'not an image');

    const input = (language: string, operatorKey: string) => ({ recipe: 2, operatorKey, language });
    writeArtifact(artifacts, 'a', '2026-01-01T10:00:00.000Z', units.bytes(imageB), input('a', 'op-0'), ['p 1']);
    writeArtifact(artifacts, 'a', '2026-01-01T11:00:00.000Z', units.bytes(imageA), input('a', 'op-1'), ['p 1', 'q 1']);
    writeArtifact(artifacts, 'a', '2026-01-01T12:00:00.000Z', units.bytes(imageA2), input('a', 'op-2'), ['p 1', 'q 2']);
    writeArtifact(artifacts, 'b', '2026-01-01T11:00:00.000Z', units.bytes(imageB), input('b', 'op-1'), ['p 1']);
    writeArtifact(artifacts, 'b', '2026-01-01T12:00:00.000Z', units.bytes(imageB), input('b', 'op-1'), ['p 1']);
    writeArtifact(artifacts, 'c', '2026-01-01T12:00:00.000Z', units.bytes(imageA), input('c', 'op-1'), ['p 1']);

    const args = ['--images', images, '--kernel', path.join(images, 'vmlinux'), '--artifacts', artifacts];
    const res = await runScript([...args, '--frame-kib', '256', '--slow-image', 'a']);
    assert.equal(res.code, 0, res.stderr);
    stdout = res.stdout;
    report = JSON.parse(stdout.trim().split('\n').at(-1)!) as Report;
  });

  for (const bs of [4 * KiB, 64 * KiB, 512 * KiB]) {
    it(`counts zero, non-zero and unique bytes exactly with ${bs / KiB} KiB blocks`, () => {
      const layout = report.layouts.find((l) => l.blockBytes === bs);
      assert.ok(layout, `a layout for ${bs}`);
      const want = expected([imageA, imageB], bs);
      const kernel = {
        zeroBytes: 0,
        nonZeroBytes: KERNEL_BYTES,
        uniqueInFileBytes: KERNEL_BYTES,
        newBytes: KERNEL_BYTES,
      };
      assert.deepEqual(
        layout.files.map((f) => f.name),
        ['a', 'b', 'vmlinux'],
      );
      for (const [i, w] of [...want, kernel].entries()) {
        const f: Layout['files'][number] = layout.files[i]!;
        const got: Expected = {
          zeroBytes: f.zeroBytes,
          nonZeroBytes: f.nonZeroBytes,
          uniqueInFileBytes: f.uniqueInFileBytes,
          newBytes: f.newBytes,
        };
        assert.deepEqual(got, w, `${f.name} with ${bs} B blocks`);
      }
      const unique = want.reduce((s, e) => s + e.newBytes, 0) + KERNEL_BYTES;
      assert.equal(layout.uniqueBytes, unique);
      assert.equal(
        layout.zeroBytes,
        want.reduce((s, e) => s + e.zeroBytes, 0),
      );
      assert.equal(layout.nonZeroBytes, want.reduce((s, e) => s + e.nonZeroBytes, 0) + KERNEL_BYTES);
      assert.equal(layout.totalBytes, 2 * UNITS * UNIT + KERNEL_BYTES);

      const entries = (2 * UNITS * UNIT) / bs + Math.ceil(KERNEL_BYTES / bs);
      assert.equal(layout.index.entries, entries);
      assert.equal(layout.index.sha256Bytes, entries * 32);
      assert.equal(layout.index.truncBytes, entries * 16);
      assert.ok(layout.index.sha256ZstdBytes > 0 && layout.index.sha256ZstdBytes < entries * 32);

      // Every unique byte went through zstd once, in whole blocks: at least the random content of
      // every label (frames are compressed apart, so nothing is shared between them), hardly more
      // than the raw bytes.
      assert.equal(layout.frames, Math.ceil(unique / Math.max(256 * KiB, bs)));
      assert.ok(layout.packBytes >= RANDOM_BYTES, `${layout.packBytes} packed, ${RANDOM_BYTES} random`);
      assert.ok(layout.packBytes < unique + layout.frames * 200, `${layout.packBytes} packed for ${unique} unique`);
      assert.equal(layout.downloadBytes, layout.packBytes + layout.index.sha256ZstdBytes);
    });
  }

  it('the 4 KiB figures are the ones worked out by hand', () => {
    const layout = report.layouts.find((l) => l.blockBytes === 4 * KiB)!;
    // a: 128 + 128 + H distinct units (the 16-unit repeat counts once); b: D and 128 S units and S200,
    // S201 are new, the rest of its data is a's; the kernel's 10 000 bytes are three blocks.
    assert.equal(layout.files[0]!.uniqueInFileBytes, 257 * UNIT);
    assert.equal(layout.files[1]!.newBytes, 131 * UNIT);
    assert.equal(layout.uniqueBytes, (257 + 131) * UNIT + KERNEL_BYTES);
    assert.equal(layout.zeroBytes, (256 + 1519 + 1280 + 1 + 365) * UNIT);
  });

  it('compresses the chosen image at both levels', () => {
    assert.equal(report.levelCompare.image, 'a');
    assert.equal(report.levelCompare.rawBytes, 257 * UNIT);
    assert.deepEqual(
      report.levelCompare.levels.map((l) => l.level),
      [3, 19],
    );
    // 256 random units and half of H, each frame compressed on its own.
    for (const l of report.levelCompare.levels) assert.ok(l.packBytes >= 256.5 * UNIT, `level ${l.level}`);
  });

  it('counts what the newest build of a language adds to the builds before it', () => {
    assert.deepEqual(report.update.single, ['c']);
    const [a, b] = report.update.rows;
    assert.equal(a?.language, 'a');
    // Against a's build before (imageA): X and S5 are new; against every older build (b's too) only X.
    assert.equal(a.newVsSame.bytes, 2 * UNIT);
    assert.equal(a.newVsAll.bytes, UNIT);
    assert.ok(a.newVsAll.packBytes >= UNIT && a.newVsAll.packBytes < UNIT + 200, `${a.newVsAll.packBytes}`);
    assert.ok(a.newVsSame.packBytes >= 2 * UNIT && a.newVsSame.packBytes < 2 * UNIT + 200);
    assert.equal(a.uniqueBytes, 258 * UNIT); // R0 and R1 remain in the repeated run
    assert.equal(a.changed, 'input operatorKey; 2 package versions');
    assert.ok(a.imageZstdBytes > 257 * UNIT, `image zstd ${a.imageZstdBytes}`);
    assert.equal(b?.language, 'b');
    assert.equal(b.changed, 'packages same');
    assert.deepEqual([b.newVsSame.bytes, b.newVsAll.bytes], [0, 0]);
  });

  it('prints the tables with the goal rows', () => {
    assert.match(stdout, /^Per image, blocks of 4 KiB/m);
    assert.match(stdout, /^goal\s+1\.10 GiB/m);
    assert.match(stdout, /one build only, skipped: c/);
  });

  it('refuses a block size that is not a power of two, saying why', async () => {
    const res = await runScript(['--images', dir, '--block', '3000']);
    assert.equal(res.code, 1);
    assert.match(res.stderr, /power of two/);
  });
});
