import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { DeleteObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { stringify } from 'yaml';
import type { S3Config } from '../../src/config';
import { bootstrapScript, bucketUrl, createClient, uploadAll, uploadImage } from '../../src/store';
import { startFixtureServer, type FixtureServer } from '../support/fixture-server';
import { tempDir } from '../support/process';
import { testS3, type TestCredentials, type TestS3 } from '../support/s3';
import {
  allocated,
  assertLine,
  MiB,
  objectText,
  randomFile,
  rootfs,
  sha256File,
  sparseFile,
  workspace,
} from './helpers';
import { startHttpsFixture, type HttpsFixture } from './https-fixture';
import { checkoutFetcher } from '../support/guest-image';

const LANGUAGES = ['bash', 'go', 'python'];
const sum = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');

/** Runs the script with bash in a clean environment; resolves with its exit code and log. */
function runScript(script: string, env: Record<string, string>): Promise<{ code: number; log: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('bash', ['-s'], {
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: tempDir('home'), ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
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
  let tls: HttpsFixture;

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
    tls = await startHttpsFixture();
  });
  after(() => client?.destroy());

  it('syncs kernel and images from the bucket into an empty directory, sparse and verified, and links python', async () => {
    const target = tempDir('boot-target');
    // The default link where earlier versions made it: replaced by the seed's <workspace>/rootfs.ext4.
    fs.mkdirSync(path.join(target, 'images'));
    fs.symlinkSync('rootfs-python.ext4', path.join(target, 'images/rootfs.ext4'));
    const script = bootstrapScript(
      { s3: config, workspace: '/srv/firecracker', languages: LANGUAGES },
      { fallbackUrl: tls.url },
    );
    // A page size of 2 keys makes the listing take several pages.
    const env = { ...s3.env, ROOTFS_WORKSPACE: target, S3_LIST_PAGE_SIZE: '2' };
    const first = await runScript(script, env);
    assert.equal(first.code, 0, first.log);
    for (const name of ['vmlinux', 'images/rootfs-bash.ext4', 'images/rootfs-python.ext4']) {
      assert.equal(sha256File(path.join(target, name)), sha256File(path.join(source, name)), name);
    }
    assert.ok(allocated(path.join(target, 'images/rootfs-python.ext4')) < 8 * MiB, 'written sparse');
    assert.equal(fs.readlinkSync(path.join(target, 'rootfs.ext4')), 'images/rootfs-python.ext4');
    assert.equal(
      sha256File(path.join(target, 'rootfs.ext4')),
      sha256File(path.join(source, 'images/rootfs-python.ext4')),
      'the link leads to the image',
    );
    assert.ok(!fs.existsSync(path.join(target, 'images/rootfs.ext4')));
    assert.match(
      first.log,
      /rootfs-bootstrap: removed \S+\/images\/rootfs\.ext4, the default link of earlier versions$/m,
    );
    assert.match(first.log, /rootfs-bootstrap: done: 3 downloaded, 0 up to date, 0 failed$/m);
    assert.ok(!first.log.includes(credentials.secretAccessKey), 'the secret is never logged');
    assert.equal(tls.hits('/vmlinux'), 0, 'no fallback while the bucket has images');

    const second = await runScript(script, env);
    assert.equal(second.code, 0, second.log);
    assert.match(second.log, /rootfs-bootstrap: done: 0 downloaded, 3 up to date, 0 failed$/m);

    // Without credentials a private bucket refuses, and the script says so and fails.
    const anonymous = await runScript(script, { ROOTFS_WORKSPACE: tempDir('boot-anon') });
    assert.equal(anonymous.code, 1);
    assert.match(
      anonymous.log,
      new RegExp(`error: cannot list s3://${config.bucket} \\(HTTP 403 AccessDenied: Access Denied\\.\\)`),
    );
  });

  it('falls back to the configured URL when the bucket has no images, checking SHA256SUMS', async () => {
    const empty = await s3.freshBucket();
    const kernel = crypto.randomBytes(MiB);
    const bash = crypto.randomBytes(2 * MiB);
    const python = Buffer.concat([crypto.randomBytes(MiB), Buffer.alloc(16 * MiB), crypto.randomBytes(4096)]);
    const go = crypto.randomBytes(MiB);
    tls.serve('/fallback/vmlinux', kernel);
    tls.serve('/fallback/rootfs-bash.ext4', bash);
    tls.serve('/fallback/rootfs-python.ext4', python);
    tls.serve('/fallback/rootfs-go.ext4', go);
    // The go image does not match its listed sum: it must not be installed.
    tls.serve(
      '/fallback/SHA256SUMS',
      `${sum(kernel)}  vmlinux\n${sum(bash)}  rootfs-bash.ext4\n${sum(python)} *rootfs-python.ext4\n${'0'.repeat(64)}  rootfs-go.ext4\n`,
    );
    const target = tempDir('boot-fallback');
    const script = bootstrapScript(
      { s3: empty, workspace: target, languages: LANGUAGES },
      { fallbackUrl: `${tls.url}/fallback/` },
    );
    const run = await runScript(script, { ...s3.env, CURL_CA_BUNDLE: tls.caFile });
    assert.equal(run.code, 1, run.log);
    assert.match(
      run.log,
      new RegExp(`rootfs-bootstrap: bucket ${empty.bucket} has no images: falling back to ${tls.url}/fallback$`, 'm'),
    );
    assert.match(run.log, /error: .*rootfs-go\.ext4 does not match its checksum/);
    assert.ok(fs.readFileSync(path.join(target, 'vmlinux')).equals(kernel));
    assert.ok(fs.readFileSync(path.join(target, 'images/rootfs-bash.ext4')).equals(bash));
    assert.ok(fs.readFileSync(path.join(target, 'images/rootfs-python.ext4')).equals(python));
    assert.ok(!fs.existsSync(path.join(target, 'images/rootfs-go.ext4')));
    assert.equal(fs.readlinkSync(path.join(target, 'rootfs.ext4')), 'images/rootfs-python.ext4');
    assert.deepEqual(
      fs.readdirSync(path.join(target, 'images')).filter((n) => n.startsWith('.')),
      [],
    );

    // A bucket that does not exist falls back too; without a fallback the script stops plainly.
    const missing = { ...empty, bucket: 'no-such-bucket-here' };
    const noBucket = await runScript(
      bootstrapScript(
        { s3: missing, workspace: tempDir('boot-missing'), languages: ['bash'] },
        { fallbackUrl: `${tls.url}/fallback` },
      ),
      { ...s3.env, CURL_CA_BUNDLE: tls.caFile },
    );
    assert.equal(noBucket.code, 0, noBucket.log);
    assert.match(noBucket.log, /bucket no-such-bucket-here does not exist: falling back to /);
    const noFallback = await runScript(
      bootstrapScript({ s3: empty, workspace: tempDir('boot-none'), languages: ['bash'] }),
      s3.env,
    );
    assert.equal(noFallback.code, 1);
    assert.match(
      noFallback.log,
      new RegExp(`error: bucket ${empty.bucket} has no images and no fallback source is configured$`, 'm'),
    );
  });

  it('takes the fallback over https only: at generation (exit 2), from the environment, through redirects, with the certificate checked', async () => {
    const empty = await s3.freshBucket();
    const kernel = crypto.randomBytes(64 * 1024);
    tls.serve('/tls/vmlinux', kernel);
    tls.serve('/tls/SHA256SUMS', `${sum(kernel)}  vmlinux\n`);
    fixture.serve('/plain/vmlinux', kernel);
    fixture.serve('/plain/SHA256SUMS', `${sum(kernel)}  vmlinux\n`);
    const script = bootstrapScript(
      { s3: empty, workspace: '/unused', languages: [] },
      { fallbackUrl: `${tls.url}/tls` },
    );

    // The CLI refuses an http:// fallback as a usage error, and prints no script.
    const dir = tempDir('boot-cli');
    fs.writeFileSync(path.join(dir, 'rootfs.yaml'), `workspace: ${dir}/ws\ns3:\n  bucket: ${empty.bucket}\n`);
    const cli = await rootfs([
      '--config',
      path.join(dir, 'rootfs.yaml'),
      's3',
      'bootstrap-script',
      '--fallback-url',
      `${fixture.url}/plain`,
    ]);
    assert.equal(cli.code, 2, cli.stderr);
    assert.equal(cli.stdout, '');
    assert.match(
      cli.stderr,
      /^rootfs: --fallback-url: The fallback source "http:\/\/127\.0\.0\.1:\d+\/plain" is not an https URL: /,
    );
    const bad = await rootfs([
      '--config',
      path.join(dir, 'rootfs.yaml'),
      's3',
      'bootstrap-script',
      '--fallback-url',
      'not a url',
    ]);
    assert.equal(bad.code, 2, bad.stderr);
    const good = await rootfs([
      '--config',
      path.join(dir, 'rootfs.yaml'),
      's3',
      'bootstrap-script',
      '--fallback-url',
      `${tls.url}/tls`,
    ]);
    assert.equal(good.code, 0, good.stderr);
    assert.match(good.stdout, /^#!\/bin\/bash\n/);

    // An http:// override in the environment stops the script before it fetches anything.
    const target = tempDir('boot-override');
    const overridden = await runScript(script, {
      ...s3.env,
      ROOTFS_WORKSPACE: target,
      ROOTFS_FALLBACK_URL: `${fixture.url}/plain`,
    });
    assert.equal(overridden.code, 2, overridden.log);
    assert.match(
      overridden.log,
      /error: the fallback source must be an https:\/\/ URL, not http:\/\/127\.0\.0\.1:\d+\/plain$/m,
    );
    assert.equal(fixture.hits('/plain/vmlinux') + fixture.hits('/plain/SHA256SUMS'), 0);
    assert.ok(!fs.existsSync(path.join(target, 'vmlinux')));

    // A redirect from the https source to plain http is not followed.
    tls.redirect('/down/vmlinux', `${fixture.url}/plain/vmlinux`);
    tls.redirect('/down/SHA256SUMS', `${fixture.url}/plain/SHA256SUMS`);
    const redirected = await runScript(script, {
      ...s3.env,
      ROOTFS_WORKSPACE: target,
      ROOTFS_FALLBACK_URL: `${tls.url}/down`,
      CURL_CA_BUNDLE: tls.caFile,
    });
    assert.equal(redirected.code, 1, redirected.log);
    assert.equal(fixture.hits('/plain/vmlinux') + fixture.hits('/plain/SHA256SUMS'), 0, 'nothing fetched over http');
    assert.ok(!fs.existsSync(path.join(target, 'vmlinux')));

    // A certificate curl does not trust is refused; with its CA the same source works.
    const untrusted = await runScript(script, { ...s3.env, ROOTFS_WORKSPACE: target });
    assert.equal(untrusted.code, 1, untrusted.log);
    assert.match(untrusted.log, /SSL certificate problem/);
    assert.ok(!fs.existsSync(path.join(target, 'vmlinux')));
    const trusted = await runScript(script, { ...s3.env, ROOTFS_WORKSPACE: target, CURL_CA_BUNDLE: tls.caFile });
    assert.equal(trusted.code, 0, trusted.log);
    assert.ok(fs.readFileSync(path.join(target, 'vmlinux')).equals(kernel));
  });

  it('fails closed: nothing without a sum that matches is installed, from the bucket or the fallback, and the exit says so', async () => {
    // The bucket: the bash object swapped behind its manifest, the python manifest replaced by
    // the go one, the kernel's manifest gone; only the go image is as published.
    const bucket = await s3.freshBucket();
    const c = createClient({ config: bucket, credentials });
    try {
      await uploadAll({ client: c, config: bucket, workspace: source });
      const published = workspace('boot-closed-source');
      randomFile(path.join(published, 'images/rootfs-go.ext4'), MiB);
      await uploadAll({ client: c, config: bucket, workspace: published });
      await c.send(
        new PutObjectCommand({ Bucket: bucket.bucket, Key: 'rootfs-bash.ext4', Body: crypto.randomBytes(3 * MiB) }),
      );
      const goManifest = await objectText(c, bucket.bucket, 'rootfs-go.ext4.manifest.json');
      await c.send(
        new PutObjectCommand({ Bucket: bucket.bucket, Key: 'rootfs-python.ext4.manifest.json', Body: goManifest }),
      );
      await c.send(new DeleteObjectCommand({ Bucket: bucket.bucket, Key: 'vmlinux.manifest.json' }));

      const target = tempDir('boot-closed');
      fs.mkdirSync(path.join(target, 'images'));
      const localBash = crypto.randomBytes(MiB);
      fs.writeFileSync(path.join(target, 'images/rootfs-bash.ext4'), localBash);
      const run = await runScript(bootstrapScript({ s3: bucket, workspace: target, languages: LANGUAGES }), s3.env);
      assert.equal(run.code, 1, run.log);
      const at = `s3://${bucket.bucket}`;
      const expected = sha256File(path.join(source, 'images/rootfs-bash.ext4'));
      const mismatch = `error: ${at}/rootfs-bash\\.ext4 does not match its checksum \\(sha256 [0-9a-f]{64}, expected ${expected}\\)`;
      assert.match(run.log, new RegExp(`${mismatch}; not installed; the local copy was kept$`, 'm'));
      assertLine(
        run.log,
        `error: ${at}/rootfs-python.ext4.manifest.json is not a manifest of rootfs-python.ext4 with a sha256, ` +
          'so rootfs-python.ext4 cannot be verified; not downloaded',
      );
      assertLine(run.log, `error: ${at}/vmlinux has no manifest (HTTP 404), so it cannot be verified; not downloaded`);
      assert.match(run.log, /rootfs-bootstrap: done: 1 downloaded, 0 up to date, 3 failed$/m);
      assert.ok(
        fs.readFileSync(path.join(target, 'images/rootfs-bash.ext4')).equals(localBash),
        'the local copy is untouched',
      );
      assert.equal(
        sha256File(path.join(target, 'images/rootfs-go.ext4')),
        sha256File(path.join(published, 'images/rootfs-go.ext4')),
      );
      assert.deepEqual(fs.readdirSync(path.join(target, 'images')).sort(), ['rootfs-bash.ext4', 'rootfs-go.ext4']);
      assert.ok(!fs.existsSync(path.join(target, 'vmlinux')));
    } finally {
      c.destroy();
    }

    // The fallback: without SHA256SUMS nothing is fetched at all; a file it does not list is not fetched either.
    const empty = await s3.freshBucket();
    const kernel = crypto.randomBytes(64 * 1024);
    const bash = crypto.randomBytes(64 * 1024);
    for (const dir of ['nosums', 'partial']) {
      tls.serve(`/${dir}/vmlinux`, kernel);
      tls.serve(`/${dir}/rootfs-bash.ext4`, bash);
    }
    tls.serve('/partial/SHA256SUMS', `${sum(kernel).toUpperCase()}  vmlinux\nnot-a-sum  rootfs-bash.ext4\n`);
    const env = { ...s3.env, CURL_CA_BUNDLE: tls.caFile };
    const noSums = tempDir('boot-nosums');
    const none = await runScript(
      bootstrapScript({ s3: empty, workspace: noSums, languages: ['bash'] }, { fallbackUrl: `${tls.url}/nosums` }),
      env,
    );
    assert.equal(none.code, 1, none.log);
    const sums = `${tls.url}/nosums/SHA256SUMS`;
    const why = `${sums} (${sums} could not be fetched)`;
    assertLine(
      none.log,
      `error: ${tls.url}/nosums/vmlinux has no sha256 in ${why}, so it cannot be verified; not installed`,
    );
    assert.match(none.log, /done: 0 downloaded, 0 up to date, 2 failed$/m);
    assert.equal(
      tls.hits('/nosums/vmlinux') + tls.hits('/nosums/rootfs-bash.ext4'),
      0,
      'nothing unverifiable is fetched',
    );
    assert.deepEqual(fs.readdirSync(path.join(noSums, 'images')), []);
    assert.ok(!fs.existsSync(path.join(noSums, 'vmlinux')));

    const partial = tempDir('boot-partial');
    const some = await runScript(
      bootstrapScript({ s3: empty, workspace: partial, languages: ['bash'] }, { fallbackUrl: `${tls.url}/partial` }),
      env,
    );
    assert.equal(some.code, 1, some.log);
    assert.match(
      some.log,
      /error: \S+\/partial\/rootfs-bash\.ext4 has no sha256 in \S+\/partial\/SHA256SUMS, so it cannot be verified; not installed$/m,
    );
    assert.match(some.log, /done: 1 downloaded, 0 up to date, 1 failed$/m);
    assert.ok(fs.readFileSync(path.join(partial, 'vmlinux')).equals(kernel));
    assert.equal(tls.hits('/partial/rootfs-bash.ext4'), 0);
    assert.deepEqual(fs.readdirSync(path.join(partial, 'images')), []);
  });

  it("--pin writes the bucket's sums into the script: an object swapped later, in the bucket or at the fallback, is refused", async () => {
    const bucket = await s3.freshBucket();
    const c = createClient({ config: bucket, credentials });
    try {
      const published = workspace('boot-pin-source');
      randomFile(path.join(published, 'vmlinux'), 256 * 1024);
      randomFile(path.join(published, 'images/rootfs-bash.ext4'), MiB);
      randomFile(path.join(published, 'images/rootfs-go.ext4'), MiB);
      const dir = tempDir('boot-pin');
      const configFile = path.join(dir, 'rootfs.yaml');
      const writeConfig = (s3config: S3Config) =>
        fs.writeFileSync(configFile, stringify({ workspace: path.join(dir, 'unused'), s3: s3config }));
      const generate = () =>
        rootfs(
          ['--config', configFile, 's3', 'bootstrap-script', '--pin', '--fallback-url', `${tls.url}/pinned`],
          s3.env,
        );

      // Nothing to pin in an empty bucket: no script.
      writeConfig(bucket);
      const nothing = await generate();
      assert.equal(nothing.code, 1, nothing.stderr);
      assert.equal(nothing.stdout, '');
      assert.match(nothing.stderr, new RegExp(`rootfs: --pin: s3://${bucket.bucket} has no kernel or image to pin`));

      await uploadAll({ client: c, config: bucket, workspace: published });
      const shaOf = (name: string) => sha256File(path.join(published, name));
      const made = await generate();
      assert.equal(made.code, 0, made.stderr);
      const script = made.stdout;
      for (const file of ['vmlinux', 'images/rootfs-bash.ext4', 'images/rootfs-go.ext4']) {
        assert.ok(script.includes(`\n  ['${path.basename(file)}']='${shaOf(file)}'\n`), file);
      }
      assert.match(script, /^PINNED_KEYS='vmlinux rootfs-bash\.ext4 rootfs-go\.ext4'$/m);

      const first = tempDir('boot-pin-first');
      const ok = await runScript(script, { ...s3.env, ROOTFS_WORKSPACE: first });
      assert.equal(ok.code, 0, ok.log);
      assert.match(ok.log, /done: 3 downloaded, 0 up to date, 0 failed$/m);

      // Published again (manifest and all), bash no longer has the pinned content; a new image is not pinned.
      const bashManifest = await objectText(c, bucket.bucket, 'rootfs-bash.ext4.manifest.json');
      randomFile(path.join(published, 'images/rootfs-bash.ext4'), MiB);
      await uploadImage(
        { client: c, config: bucket, workspace: published },
        'bash',
        path.join(published, 'images/rootfs-bash.ext4'),
      );
      randomFile(path.join(published, 'images/rootfs-rust.ext4'), MiB);
      await uploadImage(
        { client: c, config: bucket, workspace: published },
        'rust',
        path.join(published, 'images/rootfs-rust.ext4'),
      );
      const later = tempDir('boot-pin-later');
      const swapped = await runScript(script, { ...s3.env, ROOTFS_WORKSPACE: later });
      assert.equal(swapped.code, 1, swapped.log);
      const changed = `error: s3://${bucket.bucket}/rootfs-bash\\.ext4 changed since this script was made`;
      const says = `its manifest says sha256 ${shaOf('images/rootfs-bash.ext4')}`;
      assert.match(
        swapped.log,
        new RegExp(`${changed} \\(${says}, the script pins [0-9a-f]{64}\\); not downloaded$`, 'm'),
      );
      assert.match(
        swapped.log,
        new RegExp(`warning: s3://${bucket.bucket}/rootfs-rust\\.ext4 is not pinned in this script: skipped$`, 'm'),
      );
      assert.match(swapped.log, /done: 2 downloaded, 0 up to date, 1 failed$/m);
      assert.deepEqual(
        fs
          .readdirSync(path.join(later, 'images'))
          .filter((n) => n.startsWith('rootfs-') && n !== 'rootfs.ext4')
          .sort(),
        ['rootfs-go.ext4'],
      );

      // The old manifest put back over the new object: the bytes themselves are refused.
      await c.send(
        new PutObjectCommand({ Bucket: bucket.bucket, Key: 'rootfs-bash.ext4.manifest.json', Body: bashManifest }),
      );
      const behind = await runScript(script, { ...s3.env, ROOTFS_WORKSPACE: later });
      assert.equal(behind.code, 1, behind.log);
      const mismatch = `error: s3://${bucket.bucket}/rootfs-bash\\.ext4 does not match its checksum`;
      assert.match(
        behind.log,
        new RegExp(
          `${mismatch} \\(sha256 ${shaOf('images/rootfs-bash.ext4')}, expected [0-9a-f]{64}\\); not installed$`,
          'm',
        ),
      );
      assert.ok(!fs.existsSync(path.join(later, 'images/rootfs-bash.ext4')));

      // An empty bucket sends the same script to the fallback, whose own SHA256SUMS vouches for a
      // swapped bash: the pin refuses it, and takes the pinned kernel without any SHA256SUMS line.
      // The other configured languages have no pin: a pinned script does not take the fallback's
      // SHA256SUMS instead, even when it lists them.
      const empty = await s3.freshBucket();
      const fakeBash = crypto.randomBytes(MiB);
      tls.serve('/pinned/vmlinux', fs.readFileSync(path.join(published, 'vmlinux')));
      tls.serve('/pinned/rootfs-bash.ext4', fakeBash);
      const fakePython = crypto.randomBytes(MiB);
      tls.serve('/pinned/rootfs-python.ext4', fakePython);
      tls.serve('/pinned/SHA256SUMS', `${sum(fakeBash)}  rootfs-bash.ext4\n${sum(fakePython)}  rootfs-python.ext4\n`);
      const fromFallback = tempDir('boot-pin-fallback');
      const fb = await runScript(script, {
        ...s3.env,
        ROOTFS_WORKSPACE: fromFallback,
        S3_BUCKET_URL: bucketUrl(empty),
        CURL_CA_BUNDLE: tls.caFile,
      });
      assert.equal(fb.code, 1, fb.log);
      assert.match(
        fb.log,
        /error: \S+\/pinned\/rootfs-bash\.ext4 does not match its checksum \(sha256 \w{64}, expected \w{64}\); not installed$/m,
      );
      assert.match(fb.log, /error: \S+\/pinned\/rootfs-go\.ext4 could not be fetched$/m);
      assert.match(fb.log, /error: \S+\/pinned\/rootfs-python\.ext4 is not pinned in this script; not installed$/m);
      assert.match(fb.log, /done: 1 downloaded, 0 up to date, 5 failed$/m);
      assert.equal(sha256File(path.join(fromFallback, 'vmlinux')), shaOf('vmlinux'));
      assert.deepEqual(fs.readdirSync(path.join(fromFallback, 'images')), []);

      // An object whose manifest is unusable cannot be pinned: no script rather than one that leaves it out.
      await c.send(
        new PutObjectCommand({ Bucket: bucket.bucket, Key: 'rootfs-go.ext4.manifest.json', Body: '{"format": 1}' }),
      );
      const broken = await generate();
      assert.equal(broken.code, 1, broken.stderr);
      assert.equal(broken.stdout, '');
      const cannot = `rootfs: cannot pin s3://${bucket.bucket}/rootfs-go.ext4: rootfs-go.ext4.manifest.json is not a valid manifest`;
      assert.ok(broken.stderr.startsWith(cannot), broken.stderr);
    } finally {
      c.destroy();
    }
  });

  it('does not read a manifest over 64 KiB: its image is not downloaded', async () => {
    const bucket = await s3.freshBucket();
    const c = createClient({ config: bucket, credentials });
    try {
      const published = workspace('boot-big-source');
      randomFile(path.join(published, 'images/rootfs-bash.ext4'), 64 * 1024);
      await uploadAll({ client: c, config: bucket, workspace: published });
      const mkey = 'rootfs-bash.ext4.manifest.json';
      const text = await objectText(c, bucket.bucket, mkey);
      // The same manifest with 70 KB of spaces before its last brace: still one that the script's parser would take.
      await c.send(
        new PutObjectCommand({
          Bucket: bucket.bucket,
          Key: mkey,
          Body: text.replace(/}\s*$/, `${' '.repeat(70_000)}}\n`),
        }),
      );
      const target = tempDir('boot-big');
      const run = await runScript(bootstrapScript({ s3: bucket, workspace: target, languages: ['bash'] }), s3.env);
      assert.equal(run.code, 1, run.log);
      const over = `error: s3://${bucket.bucket}/${mkey} is over 65536 bytes`;
      assertLine(run.log, `${over}, so it is not read and rootfs-bash.ext4 cannot be verified; not downloaded`);
      assert.ok(!fs.existsSync(path.join(target, 'images/rootfs-bash.ext4')));
    } finally {
      c.destroy();
    }
  });

  it('with the fetcher in the bucket, syncs from the block store; without it, from the plain objects', async () => {
    const bucket = await s3.freshBucket();
    const c = createClient({ config: bucket, credentials });
    try {
      const tool = await checkoutFetcher();
      const source = workspace('boot-blocks-source');
      sparseFile(path.join(source, 'images/rootfs-python.ext4'), 48 * MiB, [[0, 3 * MiB]]);
      sparseFile(path.join(source, 'images/rootfs-bash.ext4'), 32 * MiB, [[MiB, 2 * MiB]]);
      randomFile(path.join(source, 'vmlinux'), MiB + 17);
      // As `s3 upload` does where setup built the fetcher: it goes into the bucket beside the block store.
      await uploadAll({ client: c, config: bucket, workspace: source, fetcher: tool });
      const sha = sha256File(tool);
      const script = bootstrapScript(
        { s3: bucket, workspace: '/unused', languages: LANGUAGES },
        { fetcherSha256: sha },
      );
      const target = tempDir('boot-blocks');
      const run = await runScript(script, { ...s3.env, ROOTFS_WORKSPACE: target });
      assert.equal(run.code, 0, run.log);
      assert.match(run.log, /rootfs-bootstrap: syncing from the block store$/m);
      assert.match(run.log, /rootfs-fetch: done: 3 file\(s\), \d+ bytes fetched, 0 failed$/m);
      for (const name of ['images/rootfs-python.ext4', 'images/rootfs-bash.ext4', 'vmlinux'])
        assert.equal(sha256File(path.join(target, name)), sha256File(path.join(source, name)), name);
      assert.ok(allocated(path.join(target, 'images/rootfs-python.ext4')) < 8 * MiB, 'sparse');
      assert.equal(fs.readlinkSync(path.join(target, 'rootfs.ext4')), 'images/rootfs-python.ext4');
      assert.ok(!run.log.includes(s3.credentials.secretAccessKey));

      // Pinned to other contents: the fetcher refuses, and so does the plain path after it.
      const pinned = bootstrapScript(
        { s3: bucket, workspace: '/unused', languages: LANGUAGES },
        { fetcherSha256: sha, pins: { 'rootfs-bash.ext4': 'a'.repeat(64) } },
      );
      const refused = tempDir('boot-blocks-pinned');
      const bad = await runScript(pinned, { ...s3.env, ROOTFS_WORKSPACE: refused });
      assert.equal(bad.code, 1, bad.log);
      assert.match(bad.log, /rootfs-bash\.ext4 changed since this was pinned/);
      assert.ok(!fs.existsSync(path.join(refused, 'images/rootfs-bash.ext4')));

      // A fetcher the bucket does not hold (another build of the tool): the plain objects, verified as ever.
      const other = bootstrapScript(
        { s3: bucket, workspace: '/unused', languages: LANGUAGES },
        { fetcherSha256: 'b'.repeat(64) },
      );
      const plain = tempDir('boot-blocks-plain');
      const fallback = await runScript(other, { ...s3.env, ROOTFS_WORKSPACE: plain });
      assert.equal(fallback.code, 0, fallback.log);
      assert.match(
        fallback.log,
        /the block store's fetcher is not in the bucket \(HTTP 404\): syncing the plain objects/,
      );
      assert.match(fallback.log, /done: 3 downloaded, 0 up to date, 0 failed$/m);
    } finally {
      c.destroy();
    }
  });
});
