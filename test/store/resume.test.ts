import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ListMultipartUploadsCommand, type S3Client } from '@aws-sdk/client-s3';
import type { S3Config } from '../../src/config';
import {
  abortIncompleteUploads,
  createClient,
  statObject,
  StoreError,
  uploadImage,
  type StoreContext,
} from '../../src/store';
import { testS3, type TestCredentials, type TestS3 } from '../support/s3';
import { MiB, randomFile, sha256File, workspace } from './helpers';

/**
 * Runs an upload of `language` in a child process that freezes after `parts` parts were sent,
 * then kills it with SIGKILL: a process that dies mid-upload, at a known point.
 */
async function uploadThenKill(
  s3: TestS3,
  config: S3Config,
  ws: string,
  language: string,
  parts: number,
): Promise<void> {
  const store = path.join(__dirname, '../../src/store');
  const script = `
    const { createClient, uploadImage } = require(${JSON.stringify(store)});
    const [config, ws, language, freezeAfter] = JSON.parse(process.argv[1]);
    let sent = 0;
    const ctx = {
      client: createClient({ config }), config, workspace: ws, partSizeBytes: 5 * 1024 * 1024, concurrency: 1,
      onPartSent: () => { if (++sent === freezeAfter) { process.stdout.write('frozen\\n'); Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0); } },
    };
    uploadImage(ctx, language, ws + '/images/rootfs-' + language + '.ext4').then(() => process.stdout.write('completed\\n'));`;
  // Credentials reach the child through its environment, as the SDK's chain reads them.
  const child = spawn(process.execPath, ['-e', script, JSON.stringify([config, ws, language, parts])], {
    stdio: ['ignore', 'pipe', 'pipe'],
    env: { ...process.env, ...s3.env },
  });
  let out = '';
  let err = '';
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  await new Promise<void>((resolve, reject) => {
    child.stdout.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes('frozen')) {
        child.kill('SIGKILL');
        resolve();
      }
    });
    child.once('exit', () => reject(new Error(`the upload child exited before it froze: ${out}${err}`)));
  });
  await new Promise((r) => (child.exitCode === null && child.signalCode === null ? child.once('exit', r) : r(null)));
}

/**
 * Keys with incomplete uploads. MinIO lists them bucket-wide only from a cache that a restart
 * empties, and otherwise only per exact key: so both are asked.
 */
async function pendingUploads(client: S3Client, bucket: string): Promise<string[]> {
  const keys = new Set<string>();
  for (const prefix of [
    undefined,
    'vmlinux',
    ...['bash', 'go', 'nodejs', 'python', 'rust'].map((l) => `rootfs-${l}.ext4`),
  ]) {
    const res = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket, Prefix: prefix }));
    for (const u of res.Uploads ?? []) keys.add(u.Key!);
  }
  return [...keys].sort();
}

describe('store: interrupted uploads @real', function () {
  this.timeout(180_000);
  let s3: TestS3;
  let config: S3Config;
  let credentials: TestCredentials;
  let client: S3Client;
  const ctx = (ws: string, extra: Partial<StoreContext> = {}): StoreContext => ({
    client,
    config,
    workspace: ws,
    partSizeBytes: 5 * MiB,
    ...extra,
  });

  before(async () => {
    s3 = await testS3();
    // The plain objects alone: what these tests check is theirs (blocks.test.ts covers the block store).
    config = { ...(await s3.freshBucket()), blockStore: false };
    credentials = s3.credentials;
    client = createClient({ config, credentials });
  });
  after(async () => {
    client?.destroy();
    await s3?.start(); // whatever happened, the shared server runs for the suites after this one
  });

  it('the server stopping mid-upload: a plain error, no object; once it is back, only the missing parts are sent', async () => {
    const ws = workspace('server-dies');
    const file = path.join(ws, 'images/rootfs-rust.ext4');
    randomFile(file, 64 * MiB); // 13 parts of 5 MiB
    const fragile = createClient({ config, credentials, maxAttempts: 2 });
    let sent = 0;
    let stopping: Promise<void> | undefined;
    await assert.rejects(
      uploadImage(
        ctx(ws, {
          client: fragile,
          concurrency: 2,
          retry: { attempts: 2, baseDelayMs: 50, maxDelayMs: 100 },
          onPartSent: () => {
            if (++sent === 4) stopping = s3.stop();
          },
        }),
        'rust',
        file,
      ),
      (e: unknown) => {
        assert.ok(e instanceof StoreError, String(e));
        assert.equal(e.kind, 'unreachable');
        assert.match(
          e.message,
          new RegExp(
            `^Cannot upload s3://${config.bucket}/rootfs-rust\\.ext4: (${s3.endpoint} is unreachable \\(ECONNREFUSED\\)|the connection to ${s3.endpoint} broke \\(\\w+\\)); the \\d+ part\\(s\\) stored so far are kept and the next upload resumes from them\\.$`,
          ),
        );
        return true;
      },
    );
    fragile.destroy();
    await stopping;
    assert.ok(!s3.running());
    await s3.start();
    assert.equal(await statObject({ client, config }, 'rootfs-rust.ext4'), null, 'no object under the key');
    assert.deepEqual(await pendingUploads(client, config.bucket), ['rootfs-rust.ext4']);

    let resent = 0;
    const done = await uploadImage(ctx(ws, { onPartSent: () => resent++ }), 'rust', file);
    assert.equal(done.status, 'uploaded');
    assert.ok(done.partsReused >= 4, `${done.partsReused} parts reused`);
    assert.equal(done.partsReused + done.partsSent, 13);
    assert.equal(resent, done.partsSent, 'only the missing parts were sent');
    const stored = await statObject({ client, config }, 'rootfs-rust.ext4');
    assert.equal(stored?.sizeBytes, 64 * MiB);
    assert.equal(stored?.sha256, sha256File(file));
    assert.deepEqual(await pendingUploads(client, config.bucket), []);
    assert.deepEqual(fs.readdirSync(path.join(ws, '.uploads')), [], 'the resume state is gone');
  });

  it('a process killed mid-upload: the next run resumes from the parts stored', async () => {
    const ws = workspace('killed');
    const file = path.join(ws, 'images/rootfs-go.ext4');
    randomFile(file, 64 * MiB);
    await uploadThenKill(s3, config, ws, 'go', 6);
    assert.equal(await statObject({ client, config }, 'rootfs-go.ext4'), null);
    assert.equal(fs.readdirSync(path.join(ws, '.uploads')).length, 1, 'the killed run left its state');

    let sent = 0;
    const done = await uploadImage(ctx(ws, { onPartSent: () => sent++ }), 'go', file);
    assert.equal(done.partsReused, 6);
    assert.equal(done.partsSent, 7);
    assert.equal(sent, 7);
    assert.equal((await statObject({ client, config }, 'rootfs-go.ext4'))?.sha256, sha256File(file));
  });

  it('an upload failing for another reason is aborted: no parts left behind, no object', async () => {
    const ws = workspace('changed');
    const file = path.join(ws, 'images/rootfs-bash.ext4');
    randomFile(file, 32 * MiB);
    await assert.rejects(
      uploadImage(
        ctx(ws, {
          concurrency: 1,
          // The file changes under the upload after its second part.
          onPartSent: (_key, n) => n === 2 && fs.appendFileSync(file, 'x'),
        }),
        'bash',
        file,
      ),
      (e: unknown) =>
        e instanceof StoreError &&
        /changed while it was being uploaded; the incomplete upload was aborted\.$/.test(e.message),
    );
    assert.deepEqual(await pendingUploads(client, config.bucket), []);
    assert.equal(await statObject({ client, config }, 'rootfs-bash.ext4'), null);
    assert.deepEqual(fs.readdirSync(path.join(ws, '.uploads')), []);
  });

  it('abortIncompleteUploads leaves no incomplete upload and forgets the resume state, also after a server restart', async () => {
    const ws = workspace('orphans');
    randomFile(path.join(ws, 'images/rootfs-python.ext4'), 16 * MiB);
    randomFile(path.join(ws, 'images/rootfs-nodejs.ext4'), 16 * MiB);
    await uploadThenKill(s3, config, ws, 'python', 1);
    await uploadThenKill(s3, config, ws, 'nodejs', 2);
    assert.deepEqual(await pendingUploads(client, config.bucket), ['rootfs-nodejs.ext4', 'rootfs-python.ext4']);
    // A restart empties MinIO's bucket-wide list of uploads; one state file is lost as well.
    await s3.stop();
    await s3.start();
    fs.rmSync(path.join(ws, '.uploads', `${config.bucket}__rootfs-python.ext4.upload.json`));
    assert.equal(
      await abortIncompleteUploads(client, config, path.join(ws, '.uploads'), { keys: ['rootfs-python.ext4'] }),
      2,
    );
    assert.deepEqual(await pendingUploads(client, config.bucket), []);
    assert.deepEqual(fs.readdirSync(path.join(ws, '.uploads')), []);
    // With its state gone, the next upload starts afresh and completes.
    const done = await uploadImage(ctx(ws), 'python', path.join(ws, 'images/rootfs-python.ext4'));
    assert.equal(done.partsReused, 0);
    assert.equal(done.partsSent, 4);
  });
});
