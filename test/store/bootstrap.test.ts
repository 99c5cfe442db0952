import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { S3Client } from '@aws-sdk/client-s3';
import type { S3Config } from '../../src/config';
import { bootstrapScript, createClient, uploadAll } from '../../src/store';
import { startFixtureServer, type FixtureServer } from '../support/fixture-server';
import { tempDir } from '../support/process';
import { testS3, type TestCredentials, type TestS3 } from '../support/s3';
import { allocated, MiB, randomFile, sha256File, sparseFile, workspace } from './helpers';

const LANGUAGES = ['bash', 'go', 'python'];

/** Runs the script with bash in a clean environment; resolves with its exit code and log. */
function runScript(script: string, env: Record<string, string>): Promise<{ code: number; log: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-s'], { env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: tempDir('home'), ...env }, stdio: ['pipe', 'pipe', 'pipe'] });
    let log = '';
    child.stdout.on('data', (c: Buffer) => (log += c.toString()));
    child.stderr.on('data', (c: Buffer) => (log += c.toString()));
    child.on('error', reject);
    child.on('exit', (code) => resolve({ code: code ?? -1, log }));
    child.stdin.end(script);
  });
}

describe('store: the bootstrap script, run with bash @real', function () {
  this.timeout(120_000);
  let s3: TestS3;
  let config: S3Config;
  let credentials: TestCredentials;
  let client: S3Client;
  let source: string;
  let fixture: FixtureServer;

  before(async () => {
    s3 = await testS3();
    config = await s3.freshBucket();
    credentials = s3.credentials;
    client = createClient({ config, credentials });
    source = workspace('boot-source');
    randomFile(path.join(source, 'vmlinux'), 2 * MiB);
    randomFile(path.join(source, 'images/rootfs-bash.ext4'), 3 * MiB);
    sparseFile(path.join(source, 'images/rootfs-python.ext4'), 96 * MiB, [
      [MiB, 2 * MiB],
      [60 * MiB, MiB],
    ]);
    await uploadAll({ client, config, workspace: source });
    fixture = await startFixtureServer();
  });
  after(() => client?.destroy());

  it('syncs kernel and images from the bucket into an empty directory, sparse and verified, and links python', async () => {
    const target = tempDir('boot-target');
    const script = bootstrapScript({ s3: config, workspace: '/srv/firecracker', languages: LANGUAGES }, { fallbackUrl: fixture.url });
    // A page size of 2 keys makes the listing take several pages.
    const env = { ...s3.env, ROOTFS_WORKSPACE: target, S3_LIST_PAGE_SIZE: '2' };
    const first = await runScript(script, env);
    assert.equal(first.code, 0, first.log);
    for (const name of ['vmlinux', 'images/rootfs-bash.ext4', 'images/rootfs-python.ext4']) {
      assert.equal(sha256File(path.join(target, name)), sha256File(path.join(source, name)), name);
    }
    assert.ok(allocated(path.join(target, 'images/rootfs-python.ext4')) < 8 * MiB, 'written sparse');
    assert.equal(fs.readlinkSync(path.join(target, 'images/rootfs.ext4')), 'rootfs-python.ext4');
    assert.match(first.log, /rootfs-bootstrap: done: 3 downloaded, 0 up to date, 0 failed$/m);
    assert.ok(!first.log.includes(credentials.secretAccessKey), 'the secret is never logged');
    assert.equal(fixture.hits('/vmlinux'), 0, 'no fallback while the bucket has images');

    const second = await runScript(script, env);
    assert.equal(second.code, 0, second.log);
    assert.match(second.log, /rootfs-bootstrap: done: 0 downloaded, 3 up to date, 0 failed$/m);

    // Without credentials a private bucket refuses, and the script says so and fails.
    const anonymous = await runScript(script, { ROOTFS_WORKSPACE: tempDir('boot-anon') });
    assert.equal(anonymous.code, 1);
    assert.match(anonymous.log, new RegExp(`error: cannot list s3://${config.bucket} \\(HTTP 403 AccessDenied: Access Denied\\.\\)`));
  });

  it('falls back to the configured URL when the bucket has no images, checking SHA256SUMS', async () => {
    const empty = await s3.freshBucket();
    const kernel = crypto.randomBytes(MiB);
    const bash = crypto.randomBytes(2 * MiB);
    const python = Buffer.concat([crypto.randomBytes(MiB), Buffer.alloc(16 * MiB), crypto.randomBytes(4096)]);
    const go = crypto.randomBytes(MiB);
    const sum = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');
    fixture.serve('/fallback/vmlinux', kernel);
    fixture.serve('/fallback/rootfs-bash.ext4', bash);
    fixture.serve('/fallback/rootfs-python.ext4', python);
    fixture.serve('/fallback/rootfs-go.ext4', go);
    // The go image does not match its listed sum: it must not be installed.
    fixture.serve(
      '/fallback/SHA256SUMS',
      `${sum(kernel)}  vmlinux\n${sum(bash)}  rootfs-bash.ext4\n${sum(python)} *rootfs-python.ext4\n${'0'.repeat(64)}  rootfs-go.ext4\n`,
    );
    const target = tempDir('boot-fallback');
    const script = bootstrapScript({ s3: empty, workspace: target, languages: LANGUAGES }, { fallbackUrl: `${fixture.url}/fallback/` });
    const run = await runScript(script, s3.env);
    assert.equal(run.code, 1, run.log);
    assert.match(run.log, new RegExp(`rootfs-bootstrap: bucket ${empty.bucket} has no images: falling back to ${fixture.url}/fallback$`, 'm'));
    assert.match(run.log, /error: .*rootfs-go\.ext4 does not match its checksum/);
    assert.ok(fs.readFileSync(path.join(target, 'vmlinux')).equals(kernel));
    assert.ok(fs.readFileSync(path.join(target, 'images/rootfs-bash.ext4')).equals(bash));
    assert.ok(fs.readFileSync(path.join(target, 'images/rootfs-python.ext4')).equals(python));
    assert.ok(!fs.existsSync(path.join(target, 'images/rootfs-go.ext4')));
    assert.equal(fs.readlinkSync(path.join(target, 'images/rootfs.ext4')), 'rootfs-python.ext4');
    assert.deepEqual(fs.readdirSync(path.join(target, 'images')).filter((n) => n.startsWith('.')), []);

    // A bucket that does not exist falls back too; without a fallback the script stops plainly.
    const missing = { ...empty, bucket: 'no-such-bucket-here' };
    const noBucket = await runScript(bootstrapScript({ s3: missing, workspace: tempDir('boot-missing'), languages: ['bash'] }, { fallbackUrl: `${fixture.url}/fallback` }), s3.env);
    assert.equal(noBucket.code, 0, noBucket.log);
    assert.match(noBucket.log, /bucket no-such-bucket-here does not exist: falling back to /);
    const noFallback = await runScript(bootstrapScript({ s3: empty, workspace: tempDir('boot-none'), languages: ['bash'] }), s3.env);
    assert.equal(noFallback.code, 1);
    assert.match(noFallback.log, new RegExp(`error: bucket ${empty.bucket} has no images and no fallback source is configured$`, 'm'));
  });
});
