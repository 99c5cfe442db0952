import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { HeadObjectCommand, ListMultipartUploadsCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import type { S3Config } from '../../src/config';
import {
  abortIncompleteUploads,
  createClient,
  formatListing,
  listBucket,
  StoreError,
  syncDown,
  uploadAll,
  uploadFile,
  uploadImage,
  uploadSingle,
  type StoreContext,
} from '../../src/store';
import { tempDir } from '../support/process';
import { testS3, type TestS3 } from '../support/s3';

const MiB = 1024 * 1024;
const sha256 = (file: string) => {
  const h = crypto.createHash('sha256');
  const fd = fs.openSync(file, 'r');
  const buf = Buffer.alloc(8 * MiB);
  for (let n; (n = fs.readSync(fd, buf)) > 0; ) h.update(buf.subarray(0, n));
  fs.closeSync(fd);
  return h.digest('hex');
};

function randomFile(file: string, bytes: number): void {
  fs.writeFileSync(file, crypto.randomBytes(bytes));
}

/** A sparse file of `size` with random data written at a few offsets. */
function sparseFile(file: string, size: number, regions: Array<[number, number]>): void {
  const fd = fs.openSync(file, 'w');
  for (const [offset, length] of regions) {
    for (let done = 0; done < length; done += 16 * MiB) fs.writeSync(fd, crypto.randomBytes(Math.min(16 * MiB, length - done)), 0, undefined, offset + done);
  }
  fs.ftruncateSync(fd, size);
  fs.closeSync(fd);
}

function workspace(): string {
  const ws = tempDir('ws');
  fs.mkdirSync(path.join(ws, 'images'));
  return ws;
}

function countingClient(s3: TestS3, maxAttempts = 5): { client: S3Client; requests: () => number } {
  let n = 0;
  const client = new S3Client({ endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: s3.credentials, maxAttempts, requestChecksumCalculation: 'WHEN_REQUIRED', responseChecksumValidation: 'WHEN_REQUIRED' });
  client.middlewareStack.add((next) => async (args) => {
    n++;
    return next(args);
  }, { step: 'initialize', name: 'countRequests' });
  return { client, requests: () => n };
}

describe('S3 image store @real', function () {
  this.timeout(600_000);
  let s3: TestS3;
  let config: S3Config;
  let client: S3Client;
  const ctxFor = (ws: string, extra: Partial<StoreContext> = {}): StoreContext => ({ client, config, workspace: ws, partSizeBytes: 16 * MiB, ...extra });

  before(async () => {
    s3 = await testS3();
    config = await s3.freshBucket();
    client = createClient({ config, credentials: s3.credentials });
  });

  const languages = ['bash', 'python', 'nodejs', 'go', 'rust'];
  let source: string;
  let mirror: string;

  it('round trip: uploads five images and a kernel, lists them, and downloads byte-identical sparse files', async () => {
    source = workspace();
    randomFile(path.join(source, 'vmlinux'), 9 * MiB);
    randomFile(path.join(source, 'images/rootfs-bash.ext4'), 5 * MiB);
    randomFile(path.join(source, 'images/rootfs-nodejs.ext4'), 24 * MiB);
    randomFile(path.join(source, 'images/rootfs-go.ext4'), 40 * MiB);
    randomFile(path.join(source, 'images/rootfs-rust.ext4'), 33 * MiB);
    sparseFile(path.join(source, 'images/rootfs-python.ext4'), 2048 * MiB, [[0, 100 * MiB], [700 * MiB, 120 * MiB], [1900 * MiB, 80 * MiB]]);
    fs.writeFileSync(
      path.join(source, 'images/rootfs-python.ext4.manifest.json'),
      JSON.stringify({ sha256: sha256(path.join(source, 'images/rootfs-python.ext4')), versions: ['Python 3.10.12'] }),
    );

    let t0 = Date.now();
    const uploaded = await uploadAll(ctxFor(source));
    const uploadSeconds = (Date.now() - t0) / 1000;
    assert.deepEqual(uploaded.map((u) => [u.key, u.status]), [
      ['vmlinux', 'uploaded'],
      ['rootfs-bash.ext4', 'uploaded'],
      ['rootfs-go.ext4', 'uploaded'],
      ['rootfs-nodejs.ext4', 'uploaded'],
      ['rootfs-python.ext4', 'uploaded'],
      ['rootfs-rust.ext4', 'uploaded'],
    ]);
    const again = await uploadAll(ctxFor(source));
    assert.ok(again.every((u) => u.status === 'unchanged' && u.bytesSent === 0), 'a second upload sends nothing');

    const listing = await listBucket({ client, config });
    const text = formatListing(listing);
    assert.match(text, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d {4}2\.0 GiB rootfs-python\.ext4$/m);
    assert.match(text, /^ +python: Python 3\.10\.12$/m);
    assert.match(text, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d {4}9\.0 MiB vmlinux$/m);
    assert.match(text, /\nTotal Objects: 11\n {3}Total Size: 2\.1 GiB\n$/);

    mirror = workspace();
    t0 = Date.now();
    const report = await syncDown(ctxFor(mirror));
    const downloadSeconds = (Date.now() - t0) / 1000;
    assert.deepEqual(report.files.map((f) => f.status), Array(6).fill('downloaded'));
    for (const name of ['vmlinux', ...languages.map((l) => `images/rootfs-${l}.ext4`)]) {
      assert.equal(sha256(path.join(mirror, name)), sha256(path.join(source, name)), name);
    }
    const python = fs.statSync(path.join(mirror, 'images/rootfs-python.ext4'));
    assert.equal(python.size, 2048 * MiB);
    assert.ok(python.blocks * 512 < 320 * MiB, `the 2 GiB image takes ${(python.blocks * 512) / MiB} MiB on disk`);
    assert.equal(fs.readlinkSync(path.join(mirror, 'images/rootfs.ext4')), 'rootfs-python.ext4');
    console.log(`      2.1 GiB (300 MiB of data): upload ${uploadSeconds.toFixed(1)} s, download ${downloadSeconds.toFixed(1)} s`);
  });

  it('a second download moves nothing; a changed image moves alone', async () => {
    const second = await syncDown(ctxFor(mirror));
    assert.equal(second.bytesTransferred, 0);
    assert.ok(second.files.every((f) => f.status === 'unchanged'));

    randomFile(path.join(source, 'images/rootfs-bash.ext4'), 5 * MiB); // same size, new content
    await uploadImage(ctxFor(source), 'bash', path.join(source, 'images/rootfs-bash.ext4'));
    const third = await syncDown(ctxFor(mirror));
    assert.deepEqual(third.files.filter((f) => f.status === 'downloaded').map((f) => f.key), ['rootfs-bash.ext4']);
    assert.equal(third.bytesTransferred, 5 * MiB);
    assert.equal(sha256(path.join(mirror, 'images/rootfs-bash.ext4')), sha256(path.join(source, 'images/rootfs-bash.ext4')));
  });

  it('a remote image overwritten behind its manifest is reported and the local copy is kept', async () => {
    const local = path.join(mirror, 'images/rootfs-go.ext4');
    const before = sha256(local);
    await client.send(new PutObjectCommand({ Bucket: config.bucket, Key: 'rootfs-go.ext4', Body: crypto.randomBytes(1024) }));
    const report = await syncDown(ctxFor(mirror));
    const go = report.files.find((f) => f.key === 'rootfs-go.ext4')!;
    assert.equal(go.status, 'failed');
    assert.match(go.error!, /^s3:\/\/test-\w+\/rootfs-go\.ext4: checksum mismatch: the manifest says sha256 [0-9a-f]{64} \(41943040 bytes\), the object says nothing \(1024 bytes\); kept the local copy$/);
    assert.equal(sha256(local), before);

    // A forger who also copies the manifest's sum into the object is caught by the content check.
    await client.send(
      new PutObjectCommand({ Bucket: config.bucket, Key: 'rootfs-nodejs.ext4', Body: crypto.randomBytes(24 * MiB), Metadata: { sha256: sha256(path.join(source, 'images/rootfs-nodejs.ext4')) } }),
    );
    const nodeLocal = path.join(mirror, 'images/rootfs-nodejs.ext4');
    fs.writeFileSync(nodeLocal, 'a stale local copy');
    const forged = (await syncDown(ctxFor(mirror))).files.find((f) => f.key === 'rootfs-nodejs.ext4')!;
    assert.equal(forged.status, 'failed');
    assert.match(forged.error!, /rootfs-nodejs\.ext4: checksum mismatch: the bucket says sha256 [0-9a-f]{64}, the content is [0-9a-f]{64}; kept the local copy$/);
    assert.equal(fs.readFileSync(nodeLocal, 'utf8'), 'a stale local copy');
    assert.deepEqual(fs.readdirSync(path.join(mirror, 'images')).filter((n) => n.endsWith('.part')), []);
  });

  it('refuses hostile and malformed language names before sending any request', async () => {
    const { client: counted, requests } = countingClient(s3);
    const ctx = { ...ctxFor(source), client: counted };
    for (const name of ['python;rm -rf /', '../x', 'Python', '', 'ruby']) {
      await assert.rejects(uploadSingle(ctx, name, languages), /not a language name|not a configured language/);
    }
    assert.equal(requests(), 0);
  });

  it('an upload cut off by the server going away leaves no object and resumes with only the missing parts', async () => {
    const ws = workspace();
    const file = path.join(ws, 'images/rootfs-rust.ext4');
    randomFile(file, 64 * MiB); // 13 parts of 5 MiB
    const { client: fragile } = countingClient(s3, 2);
    let sent = 0;
    let stopping: Promise<void> | undefined;
    await assert.rejects(
      uploadFile({
        client: fragile,
        config,
        key: 'resume-me.ext4',
        file,
        stateDir: path.join(ws, '.uploads'),
        partSizeBytes: 5 * MiB,
        concurrency: 1,
        onPartSent: () => {
          if (++sent === 4) stopping = s3.stop();
        },
      }),
      (err: unknown) => err instanceof StoreError && err.transient && /cannot reach the S3 endpoint .* resume/.test(err.message),
    );
    await stopping;
    await s3.start();
    await assert.rejects(client.send(new HeadObjectCommand({ Bucket: config.bucket, Key: 'resume-me.ext4' })), /NotFound|404/);
    let resent = 0;
    const done = await uploadFile({ client, config, key: 'resume-me.ext4', file, stateDir: path.join(ws, '.uploads'), partSizeBytes: 5 * MiB, onPartSent: () => resent++ });
    assert.ok(done.partsReused >= 4, `reused ${done.partsReused} parts`);
    assert.equal(done.partsReused + done.partsSent, 13);
    assert.equal(resent, done.partsSent);
    const head = await client.send(new HeadObjectCommand({ Bucket: config.bucket, Key: 'resume-me.ext4' }));
    assert.equal(head.ContentLength, 64 * MiB);
    assert.equal(head.Metadata?.sha256, sha256(file));
  });

  it('an upload whose process is killed resumes on the next run; abort leaves no incomplete upload', async () => {
    const ws = workspace();
    const file = path.join(ws, 'images/rootfs-go.ext4');
    randomFile(file, 64 * MiB);
    const script = `
      const { createClient, uploadFile } = require(${JSON.stringify(path.join(__dirname, '../../src/store'))});
      const client = createClient({ config: ${JSON.stringify(config)}, credentials: ${JSON.stringify(s3.credentials)} });
      uploadFile({ client, config: ${JSON.stringify(config)}, key: 'killed.ext4', file: ${JSON.stringify(file)},
        stateDir: ${JSON.stringify(path.join(ws, '.uploads'))}, partSizeBytes: 5 * 1024 * 1024, concurrency: 1,
        onPartSent: (n) => console.log('part ' + n) });`;
    const child = spawn(process.execPath, ['-e', script], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve) => {
      let parts = 0;
      child.stdout.on('data', (c: Buffer) => {
        parts += (c.toString().match(/part /g) ?? []).length;
        if (parts >= 5 && child.exitCode === null) {
          child.kill('SIGKILL');
          resolve();
        }
      });
    });
    await new Promise((r) => child.once('exit', r));
    const done = await uploadFile({ client, config, key: 'killed.ext4', file, stateDir: path.join(ws, '.uploads'), partSizeBytes: 5 * MiB });
    assert.ok(done.partsReused >= 5, `reused ${done.partsReused} parts`);
    assert.equal(done.partsReused + done.partsSent, 13);

    // Leave one incomplete upload behind on purpose, then clean up.
    const again = spawn(process.execPath, ['-e', script.replace("'killed.ext4'", "'orphan.ext4'")], { stdio: ['ignore', 'pipe', 'inherit'] });
    await new Promise<void>((resolve) => again.stdout.once('data', () => (again.kill('SIGKILL'), resolve())));
    await new Promise((r) => again.once('exit', r));
    const pending = await client.send(new ListMultipartUploadsCommand({ Bucket: config.bucket }));
    assert.ok((pending.Uploads ?? []).length >= 1);
    assert.ok((await abortIncompleteUploads(client, config, path.join(ws, '.uploads'))) >= 1);
    const after = await client.send(new ListMultipartUploadsCommand({ Bucket: config.bucket }));
    assert.deepEqual(after.Uploads ?? [], []);
  });

  it('says plainly what is wrong: unknown bucket, refused credentials, unreachable server', async () => {
    const missing = { ...config, bucket: 'no-such-bucket-here' };
    await assert.rejects(listBucket({ client: createClient({ config: missing, credentials: s3.credentials }), config: missing }), {
      message: 'bucket no-such-bucket-here does not exist (region us-east-1)',
    });
    await assert.rejects(listBucket({ client: createClient({ config, credentials: { accessKeyId: 'nobody', secretAccessKey: 'wrong-secret' } }), config }), {
      message: `the AWS credentials were refused for bucket ${config.bucket} (InvalidAccessKeyId)`,
    });
    const closed = { ...config, endpoint: 'http://127.0.0.1:9' };
    await assert.rejects(listBucket({ client: createClient({ config: closed, credentials: s3.credentials }), config: closed }), {
      message: `cannot reach the S3 endpoint http://127.0.0.1:9 for bucket ${config.bucket} (ECONNREFUSED)`,
    });
  });
});
