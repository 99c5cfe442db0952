import { strict as assert } from 'node:assert';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import type { S3Config } from '../../src/config';
import { spawn } from 'node:child_process';
import { stringify } from 'yaml';
import {
  createClient,
  fileDigest,
  formatListing,
  listBucket,
  syncDown,
  uploadAll,
  type StoreContext,
} from '../../src/store';
import { promisify } from 'node:util';
import { execFile } from 'node:child_process';
import { CLI } from '../support/cli';
import { checkoutFetcher } from '../support/guest-image';
import {
  planBlocks,
  publishBlocks,
  pruneStore,
  readHead,
  readRecord,
  rollback,
  syncBlocks,
  type IndexManifest,
} from '../../src/store/blocks';
import { listPrefix } from '../../src/store/blocks/objects';
import { partialOf } from '../../src/store/blocks/paths';
import { testS3, type TestS3 } from '../support/s3';
import { allocated, MiB, randomFile, rootfs, sha256File, sparseFile, workspace } from './helpers';

const execFileP = promisify(execFile);

/** A manifest as the upload would write it, for a file of the given digest. */
const manifestFor = (key: string, d: { sizeBytes: number; sha256: string; crc32?: string }): IndexManifest => ({
  format: 1,
  key,
  kind: key === 'vmlinux' ? 'kernel' : 'image',
  ...(key === 'vmlinux' ? {} : { language: /^rootfs-(.+)\.ext4$/.exec(key)![1] }),
  sizeBytes: d.sizeBytes,
  sha256: d.sha256,
  crc32: d.crc32!,
  versions: ['v1'],
  builtAt: '2026-11-24T00:00:00.000Z',
});

/** Changes `count` scattered 4 KiB blocks of `file` (in its data regions) in place. */
function touchBlocks(file: string, offsets: number[]): void {
  const fd = fs.openSync(file, 'r+');
  for (const off of offsets) fs.writeSync(fd, crypto.randomBytes(4096), 0, 4096, off);
  fs.closeSync(fd);
}

describe('store: the block store against a real S3 @real', function () {
  this.timeout(300_000);
  let s3: TestS3;
  let config: S3Config;
  let client: S3Client;
  const ctx = (ws: string): StoreContext => ({ client, config, workspace: ws });

  async function publish(ws: string, key: string, file: string) {
    const digest = await fileDigest(file, { crc32: true });
    return publishBlocks(ctx(ws), {
      file,
      key,
      digest: { ...digest, crc32: digest.crc32! },
      manifest: manifestFor(key, digest),
    });
  }
  async function sync(ws: string, key: string) {
    const planned = await planBlocks(ctx(ws), key);
    assert.ok(planned, `no head for ${key}`);
    return syncBlocks(ctx(ws), planned);
  }

  before(async () => {
    s3 = await testS3();
    config = await s3.freshBucket();
    client = createClient({ config, credentials: s3.credentials });
  });
  after(() => client?.destroy());

  let src: string;
  let python: string;
  let bash: string;
  let host: string;
  before(() => {
    src = workspace('blocks-src');
    python = path.join(src, 'images/rootfs-python.ext4');
    bash = path.join(src, 'images/rootfs-bash.ext4');
    host = workspace('blocks-host');
  });

  it('publishes two images sharing blocks: the second stores only what the first lacks', async () => {
    // 64 MiB files, 12 MiB of data each; bash shares its first 8 MiB with python.
    sparseFile(python, 64 * MiB, [
      [0, 8 * MiB],
      [32 * MiB, 4 * MiB],
    ]);
    fs.copyFileSync(python, bash);
    fs.truncateSync(bash, 48 * MiB);
    sparseFile(path.join(src, 'extra'), 4 * MiB, [[0, 4 * MiB]]);
    const fd = fs.openSync(bash, 'r+');
    fs.writeSync(fd, fs.readFileSync(path.join(src, 'extra')), 0, 4 * MiB, 40 * MiB);
    fs.closeSync(fd);

    const p = await publish(src, 'rootfs-python.ext4', python);
    assert.equal(p.status, 'published');
    assert.equal(p.dataBlocks, (12 * MiB) / 4096);
    assert.equal(p.newBlocks, p.dataBlocks);
    // Random data does not compress: the pack is about the data, never the 64 MiB.
    assert.ok(p.packBytes > 12 * MiB && p.packBytes < 13 * MiB, `pack ${p.packBytes}`);
    const b = await publish(src, 'rootfs-bash.ext4', bash);
    assert.equal(b.status, 'published');
    // bash holds both of python's regions (12 MiB) and 4 MiB of its own.
    assert.equal(b.newBlocks, (4 * MiB) / 4096);
    assert.ok(b.packBytes < 4.2 * MiB, `bash's pack ${b.packBytes}`);

    const again = await publish(src, 'rootfs-python.ext4', python);
    assert.equal(again.status, 'current');
    assert.equal(again.index, p.index);
  });

  it('images published at once (as a build does) store the blocks they share once', async () => {
    const own = await s3.freshBucket();
    const c = createClient({ config: own, credentials: s3.credentials });
    try {
      const ws = workspace('blocks-concurrent');
      const one = path.join(ws, 'images/rootfs-one.ext4');
      const two = path.join(ws, 'images/rootfs-two.ext4');
      sparseFile(one, 16 * MiB, [[0, 4 * MiB]]);
      fs.copyFileSync(one, two);
      touchBlocks(two, [0]);
      const pub = async (key: string, file: string) => {
        const d = await fileDigest(file, { crc32: true });
        return publishBlocks(
          { client: c, config: own, workspace: ws },
          { file, key, digest: { ...d, crc32: d.crc32! }, manifest: manifestFor(key, d) },
        );
      };
      const [a, b] = await Promise.all([pub('rootfs-one.ext4', one), pub('rootfs-two.ext4', two)]);
      assert.equal(a.newBlocks + b.newBlocks, 1024 + 1, `${a.newBlocks} + ${b.newBlocks}`);
    } finally {
      c.destroy();
    }
  });

  it('a fresh host gets byte-identical sparse files, fetching about the compressed data once', async () => {
    const py = await sync(host, 'rootfs-python.ext4');
    assert.equal(py.status, 'downloaded');
    const dest = path.join(host, 'images/rootfs-python.ext4');
    assert.equal(sha256File(dest), sha256File(python));
    assert.ok(allocated(dest) <= 13 * MiB, `allocated ${allocated(dest)}`);
    assert.equal(readRecord(dest)?.index, py.index);
    // bash's shared blocks come from the python image already here.
    const planned = await planBlocks(ctx(host), 'rootfs-bash.ext4');
    assert.ok(planned!.plan.blocksLocal >= (8 * MiB) / 4096, JSON.stringify(planned!.plan));
    assert.ok(planned!.plan.fetchBytes < 4.2 * MiB, `plans to fetch ${planned!.plan.fetchBytes}`);
    const sb = await syncBlocks(ctx(host), planned!);
    assert.ok(sb.bytesFetched < 4.2 * MiB, `fetched ${sb.bytesFetched}`);
    assert.equal(sha256File(path.join(host, 'images/rootfs-bash.ext4')), sha256File(bash));
    const again = await sync(host, 'rootfs-bash.ext4');
    assert.equal(again.status, 'unchanged');
    assert.equal(again.bytesFetched, 0);
  });

  it('a new version: the host fetches only its changed blocks; a rollback fetches nothing', async () => {
    const before = await readHead(ctx(src), 'rootfs-python.ext4');
    touchBlocks(python, [4096 * 10, 4096 * 500, 32 * MiB + 4096 * 7]);
    const v2 = await publish(src, 'rootfs-python.ext4', python);
    assert.equal(v2.status, 'published');
    assert.equal(v2.newBlocks, 3);
    const s = await sync(host, 'rootfs-python.ext4');
    assert.equal(s.status, 'downloaded');
    assert.ok(s.bytesFetched < 64 * 1024, `fetched ${s.bytesFetched} for three blocks`);
    assert.equal(sha256File(path.join(host, 'images/rootfs-python.ext4')), sha256File(python));

    const r = await rollback(ctx(src), 'rootfs-python.ext4');
    assert.equal(r.to.index, before!.head.current);
    const started = Date.now();
    const back = await sync(host, 'rootfs-python.ext4');
    assert.equal(back.bytesFetched, 0);
    assert.ok(Date.now() - started < 5000);
    assert.equal(back.index, before!.head.current);
    assert.equal(readRecord(path.join(host, 'images/rootfs-python.ext4'))?.index, before!.head.current);
    // And forward again, to the version kept aside by the rollback: nothing fetched either.
    await rollback(ctx(src), 'rootfs-python.ext4', v2.index.slice(0, 12));
    const fwd = await sync(host, 'rootfs-python.ext4');
    assert.equal(fwd.bytesFetched, 0);
    assert.equal(sha256File(path.join(host, 'images/rootfs-python.ext4')), sha256File(python));
  });

  it('a download cut off midway resumes with the blocks its partial file holds', async () => {
    const fresh = workspace('blocks-resume');
    const planned = await planBlocks(ctx(fresh), 'rootfs-python.ext4');
    // What a killed download leaves: the partial file with the first 6 MiB of the image written.
    const partial = partialOf(path.join(fresh, 'images/rootfs-python.ext4'), planned!.plan.index);
    const fd = fs.openSync(partial, 'w');
    const head = Buffer.alloc(6 * MiB);
    const src = fs.openSync(python, 'r');
    fs.readSync(src, head, 0, head.length, 0);
    fs.closeSync(src);
    fs.writeSync(fd, head, 0, head.length, 0);
    fs.ftruncateSync(fd, 64 * MiB);
    fs.closeSync(fd);
    const resumed = await planBlocks(ctx(fresh), 'rootfs-python.ext4');
    assert.equal(resumed!.plan.blocksInPlace, (6 * MiB) / 4096);
    assert.ok(
      resumed!.plan.fetchBytes < planned!.plan.fetchBytes - 5 * MiB,
      `${resumed!.plan.fetchBytes} vs ${planned!.plan.fetchBytes}`,
    );
    const done = await syncBlocks(ctx(fresh), resumed!);
    assert.equal(done.status, 'downloaded');
    assert.equal(sha256File(path.join(fresh, 'images/rootfs-python.ext4')), sha256File(python));
    assert.ok(!fs.existsSync(partial));
  });

  it('the static fetcher syncs a fresh host as s3 download does, and pins and refuses as it does', async () => {
    const tool = await checkoutFetcher();
    const url = `${config.endpoint}/${config.bucket}`;
    const fetch = (ws: string, extra: string[] = [], env: Record<string, string> = s3.env) =>
      execFileP(tool, ['sync', '--bucket-url', url, '--region', config.region, '--workspace', ws, ...extra], {
        env: { PATH: process.env.PATH, ...env },
      }).then(
        (r) => ({ code: 0, stderr: r.stderr }),
        (e: { code: number; stderr: string }) => ({ code: e.code, stderr: e.stderr }),
      );
    const ws = workspace('fetcher');
    const run = await fetch(ws);
    assert.equal(run.code, 0, run.stderr);
    assert.ok(!run.stderr.includes(s3.credentials.secretAccessKey), 'the secret never shows');
    for (const [key, file] of [
      ['rootfs-python.ext4', python],
      ['rootfs-bash.ext4', bash],
    ] as const) {
      const dest = path.join(ws, 'images', key);
      assert.equal(sha256File(dest), sha256File(file), key);
      // The TypeScript store reads the Go fetcher's records: the next download has nothing to do.
      assert.equal(readRecord(dest)?.index, (await readHead(ctx(src), key))!.head.current);
    }
    assert.ok(allocated(path.join(ws, 'images/rootfs-python.ext4')) < 20 * MiB, 'sparse');
    // Both files fetched together: a frame they share comes once, as with s3 download.
    const joint = await syncDown({ client, config, workspace: workspace('fetcher-ts') });
    const goBytes = Number(/done: 2 file\(s\), (\d+) bytes fetched, 0 failed/.exec(run.stderr)?.[1]);
    assert.equal(goBytes, joint.bytesTransferred, run.stderr);
    assert.equal(fs.readlinkSync(path.join(ws, 'rootfs.ext4')), 'images/rootfs-python.ext4');
    const again = await syncDown({ client, config, workspace: ws });
    assert.ok(
      again.files.every((f) => f.status === 'unchanged'),
      JSON.stringify(again.files),
    );
    const second = await fetch(ws);
    assert.match(second.stderr, /rootfs-python\.ext4 is up to date/);
    assert.match(second.stderr, /done: 2 file\(s\), 0 bytes fetched, 0 failed/);
    // Unsigned requests to a private bucket are refused, with the reason.
    const anonymous = await fetch(workspace('fetcher-anon'), [], {});
    assert.equal(anonymous.code, 1);
    assert.match(anonymous.stderr, /HTTP 403 \(AccessDenied/);
    // A pin that does not match: nothing installed for that key.
    const pinned = workspace('fetcher-pin');
    const wrong = await fetch(pinned, ['--pin', `rootfs-bash.ext4=${'0'.repeat(64)}`]);
    assert.equal(wrong.code, 1);
    assert.match(wrong.stderr, /rootfs-bash\.ext4 changed since this was pinned/);
    assert.ok(!fs.existsSync(path.join(pinned, 'images/rootfs-bash.ext4')));
    assert.match(wrong.stderr, /rootfs-python\.ext4 is not pinned: skipped/);
    // Hostile arguments are refused before any request.
    const hostile = await fetch(pinned, ['--key', '../../etc/passwd']);
    assert.equal(hostile.code, 2);
    const plainHttp = await execFileP(tool, [
      'sync',
      '--bucket-url',
      'http://example.com/b',
      '--workspace',
      pinned,
    ]).catch((e: { code: number; stderr: string }) => e);
    assert.equal((plainHttp as { code: number }).code, 2);
  });

  it('a damaged pack is refused and nothing is installed', async () => {
    const packs = await listPrefix(ctx(src), 'blocks/packs/');
    const head = (await readHead(ctx(src), 'rootfs-bash.ext4'))!.head;
    const fresh = workspace('blocks-corrupt');
    // Damage every pack: one byte in the middle of each.
    for (const p of packs) {
      const body = Buffer.from(
        await (
          await client.send(new GetObjectCommand({ Bucket: config.bucket, Key: p.key }))
        ).Body!.transformToByteArray(),
      );
      const at = Math.floor(body.length / 2);
      body.writeUInt8(body.readUInt8(at) ^ 0xff, at);
      await client.send(new PutObjectCommand({ Bucket: config.bucket, Key: p.key, Body: body }));
    }
    await assert.rejects(sync(fresh, 'rootfs-bash.ext4'), /digest|decompress|does not match/);
    assert.ok(!fs.existsSync(path.join(fresh, 'images/rootfs-bash.ext4')));
    // The static fetcher refuses it too.
    const tool = await checkoutFetcher();
    const goFresh = workspace('blocks-corrupt-go');
    const run = await execFileP(
      tool,
      [
        'sync',
        '--bucket-url',
        `${config.endpoint}/${config.bucket}`,
        '--workspace',
        goFresh,
        '--key',
        'rootfs-bash.ext4',
      ],
      {
        env: { PATH: process.env.PATH, ...s3.env },
      },
    ).catch((e: { code: number; stderr: string }) => e);
    assert.equal((run as { code: number }).code, 1);
    assert.match((run as { stderr: string }).stderr, /does not decompress|does not match its digest/);
    assert.ok(!fs.existsSync(path.join(goFresh, 'images/rootfs-bash.ext4')));
    assert.ok(head.current, 'the head is untouched');
  });

  it('prunes versions beyond those kept, and the packs only they named', async () => {
    const report = await pruneStore(ctx(src), { graceMs: 0 });
    assert.equal(report.packsDeleted, 0, 'every pack is still named');
    assert.equal(report.indexesDeleted, 0);
  });

  describe('through the CLI, as users run it', () => {
    let cliConfig: S3Config;
    let up: string;
    let down: string;
    const configFile = (ws: string) => {
      const file = path.join(ws, 'rootfs.yaml');
      fs.writeFileSync(file, stringify({ workspace: ws, temporal: { address: '127.0.0.1:9' }, s3: cliConfig }));
      return file;
    };
    before(async () => {
      cliConfig = await s3.freshBucket();
      up = workspace('cli-up');
      down = workspace('cli-down');
    });

    it('s3 upload writes the plain objects and the block store; s3 list shows the versions', async () => {
      sparseFile(path.join(up, 'images/rootfs-python.ext4'), 96 * MiB, [
        [0, 6 * MiB],
        [64 * MiB, 2 * MiB],
      ]);
      sparseFile(path.join(up, 'images/rootfs-bash.ext4'), 32 * MiB, [[MiB, 2 * MiB]]);
      randomFile(path.join(up, 'vmlinux'), 3 * MiB + 123);
      const first = await rootfs(['--config', configFile(up), 's3', 'upload'], s3.env);
      assert.equal(first.code, 0, first.stderr);
      assert.match(
        first.stderr,
        /^uploaded +rootfs-python\.ext4 .* version [0-9a-f]{12}: 2048 new block\(s\) of 2048/m,
      );
      const listing = await listBucket({ client, config: cliConfig });
      assert.deepEqual(
        listing.objects
          .filter((o) => o.kind === 'image' || o.kind === 'kernel')
          .map((o) => o.key)
          .sort(),
        ['rootfs-bash.ext4', 'rootfs-python.ext4', 'vmlinux'],
      );
      assert.deepEqual(
        listing.blockStore?.heads.map((h) => h.key),
        ['rootfs-bash.ext4', 'rootfs-python.ext4', 'vmlinux'],
      );
      const again = await rootfs(['--config', configFile(up), 's3', 'upload'], s3.env);
      assert.match(again.stderr, /^0 uploaded, 3 unchanged, 0 Bytes sent$/m);
      // A second version of python: three blocks changed.
      const fd = fs.openSync(path.join(up, 'images/rootfs-python.ext4'), 'r+');
      for (const off of [0, 4096 * 100, 64 * MiB]) fs.writeSync(fd, crypto.randomBytes(4096), 0, 4096, off);
      fs.closeSync(fd);
      const second = await rootfs(['--config', configFile(up), 's3', 'upload-single', 'python'], s3.env);
      assert.equal(second.code, 0, second.stderr);
      assert.match(second.stderr, /version [0-9a-f]{12}: 3 new block\(s\) of 2048/);
      const text = await rootfs(['--config', configFile(up), 's3', 'list'], s3.env);
      assert.match(text.stdout, /^Block store \(blocks\/\): 3 file\(s\), 4 version\(s\)$/m);
      assert.match(
        text.stdout,
        /^ {2}rootfs-python\.ext4\n {2}\* [0-9a-f]{12} .* 96\.0 MiB, fetch [\d.]+ MiB\n {4}[0-9a-f]{12} /m,
      );
      assert.equal(
        formatListing(await listBucket({ client, config: cliConfig })),
        formatListing(await listBucket({ client, config: cliConfig })),
      );
    });

    it('s3 download says what it will fetch, then syncs from the block store; a second run fetches nothing', async () => {
      const run = await rootfs(['--config', configFile(down), 's3', 'download'], s3.env);
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stderr, /^will fetch [\d.]+ MiB for 3 file\(s\)/m);
      for (const name of ['images/rootfs-python.ext4', 'images/rootfs-bash.ext4', 'vmlinux'])
        assert.equal(sha256File(path.join(down, name)), sha256File(path.join(up, name)), name);
      assert.equal(fs.readlinkSync(path.join(down, 'rootfs.ext4')), 'images/rootfs-python.ext4');
      const again = await rootfs(['--config', configFile(down), 's3', 'download'], s3.env);
      assert.match(again.stderr, /^0 downloaded \(0 Bytes\), 3 unchanged, 0 failed$/m);
    });

    it('s3 rollback python: hosts that sync follow; back to a version a host had fetches nothing', async () => {
      const rb = await rootfs(['--config', configFile(up), 's3', 'rollback', 'python'], s3.env);
      assert.equal(rb.code, 0, rb.stderr);
      const moved = /^rootfs-python\.ext4: ([0-9a-f]{12}) -> ([0-9a-f]{12}) \(published /m.exec(rb.stderr);
      assert.ok(moved, rb.stderr);
      // This host never had the older version: it fetches the few blocks that differ.
      const back = await rootfs(['--config', configFile(down), 's3', 'download'], s3.env);
      assert.equal(back.code, 0, back.stderr);
      assert.match(back.stderr, /^1 downloaded \([\d.]+ [KM]iB\), 2 unchanged, 0 failed$/m);
      // Forward again to the version it had: kept aside by the last sync, so nothing is fetched.
      const fwd = await rootfs(['--config', configFile(up), 's3', 'rollback', 'python', moved[1]!], s3.env);
      assert.equal(fwd.code, 0, fwd.stderr);
      const started = Date.now();
      const sync = await rootfs(['--config', configFile(down), 's3', 'download'], s3.env);
      assert.equal(sync.code, 0, sync.stderr);
      assert.ok(Date.now() - started < 5000, 'within 5 s, CLI start included');
      assert.match(sync.stderr, new RegExp(`rootfs-python\\.ext4 ${moved[1]}: kept here, nothing to fetch`));
      assert.match(sync.stderr, /^1 downloaded \(0 Bytes\), 2 unchanged, 0 failed$/m);
      assert.equal(
        sha256File(path.join(down, 'images/rootfs-python.ext4')),
        sha256File(path.join(up, 'images/rootfs-python.ext4')),
      );
      const bad = await rootfs(['--config', configFile(up), 's3', 'rollback', 'python', 'zz'], s3.env);
      assert.notEqual(bad.code, 0);
      assert.match(bad.stderr, /"zz" is not a version/);
      const hostile = await rootfs(['--config', configFile(up), 's3', 'rollback', '../x'], s3.env);
      assert.notEqual(hostile.code, 0);
    });

    it('a download killed midway resumes where it stopped', async function () {
      // Random data does not compress: 160 MiB to fetch, long enough to be killed in the middle.
      randomFile(path.join(up, 'images/rootfs-rust.ext4'), 160 * MiB);
      const uploaded = await rootfs(['--config', configFile(up), 's3', 'upload'], s3.env);
      assert.equal(uploaded.code, 0, uploaded.stderr);
      const host = workspace('cli-killed');
      const child = spawn(process.execPath, [CLI, '--config', configFile(host), 's3', 'download'], {
        env: { PATH: process.env.PATH, ...s3.env },
        stdio: 'ignore',
      });
      const dir = path.join(host, 'images');
      const partial = () =>
        fs.readdirSync(dir).find((n) => n.startsWith('.rootfs-rust.ext4.') && n.endsWith('.blocks-partial'));
      const deadline = Date.now() + 60_000;
      while (Date.now() < deadline) {
        const p = partial();
        if (p && allocated(path.join(dir, p)) > 40 * MiB) break;
        await new Promise((r) => setTimeout(r, 20));
      }
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
      const left = partial();
      assert.ok(left, 'the killed download left its partial file');
      const resumed = await rootfs(['--config', configFile(host), 's3', 'download'], s3.env);
      assert.equal(resumed.code, 0, resumed.stderr);
      const fetched = /^ {2}rootfs-rust\.ext4 [0-9a-f]{12}: fetch ([\d.]+) MiB in \d+ range\(s\), (\d+) block/m.exec(
        resumed.stderr,
      );
      assert.ok(fetched, resumed.stderr);
      const inPlaceMiB = (Number(fetched[2]) * 4096) / MiB;
      assert.ok(inPlaceMiB >= 40, `the partial's ${inPlaceMiB} MiB are taken: ${resumed.stderr}`);
      // What is left, not the whole (frames are 1 MiB: at most one per range is fetched again).
      assert.ok(Number(fetched[1]) <= 160 - inPlaceMiB + 2, `the resumed run fetches what is left: ${resumed.stderr}`);
      assert.equal(
        sha256File(path.join(dir, 'rootfs-rust.ext4')),
        sha256File(path.join(up, 'images/rootfs-rust.ext4')),
      );
      assert.equal(partial(), undefined);
    });
  });

  it('syncDown and uploadAll with the default config: both layouts written, the block store read', async () => {
    const ws = workspace('default-up');
    const own = await s3.freshBucket();
    const c = createClient({ config: own, credentials: s3.credentials });
    try {
      sparseFile(path.join(ws, 'images/rootfs-go.ext4'), 40 * MiB, [[0, 3 * MiB]]);
      const [go] = await uploadAll({ client: c, config: own, workspace: ws });
      assert.equal(go!.status, 'uploaded');
      assert.equal(go!.blocks?.status, 'published');
      const host = workspace('default-down');
      const report = await syncDown({ client: c, config: own, workspace: host });
      assert.deepEqual(
        report.files.map((f) => [f.key, f.via, f.status]),
        [['rootfs-go.ext4', 'blocks', 'downloaded']],
      );
      // Without the block store the plain object serves the same file.
      const plainHost = workspace('default-plain');
      const plain = await syncDown({ client: c, config: { ...own, blockStore: false }, workspace: plainHost });
      assert.deepEqual(
        plain.files.map((f) => [f.key, f.via, f.status]),
        [['rootfs-go.ext4', 'object', 'downloaded']],
      );
      // And plainObjects: false writes no plain object.
      const only = await s3.freshBucket();
      const [blocksOnly] = await uploadAll({ client: c, config: { ...only, plainObjects: false }, workspace: ws });
      assert.equal(blocksOnly!.blocks?.status, 'published');
      const l = await listBucket({ client: c, config: only });
      assert.deepEqual(
        l.objects.map((o) => o.key),
        [],
      );
      assert.deepEqual(
        l.blockStore?.heads.map((h) => h.key),
        ['rootfs-go.ext4'],
      );
    } finally {
      c.destroy();
    }
  });
});
