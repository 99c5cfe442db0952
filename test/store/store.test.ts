import { strict as assert } from 'node:assert';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { GetBucketVersioningCommand, GetObjectCommand, PutObjectCommand, type S3Client } from '@aws-sdk/client-s3';
import { stringify } from 'yaml';
import type { S3Config } from '../../src/config';
import {
  abortIncompleteUploads,
  bucketSetup,
  createClient,
  formatListing,
  formatSync,
  formatUploads,
  humanSize,
  iamPolicy,
  listBucket,
  Manifest,
  StoreError,
  syncDown,
  uploadAll,
  uploadImage,
  uploadKernelConfig,
  uploadSingle,
  type StoreContext,
  type TransferStatus,
} from '../../src/store';
import { tempDir } from '../support/process';
import { testS3, type TestCredentials, type TestS3 } from '../support/s3';
import { allocated, MiB, objectText, randomFile, rootfs, sha256File, sparseFile, workspace } from './helpers';

const LANGUAGES = ['bash', 'go', 'nodejs', 'python', 'rust'];

describe('store: upload, list and sync with a real S3 @real', function () {
  this.timeout(300_000);
  let s3: TestS3;
  let config: S3Config;
  let credentials: TestCredentials;
  let client: S3Client;
  let source: string;
  let mirror: string;
  const ctx = (ws: string, extra: Partial<StoreContext> = {}): StoreContext => ({
    client,
    config,
    workspace: ws,
    ...extra,
  });

  before(async () => {
    s3 = await testS3();
    // The plain objects alone: what these tests check is theirs (blocks.test.ts covers the block store).
    config = { ...(await s3.freshBucket()), blockStore: false };
    credentials = s3.credentials;
    client = createClient({ config, credentials });
  });
  after(() => client?.destroy());

  it('round trip: uploads five images and a kernel, lists them, and syncs byte-identical sparse copies', async () => {
    source = workspace('source');
    randomFile(path.join(source, 'vmlinux'), 9 * MiB);
    randomFile(path.join(source, 'images/rootfs-bash.ext4'), 5 * MiB);
    randomFile(path.join(source, 'images/rootfs-nodejs.ext4'), 24 * MiB);
    randomFile(path.join(source, 'images/rootfs-go.ext4'), 40 * MiB);
    randomFile(path.join(source, 'images/rootfs-rust.ext4'), 33 * MiB);
    // 256 MiB, of which 40 MiB of data in three regions: an ext4 image's shape, small. The 2 GiB
    // shape is the @heavy test below.
    sparseFile(path.join(source, 'images/rootfs-python.ext4'), 256 * MiB, [
      [0, 16 * MiB],
      [100 * MiB, 16 * MiB],
      [230 * MiB, 8 * MiB],
    ]);
    fs.symlinkSync('rootfs-python.ext4', path.join(source, 'images/rootfs.ext4'));
    const builtAt = '2024-05-01T11:00:00.000Z';
    // What python was built from; the others say nothing of it, as images built before did.
    const origin = {
      archive: { jammy: 'a'.repeat(64), 'jammy-updates': 'b'.repeat(64) },
      packages: ['bash 5.1-6ubuntu1.1', 'python3 3.10.6-1~22.04.1'],
      operatorSha256: 'c'.repeat(64),
    };
    const facts = (language: string) => ({
      versions: [`${language} 1.2.3`],
      builtAt,
      artifactKey: `image-${language}-0123456789abcdef`,
      ...(language === 'python' ? origin : {}),
      boot: { seconds: 7.1, kernelSha256: 'e'.repeat(64) },
    });

    const uploaded = await uploadAll(ctx(source), { facts });
    assert.deepEqual(
      uploaded.map((u) => [u.key, u.status]),
      [['vmlinux', 'uploaded'], ...LANGUAGES.map((l) => [`rootfs-${l}.ext4`, 'uploaded'])],
    );
    assert.equal(uploaded.find((u) => u.key === 'rootfs-python.ext4')!.partsSent, 16, '256 MiB in 16 MiB parts');

    const again = await uploadAll(ctx(source), { facts });
    assert.ok(
      again.every((u) => u.status === 'unchanged' && u.bytesSent === 0 && !u.manifestWritten),
      'a second upload sends nothing',
    );
    assert.match(formatUploads(again), /^0 uploaded, 6 unchanged, 0 Bytes sent$/m);

    const listing = await listBucket({ client, config });
    assert.equal(listing.totalObjects, 12, 'six objects and their manifests');
    const pythonObject = listing.objects.find((o) => o.key === 'rootfs-python.ext4')!;
    assert.equal(pythonObject.manifest?.sha256, sha256File(path.join(source, 'images/rootfs-python.ext4')));
    assert.deepEqual(pythonObject.manifest?.versions, ['python 1.2.3']);
    assert.equal(pythonObject.manifest?.builtAt, builtAt);
    assert.equal(pythonObject.manifest?.artifactKey, 'image-python-0123456789abcdef');
    assert.deepEqual(pythonObject.manifest?.boot, { seconds: 7.1, kernelSha256: 'e'.repeat(64) });
    assert.deepEqual(
      {
        archive: pythonObject.manifest?.archive,
        packages: pythonObject.manifest?.packages,
        operatorSha256: pythonObject.manifest?.operatorSha256,
      },
      origin,
    );
    assert.equal(listing.objects.find((o) => o.key === 'rootfs-bash.ext4')!.manifest?.packages, undefined);
    assert.ok(JSON.parse(JSON.stringify(listing)), 'the listing is plain data');
    const text = formatListing(listing);
    assert.match(
      text,
      /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d {2}256\.0 MiB rootfs-python\.ext4\n {31}python: python 1\.2\.3$/m,
    );
    assert.match(text, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d {4}9\.0 MiB vmlinux$/m);
    assert.match(text, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d +\d+ Bytes rootfs-bash\.ext4\.manifest\.json$/m);
    assert.match(text, /\n\nTotal Objects: 12\n {3}Total Size: 367\.0 MiB\n$/);

    mirror = workspace('mirror');
    // The default link where earlier versions made it: replaced by the seed's <workspace>/rootfs.ext4.
    fs.symlinkSync('rootfs-python.ext4', path.join(mirror, 'images/rootfs.ext4'));
    const report = await syncDown(ctx(mirror));
    assert.ok(report.ok, formatSync(report));
    assert.deepEqual(
      report.files.map((f) => f.status),
      Array(6).fill('downloaded'),
    );
    for (const name of ['vmlinux', ...LANGUAGES.map((l) => `images/rootfs-${l}.ext4`)]) {
      assert.equal(sha256File(path.join(mirror, name)), sha256File(path.join(source, name)), name);
    }
    const image = path.join(mirror, 'images/rootfs-python.ext4');
    assert.equal(fs.statSync(image).size, 256 * MiB);
    assert.ok(allocated(image) < 48 * MiB, `the 256 MiB image takes ${humanSize(allocated(image))} on disk`);
    assert.equal(fs.readlinkSync(path.join(mirror, 'rootfs.ext4')), 'images/rootfs-python.ext4');
    assert.equal(report.link, path.join(mirror, 'rootfs.ext4'));
    assert.equal(report.oldLinkRemoved, path.join(mirror, 'images/rootfs.ext4'));
    assert.ok(!fs.existsSync(path.join(mirror, 'images/rootfs.ext4')));
    assert.deepEqual(
      fs.readdirSync(path.join(mirror, 'images')).filter((n) => n.endsWith('.partial')),
      [],
    );
  });

  it("the kernel's .config goes up beside vmlinux, before it, and only when it changed", async () => {
    const ws = workspace('kernel');
    const bucket = await s3.freshBucket();
    randomFile(path.join(ws, 'vmlinux'), 2 * MiB);
    fs.writeFileSync(path.join(ws, 'vmlinux.config'), 'CONFIG_64BIT=y\nCONFIG_VIRTIO_BLK=y\n');
    const first = await uploadAll({ ...ctx(ws), config: bucket });
    assert.deepEqual(
      first.map((u) => [u.key, u.status]),
      [['vmlinux', 'uploaded']],
    );
    assert.equal(await objectText(client, bucket.bucket, 'vmlinux.config'), 'CONFIG_64BIT=y\nCONFIG_VIRTIO_BLK=y\n');
    const stored = async () =>
      (await client.send(new GetObjectCommand({ Bucket: bucket.bucket, Key: 'vmlinux.config' }))).LastModified;
    const before = await stored();
    assert.deepEqual(await uploadKernelConfig({ ...ctx(ws), config: bucket }, path.join(ws, 'vmlinux.config')), {
      key: 'vmlinux.config',
      written: false,
    });
    assert.deepEqual(await stored(), before, 'an unchanged config is not written again');
    fs.appendFileSync(path.join(ws, 'vmlinux.config'), 'CONFIG_EXT4_FS=y\n');
    assert.equal(
      (await uploadKernelConfig({ ...ctx(ws), config: bucket }, path.join(ws, 'vmlinux.config'))).written,
      true,
    );
    assert.match(await objectText(client, bucket.bucket, 'vmlinux.config'), /CONFIG_EXT4_FS=y\n$/);
  });

  it('onlyIfStored sends nothing for an image the bucket lacks, and keeps the manifest of one it holds current', async () => {
    const ws = workspace('probe');
    const bucket = await s3.freshBucket();
    const file = path.join(ws, 'images', 'rootfs-bash.ext4');
    randomFile(file, 3 * MiB);
    const probe = { onlyIfStored: true };
    const absent = await uploadImage({ ...ctx(ws), config: bucket }, 'bash', file, { versions: ['GNU bash'] }, probe);
    assert.equal(absent.status, 'absent');
    assert.equal(absent.bytesSent, 0);
    assert.equal(
      (await listBucket({ ...ctx(ws), config: bucket })).objects.length,
      0,
      'neither the image nor a manifest',
    );
    await uploadImage({ ...ctx(ws), config: bucket }, 'bash', file, { versions: ['GNU bash'] });
    const held = await uploadImage({ ...ctx(ws), config: bucket }, 'bash', file, { versions: ['GNU bash 5'] }, probe);
    assert.deepEqual([held.status, held.bytesSent, held.manifestWritten], ['unchanged', 0, true]);
    const manifest = Manifest.parse(
      JSON.parse(await objectText(client, bucket.bucket, 'rootfs-bash.ext4.manifest.json')),
    );
    assert.deepEqual(manifest.versions, ['GNU bash 5']);
  });

  it('a 2 GiB sparse image goes up in 128 parts with progress, and comes down sparse @heavy', async () => {
    const ws = workspace('large');
    const file = path.join(ws, 'images/rootfs-python.ext4');
    // 2 GiB, of which 300 MiB of data in three regions: the size of a real image.
    sparseFile(file, 2048 * MiB, [
      [0, 100 * MiB],
      [700 * MiB, 120 * MiB],
      [1900 * MiB, 80 * MiB],
    ]);
    const large = await s3.freshBucket();
    const statuses: TransferStatus[] = [];
    let t0 = Date.now();
    const python = await uploadImage(
      { ...ctx(ws, { progress: (s) => statuses.push(s) }), config: large },
      'python',
      file,
    );
    const uploadSeconds = (Date.now() - t0) / 1000;
    assert.equal(python.status, 'uploaded');
    assert.equal(python.partsSent, 128, '2 GiB in 16 MiB parts');
    assert.ok(
      statuses.some(
        (s) => s.key === 'rootfs-python.ext4' && s.action === 'upload' && s.finished && s.doneBytes === 2048 * MiB,
      ),
    );
    assert.ok(
      statuses.every((s) => s.totalBytes > 0 && s.elapsedMs >= 1000),
      'only transfers over a second report',
    );

    const mirrored = workspace('large-mirror');
    t0 = Date.now();
    const report = await syncDown({ ...ctx(mirrored), config: large });
    const downloadSeconds = (Date.now() - t0) / 1000;
    assert.ok(report.ok, formatSync(report));
    const image = path.join(mirrored, 'images/rootfs-python.ext4');
    assert.equal(sha256File(image), sha256File(file));
    assert.equal(fs.statSync(image).size, 2048 * MiB);
    assert.ok(allocated(image) < 320 * MiB, `the 2 GiB image takes ${humanSize(allocated(image))} on disk`);
    const mb = (2048 * MiB) / 1e6;
    console.log(
      `      2 GiB sparse image (300 MiB data): upload ${uploadSeconds.toFixed(1)} s (${(mb / uploadSeconds).toFixed(0)} MB/s), ` +
        `download ${downloadSeconds.toFixed(1)} s`,
    );
  });

  it('a second sync moves nothing; an image changed in the bucket moves alone', async () => {
    // A link made by hand to the same image stays; an old-place link that is not ours stays too.
    fs.rmSync(path.join(mirror, 'rootfs.ext4'));
    fs.symlinkSync(path.join(mirror, 'images/rootfs-python.ext4'), path.join(mirror, 'rootfs.ext4'));
    fs.symlinkSync('/srv/elsewhere/custom.ext4', path.join(mirror, 'images/rootfs.ext4'));
    const second = await syncDown(ctx(mirror));
    assert.equal(second.bytesTransferred, 0);
    assert.ok(second.files.every((f) => f.status === 'unchanged'));
    assert.equal(fs.readlinkSync(path.join(mirror, 'rootfs.ext4')), path.join(mirror, 'images/rootfs-python.ext4'));
    assert.equal(fs.readlinkSync(path.join(mirror, 'images/rootfs.ext4')), '/srv/elsewhere/custom.ext4');
    assert.equal(second.oldLinkRemoved, undefined);
    fs.rmSync(path.join(mirror, 'images/rootfs.ext4'));

    randomFile(path.join(source, 'images/rootfs-bash.ext4'), 5 * MiB); // same size, new content
    const changed = await uploadImage(ctx(source), 'bash', path.join(source, 'images/rootfs-bash.ext4'));
    assert.equal(changed.status, 'uploaded');
    const third = await syncDown(ctx(mirror));
    assert.deepEqual(
      third.files.filter((f) => f.status !== 'unchanged').map((f) => [f.key, f.status]),
      [['rootfs-bash.ext4', 'downloaded']],
    );
    assert.equal(third.bytesTransferred, 5 * MiB);
    assert.equal(
      sha256File(path.join(mirror, 'images/rootfs-bash.ext4')),
      sha256File(path.join(source, 'images/rootfs-bash.ext4')),
    );
  });

  it('an object that does not match its manifest is reported and the good local copy is kept', async () => {
    const images = path.join(mirror, 'images');
    const kept = (name: string) => ({
      sha256: sha256File(path.join(images, name)),
      ino: fs.statSync(path.join(images, name)).ino,
    });
    const before = { go: kept('rootfs-go.ext4'), rust: kept('rootfs-rust.ext4') };
    // The go image overwritten with other bytes of the same size: S3's checksum of it gives it away.
    await client.send(
      new PutObjectCommand({ Bucket: config.bucket, Key: 'rootfs-go.ext4', Body: crypto.randomBytes(40 * MiB) }),
    );
    // The rust manifest altered to claim another sha256: only the download's own check can tell.
    const mkey = 'rootfs-rust.ext4.manifest.json';
    const res = await client.send(new GetObjectCommand({ Bucket: config.bucket, Key: mkey }));
    const manifest = Manifest.parse(JSON.parse(await res.Body!.transformToString()));
    await client.send(
      new PutObjectCommand({
        Bucket: config.bucket,
        Key: mkey,
        Body: JSON.stringify({ ...manifest, sha256: 'f'.repeat(64) }),
      }),
    );

    const report = await syncDown(ctx(mirror));
    assert.equal(report.ok, false);
    const error = (key: string) => report.files.find((f) => f.key === key && f.status === 'failed')?.error;
    assert.match(
      error('rootfs-go.ext4') ?? '',
      /^Cannot download s3:\/\/test-\w+\/rootfs-go\.ext4: the object does not match its manifest \(its CRC32 is \S+, the manifest says \S+\); the local copy was kept\.$/,
    );
    assert.match(
      error('rootfs-rust.ext4') ?? '',
      /^Cannot download s3:\/\/test-\w+\/rootfs-rust\.ext4: its content \(sha256 [0-9a-f]{12}…, 34603008 bytes\) does not match its manifest \(sha256 f{12}…, 34603008 bytes\); the local copy was kept\.$/,
    );
    assert.equal(report.files.find((f) => f.key === 'rootfs-rust.ext4')!.bytes, 0);
    assert.deepEqual(
      { go: kept('rootfs-go.ext4'), rust: kept('rootfs-rust.ext4') },
      before,
      'the same files, untouched',
    );
    assert.deepEqual(
      fs.readdirSync(images).filter((n) => n.endsWith('.partial')),
      [],
    );
    assert.match(formatSync(report), /^FAILED {4}rootfs-go\.ext4 {5}Cannot download/m);

    // Uploading the good images again repairs the bucket: the go object, and the rust manifest alone.
    const go = await uploadImage(ctx(source), 'go', path.join(source, 'images/rootfs-go.ext4'));
    const rust = await uploadImage(ctx(source), 'rust', path.join(source, 'images/rootfs-rust.ext4'));
    assert.deepEqual([go.status, rust.status, rust.manifestWritten], ['uploaded', 'unchanged', true]);
    assert.ok((await syncDown(ctx(mirror))).files.every((f) => f.status === 'unchanged'));
  });

  it('s3 list shows hostile keys and manifest texts escaped: nothing from the bucket reaches the terminal raw', async () => {
    const bucket = { ...(await s3.freshBucket()), blockStore: false };
    const c = createClient({ config: bucket, credentials });
    try {
      const ws = workspace('hostile');
      randomFile(path.join(ws, 'images/rootfs-bash.ext4'), 64 * 1024);
      await uploadAll({ client: c, config: bucket, workspace: ws });
      const mkey = 'rootfs-bash.ext4.manifest.json';
      const manifest = Manifest.parse(JSON.parse(await objectText(c, bucket.bucket, mkey)));
      // An OSC that retitles the window, and a C1 CSI; a key that clears the screen, homes the cursor and starts a line.
      const versions = ['bash 5.1\u001b]0;owned\u0007\u009b2J'];
      await c.send(
        new PutObjectCommand({
          Bucket: bucket.bucket,
          Key: mkey,
          Body: JSON.stringify({ ...manifest, versions }, null, 2),
        }),
      );
      const hostile = 'notes\u001b[2J\u001b[1;1H\nrootfs-python.ext4';
      await c.send(new PutObjectCommand({ Bucket: bucket.bucket, Key: hostile, Body: 'x' }));
      // Listed exactly as stored (XML cannot carry ESC: the listing asks for url-encoded keys), a space and a plus included.
      await c.send(new PutObjectCommand({ Bucket: bucket.bucket, Key: 'a b+c%41.txt', Body: 'y' }));
      const keys = (await listBucket({ client: c, config: bucket })).objects.map((o) => o.key);
      assert.deepEqual(keys.sort(), ['a b+c%41.txt', hostile, 'rootfs-bash.ext4', mkey].sort());

      const file = path.join(tempDir('hostile-cli'), 'rootfs.yaml');
      // A Temporal address of its own, so the CLI has no reason to look for (or start) the local one.
      fs.writeFileSync(file, stringify({ workspace: ws, temporal: { address: '127.0.0.1:9' }, s3: bucket }));
      // eslint-disable-next-line no-control-regex
      const raw = /[\u0000-\u0009\u000b-\u001f\u007f-\u009f]/;
      const text = await rootfs(['--config', file, 's3', 'list'], s3.env);
      assert.equal(text.code, 0, text.stderr);
      assert.ok(!raw.test(text.stdout), JSON.stringify(text.stdout));
      assert.match(
        text.stdout,
        /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d {5}1 Byte notes\\x1b\[2J\\x1b\[1;1H\\nrootfs-python\.ext4$/m,
      );
      assert.match(text.stdout, /^ {31}bash: bash 5\.1\\x1b\]0;owned\\x07\\x9b2J$/m);
      assert.match(text.stdout, /^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d {5}1 Byte a b\+c%41\.txt$/m);
      assert.equal(text.stdout.split('\n').length, 9, 'four objects, a versions line, a blank line, two totals');

      const json = await rootfs(['--config', file, 's3', 'list', '--json'], s3.env);
      assert.equal(json.code, 0, json.stderr);
      assert.ok(!raw.test(json.stdout.replace(/\n/g, '')), JSON.stringify(json.stdout));
      const parsed = JSON.parse(json.stdout) as { objects: Array<{ key: string; manifest?: { versions: string[] } }> };
      assert.ok(
        parsed.objects.some((o) => o.key === hostile),
        'JSON gives the key back exactly',
      );
      assert.deepEqual(parsed.objects.find((o) => o.key === 'rootfs-bash.ext4')?.manifest?.versions, versions);
    } finally {
      c.destroy();
    }
  });

  it('a manifest over 64 KiB is neither read nor written, and its image is not synced', async () => {
    const bucket = { ...(await s3.freshBucket()), blockStore: false };
    const c = createClient({ config: bucket, credentials });
    try {
      const ws = workspace('big-manifest');
      const image = path.join(ws, 'images/rootfs-bash.ext4');
      randomFile(image, 64 * 1024);
      await uploadAll({ client: c, config: bucket, workspace: ws });
      const mkey = 'rootfs-bash.ext4.manifest.json';
      const manifest = Manifest.parse(JSON.parse(await objectText(c, bucket.bucket, mkey)));
      // Valid by the schema, only too large: the cap is what refuses it.
      const big = JSON.stringify({ ...manifest, versions: ['x'.repeat(70_000)] }, null, 2);
      assert.ok(Manifest.safeParse(JSON.parse(big)).success);
      await c.send(new PutObjectCommand({ Bucket: bucket.bucket, Key: mkey, Body: big }));

      const listed = (await listBucket({ client: c, config: bucket })).objects.find(
        (o) => o.key === 'rootfs-bash.ext4',
      )!;
      assert.equal(listed.manifest, undefined);
      assert.equal(
        listed.manifestProblem,
        `${mkey} is not a valid manifest: it has ${Buffer.byteLength(big)} bytes, over the 64 KiB a manifest may have`,
      );
      const report = await syncDown({ client: c, config: bucket, workspace: workspace('big-manifest-mirror') });
      assert.equal(report.ok, false);
      assert.match(
        report.files[0]!.error ?? '',
        /rootfs-bash\.ext4: its manifest is unusable \(.* over the 64 KiB a manifest may have\), so it cannot/,
      );

      await assert.rejects(
        uploadImage({ client: c, config: bucket, workspace: ws }, 'bash', image, { versions: ['y'.repeat(70_000)] }),
        (err: StoreError) =>
          err.kind === 'invalid-input' &&
          /the manifest would have \d+ bytes, over the 64 KiB readers accept\.$/.test(err.message),
      );
    } finally {
      c.destroy();
    }
  });

  it('refuses hostile and malformed language names before sending any request', async () => {
    const counted = s3.countingClient(config, credentials);
    const c = ctx(source, { client: counted.client });
    for (const name of ['python;rm -rf /', '../x', '../../etc/passwd', 'Python', '', 'rust\n', '$(reboot)', 'ruby']) {
      await assert.rejects(uploadSingle(c, name, LANGUAGES), (e: unknown) => {
        assert.ok(e instanceof StoreError && e.kind === 'invalid-input', String(e));
        assert.match(e.message, /is not a (language name|configured language)/);
        return true;
      });
    }
    assert.equal(counted.requests(), 0, 'no request was sent');
    // The counter does count: one real upload of an unchanged image makes requests.
    await uploadSingle(c, 'nodejs', LANGUAGES);
    assert.ok(counted.requests() > 0);
    counted.client.destroy();
  });

  it('works with exactly the permissions of iamPolicy, and says which one is missing when denied', async () => {
    const own = await s3.freshBucket();
    const limited = await s3.restrictedCredentials(iamPolicy(own));
    const c = createClient({ config: own, credentials: limited });
    try {
      const ws = workspace('policy');
      randomFile(path.join(ws, 'vmlinux'), MiB);
      randomFile(path.join(ws, 'images/rootfs-bash.ext4'), 12 * MiB);
      // Cut the first upload off after one part, then resume it (ListParts), then list, sync and abort.
      const stop = new AbortController();
      await assert.rejects(
        uploadAll({
          client: c,
          config: own,
          workspace: ws,
          partSizeBytes: 5 * MiB,
          concurrency: 1,
          signal: stop.signal,
          onPartSent: (key) => key === 'rootfs-bash.ext4' && stop.abort(),
        }),
        (e: unknown) => e instanceof StoreError && e.kind === 'interrupted',
      );
      const results = await uploadAll({ client: c, config: own, workspace: ws, partSizeBytes: 5 * MiB });
      assert.deepEqual(
        results.map((r) => [r.key, r.status, r.partsReused]),
        [
          ['vmlinux', 'unchanged', 0],
          ['rootfs-bash.ext4', 'uploaded', 1],
        ],
      );
      const listing = await listBucket({ client: c, config: own });
      assert.equal(listing.objects.length, 4, 'the plain objects and their manifests');
      assert.deepEqual(
        listing.blockStore?.heads.map((h) => h.key),
        ['rootfs-bash.ext4', 'vmlinux'],
      );
      const mirrorWs = workspace('policy-mirror');
      assert.ok((await syncDown({ client: c, config: own, workspace: mirrorWs })).ok);
      assert.equal(await abortIncompleteUploads(c, own, path.join(ws, '.uploads')), 0);

      const readOnly = createClient({
        config: own,
        credentials: await s3.restrictedCredentials(iamPolicy(own, { access: 'read-only' })),
      });
      randomFile(path.join(ws, 'images/rootfs-bash.ext4'), MiB);
      await assert.rejects(
        uploadImage({ client: readOnly, config: own, workspace: ws }, 'bash', path.join(ws, 'images/rootfs-bash.ext4')),
        {
          message: `Cannot upload s3://${own.bucket}/rootfs-bash.ext4: access denied (the credentials' policy must allow s3:PutObject).`,
        },
      );
      assert.ok(
        (await syncDown({ client: readOnly, config: own, workspace: mirrorWs })).ok,
        'read-only is enough to sync',
      );
      readOnly.destroy();
    } finally {
      c.destroy();
    }
  });

  it('says in one sentence what is wrong: no credentials, refused credentials, no bucket, wrong region, no server', async () => {
    const check = async (cfg: S3Config, creds: TestCredentials | undefined, message: string, kind: string) => {
      const c = createClient({ config: cfg, credentials: creds, maxAttempts: 1 });
      try {
        await assert.rejects(listBucket({ client: c, config: cfg }), (e: unknown) => {
          assert.ok(e instanceof StoreError, String(e));
          assert.equal(e.message, message);
          assert.equal(e.userMessage, message);
          assert.equal(e.kind, kind);
          assert.ok(!e.message.includes('\n') && !/\bat \S+:\d+/.test(e.message), 'no stack trace in the message');
          return true;
        });
      } finally {
        c.destroy();
      }
    };
    const saved = { ...process.env };
    try {
      // The SDK's chain: nothing in the environment, no profile files, no instance metadata.
      for (const k of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN', 'AWS_PROFILE'])
        delete process.env[k];
      Object.assign(process.env, {
        AWS_EC2_METADATA_DISABLED: 'true',
        AWS_SHARED_CREDENTIALS_FILE: '/nonexistent/credentials',
        AWS_CONFIG_FILE: '/nonexistent/config',
      });
      await check(
        config,
        undefined,
        `Cannot list s3://${config.bucket}: no AWS credentials were found (set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE, or use an instance role).`,
        'credentials',
      );
    } finally {
      for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
      Object.assign(process.env, saved);
    }
    await check(
      config,
      { accessKeyId: 'nobody', secretAccessKey: 'wrong-secret' },
      `Cannot list s3://${config.bucket}: the AWS credentials were refused (InvalidAccessKeyId).`,
      'bad-credentials',
    );
    await check(
      { ...config, bucket: 'no-such-bucket-here' },
      credentials,
      'Cannot list s3://no-such-bucket-here: bucket no-such-bucket-here does not exist in region us-east-1.',
      'no-bucket',
    );
    await check(
      { ...config, region: 'eu-west-1' },
      credentials,
      `Cannot list s3://${config.bucket}: the bucket is not in region eu-west-1 (it is in us-east-1); set s3.region or S3_REGION.`,
      'wrong-region',
    );
    await check(
      { ...config, endpoint: 'http://127.0.0.1:9' },
      credentials,
      `Cannot list s3://${config.bucket}: http://127.0.0.1:9 is unreachable (ECONNREFUSED).`,
      'unreachable',
    );
    // A HEAD answers with a bare status; the reason is still found and said, with the key.
    const wrongRegion = { ...config, region: 'eu-west-1' };
    const c = createClient({ config: wrongRegion, credentials });
    await assert.rejects(
      uploadImage(
        { client: c, config: wrongRegion, workspace: source },
        'bash',
        path.join(source, 'images/rootfs-bash.ext4'),
      ),
      {
        message: `Cannot check s3://${config.bucket}/rootfs-bash.ext4: the bucket is not in region eu-west-1 (it is in us-east-1); set s3.region or S3_REGION.`,
      },
    );
    c.destroy();
  });

  it('bucketSetup turns on versioning and reports a server without abort rules plainly', async () => {
    const own = await s3.freshBucket();
    const c = createClient({ config: own, credentials });
    const done = await bucketSetup({ client: c, config: own }, { versioning: true, abortIncompleteDays: 7 });
    assert.equal(done[0], `Versioning is on for bucket ${own.bucket}: overwritten images keep their earlier versions.`);
    // MinIO has no AbortIncompleteMultipartUpload rule (it expires stale uploads itself).
    assert.match(
      done[1]!,
      new RegExp(
        `^The server of bucket ${own.bucket} does not support a lifecycle rule that aborts incomplete uploads \\(InvalidArgument\\)`,
      ),
    );
    assert.equal((await c.send(new GetBucketVersioningCommand({ Bucket: own.bucket }))).Status, 'Enabled');
    assert.deepEqual(await bucketSetup({ client: c, config: own }, {}), []);
    // Versioned or not, an upload and its manifest go through.
    const ws = workspace('versioned');
    randomFile(path.join(ws, 'images/rootfs-bash.ext4'), MiB);
    await uploadAll({ client: c, config: own, workspace: ws });
    const res = await c.send(new GetObjectCommand({ Bucket: own.bucket, Key: 'rootfs-bash.ext4.manifest.json' }));
    assert.equal(
      Manifest.parse(JSON.parse(await res.Body!.transformToString())).sha256,
      sha256File(path.join(ws, 'images/rootfs-bash.ext4')),
    );
    c.destroy();
  });
});
