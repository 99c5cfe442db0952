import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { makeImage } from '../support/image';
import { tempDir } from '../support/process';
import { benchPath, run } from './run';

interface Figures {
  upload: Record<'project' | 'projectDigestCached' | 's5cmd' | 'aws', number>;
  download: Record<'project' | 's5cmd' | 'aws', number>;
  downloadAllocatedBytes: Record<'project' | 's5cmd' | 'aws', number>;
  uploadRatio: Record<'s5cmd' | 'aws' | 's5cmdDigestCached', number>;
  downloadRatio: Record<'s5cmd' | 'aws', number>;
}

/**
 * bench/transfer in its quick form, for real: its own MinIO, the project's store functions,
 * s5cmd and aws, on a small sparse ext4 image. Nothing is asserted about time, only that the
 * bench completes and prints its tables and its JSON line with every tool's figures.
 */
describe('bench: transfer (quick)', function () {
  this.timeout(180_000);

  it('uploads and downloads a sparse ext4 image with the three tools and prints the table and the JSON line', async () => {
    const dir = tempDir('bench-transfer');
    const tree = path.join(dir, 'tree');
    fs.mkdirSync(path.join(tree, 'etc'), { recursive: true });
    fs.writeFileSync(path.join(tree, 'etc', 'hostname'), 'localhost\n');
    fs.writeFileSync(path.join(tree, 'etc', 'blob'), Buffer.alloc(2 << 20, 'x'));
    const images = path.join(dir, 'images');
    fs.mkdirSync(images);
    const image = makeImage(tree, path.join(images, 'rootfs-bash.ext4'), '48M');
    const st = fs.statSync(image);
    assert.ok(st.blocks * 512 < st.size / 2, 'the fixture image is sparse');

    const r = await run(process.execPath, [benchPath('transfer.js', true), '--quick', '--images', images]);
    assert.equal(r.code, 0, `${r.stderr}\n${r.stdout}`);
    const lines = r.stdout.trimEnd().split('\n');

    const header = (first: string) => lines.find((l) => l.startsWith(`| ${first}`))!;
    const up = lines.findIndex((l) => l.startsWith('Upload: median seconds of 1 round(s)'));
    const down = lines.findIndex((l) => l.startsWith('Download: median seconds of 1 round(s)'));
    assert.ok(up >= 0 && down > up, r.stdout);
    for (const tool of ['project', 'project, digest cached', 's5cmd', 'aws', 'project/s5cmd', 'project/aws'])
      assert.ok(lines[up + 1]!.includes(` ${tool} `), `upload header has ${tool}: ${lines[up + 1]}`);
    for (const tool of ['project', 's5cmd', 'aws', 'on disk: project', 'on disk: s5cmd', 'on disk: aws'])
      assert.ok(lines[down + 1]!.includes(` ${tool} `), `download header has ${tool}: ${lines[down + 1]}`);
    assert.match(lines[up + 3]!, /^\| bash +\| +48 MiB \|/);
    assert.match(lines[down + 3]!, /^\| bash +\|/);
    // Fixed columns: every line of a table is as long as its header.
    for (const start of [up + 1, down + 1])
      for (const l of lines.slice(start, start + 3)) assert.equal(l.length, lines[start]!.length, l);
    assert.ok(header('image'));
    assert.match(r.stdout, /digest/, 'the output says what the digest cache does');

    const json = JSON.parse(lines.at(-1)!) as {
      bench: string;
      runs: number;
      quick: boolean;
      images: Record<string, Figures & { sizeBytes: number }>;
    };
    assert.equal(json.bench, 'transfer');
    assert.equal(json.runs, 1);
    assert.equal(json.quick, true);
    assert.deepEqual(Object.keys(json.images), ['bash']);
    const bash = json.images.bash!;
    assert.equal(bash.sizeBytes, st.size);
    for (const group of [bash.upload, bash.download, bash.uploadRatio, bash.downloadRatio, bash.downloadAllocatedBytes])
      for (const [tool, n] of Object.entries(group)) assert.ok(Number.isFinite(n) && n > 0, `${tool}: ${n}`);
    assert.deepEqual(Object.keys(bash.upload).sort(), ['aws', 'project', 'projectDigestCached', 's5cmd']);
    assert.deepEqual(Object.keys(bash.download).sort(), ['aws', 'project', 's5cmd']);
    // The project's download stays sparse.
    assert.ok(
      bash.downloadAllocatedBytes.project < st.size / 2,
      `${bash.downloadAllocatedBytes.project} bytes on disk`,
    );
  });

  it('refuses a bad --runs, and a directory without the bash image, saying why', async () => {
    const bad = await run(process.execPath, [benchPath('transfer.js', true), '--runs', '0']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /runs/);
    const empty = tempDir('bench-transfer-empty');
    const none = await run(process.execPath, [benchPath('transfer.js', true), '--quick', '--images', empty]);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /no rootfs-bash\.ext4 in /);
  });
});
