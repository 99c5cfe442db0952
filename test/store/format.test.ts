import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import { PassThrough } from 'node:stream';
import type { S3Config } from '../../src/config';
import {
  bootstrapScript,
  bucketUrl,
  checkLanguage,
  choosePartSize,
  formatListing,
  formatSync,
  formatTransfer,
  formatUploads,
  humanSize,
  iamPolicy,
  MIN_PART_SIZE,
  printable,
  shellQuote,
  StoreError,
  terminalJson,
  terminalProgress,
  track,
  type Listing,
  type TransferStatus,
} from '../../src/store';

const MiB = 1024 * 1024;
const GiB = 1024 * MiB;

describe('store: human sizes and listings', () => {
  it('prints sizes the way `aws s3 ls --human-readable` does', () => {
    const cases: Array<[number, string]> = [
      [0, '0 Bytes'],
      [1, '1 Byte'],
      [2, '2 Bytes'],
      [1023, '1023 Bytes'],
      [1024, '1.0 KiB'],
      [1536, '1.5 KiB'],
      [1024 * 1023.4, '1023.4 KiB'],
      [1024 * 1023.94, '1.0 MiB'],
      // Would print as 1024.0 KiB: the AWS CLI moves to the next unit.
      [MiB - 1, '1.0 MiB'],
      [512 * MiB, '512.0 MiB'],
      [2 * GiB, '2.0 GiB'],
      [2 * GiB + 300 * MiB, '2.3 GiB'],
      [5 * 1024 * GiB, '5.0 TiB'],
    ];
    for (const [bytes, text] of cases) assert.equal(humanSize(bytes), text, `${bytes}`);
  });

  it('formats a listing with dates, right-aligned sizes, versions under images, and the totals', () => {
    const listing: Listing = {
      bucket: 'b',
      objects: [
        {
          key: 'rootfs-python.ext4',
          sizeBytes: 512 * MiB,
          lastModified: '2024-05-01T12:00:00.000Z',
          kind: 'image',
          language: 'python',
          manifest: {
            format: 1,
            key: 'rootfs-python.ext4',
            kind: 'image',
            language: 'python',
            sizeBytes: 512 * MiB,
            sha256: 'a'.repeat(64),
            crc32: 'AAAAAA==',
            versions: ['Python 3.10.12', 'pip 22.0.2'],
            builtAt: '2024-05-01T11:00:00.000Z',
            uploadedAt: '2024-05-01T12:00:00.000Z',
          },
        },
        {
          key: 'rootfs-python.ext4.manifest.json',
          sizeBytes: 300,
          lastModified: '2024-05-01T12:00:01.000Z',
          kind: 'manifest',
        },
        { key: 'vmlinux', sizeBytes: 21 * MiB + 300 * 1024, lastModified: '2024-04-30T08:05:09.000Z', kind: 'kernel' },
      ],
      totalObjects: 3,
      totalBytes: 512 * MiB + 300 + 21 * MiB + 300 * 1024,
    };
    assert.equal(
      formatListing(listing, { utc: true }),
      [
        '2024-05-01 12:00:00  512.0 MiB rootfs-python.ext4',
        '                               python: Python 3.10.12; pip 22.0.2',
        '2024-05-01 12:00:01  300 Bytes rootfs-python.ext4.manifest.json',
        '2024-04-30 08:05:09   21.3 MiB vmlinux',
        '',
        'Total Objects: 3',
        '   Total Size: 533.3 MiB',
        '',
      ].join('\n'),
    );
    assert.equal(
      formatListing({ bucket: 'b', objects: [], totalObjects: 0, totalBytes: 0 }),
      '\nTotal Objects: 0\n   Total Size: 0 Bytes\n',
    );
  });

  it('escapes what would act on a terminal: controls, DEL, C1, bidi; backslashes doubled; JSON too', () => {
    assert.equal(printable('rootfs-python.ext4'), 'rootfs-python.ext4');
    assert.equal(
      printable('a\u001b[2J\nb\r\tc\u0000\u007f\u009b\u202e\\x1b'),
      'a\\x1b[2J\\nb\\r\\tc\\x00\\x7f\\x9b\\u{202e}\\\\x1b',
    );
    const listing: Listing = {
      bucket: 'b',
      objects: [{ key: 'x\u001b[Ay', sizeBytes: 1, lastModified: '2024-05-01T12:00:00.000Z', kind: 'other' }],
      totalObjects: 1,
      totalBytes: 1,
    };
    assert.match(formatListing(listing, { utc: true }), /^2024-05-01 12:00:00 {5}1 Byte x\\x1b\[Ay$/m);
    const json = terminalJson({ key: 'a\u001b\u009b\u202e\u2028' });
    assert.equal(json, '{\n  "key": "a\\u001b\\u009b\\u202e\\u2028"\n}');
    assert.deepEqual(JSON.parse(json), { key: 'a\u001b\u009b\u202e\u2028' });
  });

  it('summarises uploads and syncs in lines a person reads', () => {
    const common = { file: '/x', kind: 'image' as const, sha256: 'a'.repeat(64), manifestWritten: true };
    const text = formatUploads([
      {
        ...common,
        key: 'rootfs-python.ext4',
        status: 'uploaded',
        sizeBytes: 2 * GiB,
        bytesSent: GiB,
        partsSent: 64,
        partsReused: 64,
        seconds: 12.34,
      },
      {
        ...common,
        key: 'rootfs-go.ext4',
        status: 'unchanged',
        sizeBytes: 40 * MiB,
        bytesSent: 0,
        partsSent: 0,
        partsReused: 0,
        seconds: 0.1,
      },
    ]);
    assert.match(
      text,
      /^uploaded {2}rootfs-python\.ext4 {4}2\.0 GiB {2}12s, resumed: 64 part\(s\) sent, 64 already stored$/m,
    );
    assert.match(text, /^unchanged rootfs-go\.ext4 {7}40\.0 MiB$/m);
    assert.match(text, /^1 uploaded, 1 unchanged, 1\.0 GiB sent$/m);

    const sync = formatSync({
      bucket: 'b',
      files: [
        { key: 'vmlinux', path: '/w/vmlinux', status: 'unchanged', sizeBytes: 9 * MiB, bytes: 0, seconds: 0 },
        {
          key: 'rootfs-go.ext4',
          path: '/w/images/rootfs-go.ext4',
          status: 'failed',
          sizeBytes: 1,
          bytes: 0,
          seconds: 0,
          error: 'Cannot download s3://b/rootfs-go.ext4: …',
        },
      ],
      bytesTransferred: 0,
      ok: false,
      link: '/w/rootfs.ext4',
      linkTarget: 'images/rootfs-python.ext4',
      oldLinkRemoved: '/w/images/rootfs.ext4',
    });
    assert.match(sync, /^FAILED {4}rootfs-go\.ext4 Cannot download s3:\/\/b\/rootfs-go\.ext4: …$/m);
    assert.match(sync, /^0 downloaded \(0 Bytes\), 1 unchanged, 1 failed$/m);
    assert.match(
      sync,
      /^\/w\/rootfs\.ext4 -> images\/rootfs-python\.ext4\nremoved \/w\/images\/rootfs\.ext4, the default link of earlier versions$/m,
    );
  });
});

describe('store: progress', () => {
  it('reports only transfers longer than a second, a few times a second, and ends each with a final status', () => {
    let t = 0;
    const seen: TransferStatus[] = [];
    const short = track(
      (s) => seen.push(s),
      'small',
      'upload',
      100,
      () => t,
    );
    t = 500;
    short.add(100);
    short.end();
    assert.equal(seen.length, 0, 'a transfer under a second says nothing');

    t = 0;
    const long = track(
      (s) => seen.push(s),
      'rootfs-python.ext4',
      'download',
      4 * MiB,
      () => t,
    );
    for (let i = 0; i < 32; i++) {
      t += 125;
      long.add(MiB / 8);
    }
    long.end();
    // 4 s in steps of 125 ms: reports from 1 s on, at most every 250 ms, then the final one.
    assert.ok(seen.length >= 10 && seen.length <= 14, `${seen.length} reports`);
    const last = seen.at(-1)!;
    assert.equal(last.finished, true);
    assert.equal(last.doneBytes, 4 * MiB);
    assert.equal(Math.round(last.bytesPerSecond), MiB);
    const mid = seen[0]!;
    assert.equal(mid.finished, false);
    assert.ok(mid.etaSeconds! > 2 && mid.etaSeconds! < 3.5, `eta ${mid.etaSeconds}`);
    assert.equal(formatTransfer(mid), 'download rootfs-python.ext4  1.0 MiB / 4.0 MiB  25%  1.0 MiB/s  ETA 3s');
    assert.match(
      formatTransfer(last),
      /^download rootfs-python\.ext4 {2}4\.0 MiB \/ 4\.0 MiB {2}100% {2}1\.0 MiB\/s {2}in 4s$/,
    );
  });

  it('draws on a terminal and stays quiet when output is not a terminal', () => {
    const status: TransferStatus = {
      key: 'k',
      action: 'upload',
      doneBytes: MiB,
      totalBytes: 2 * MiB,
      elapsedMs: 2000,
      bytesPerSecond: MiB / 2,
      etaSeconds: 2,
      finished: false,
    };
    const pipe = new PassThrough();
    let written = '';
    pipe.on('data', (c: Buffer) => (written += c.toString()));
    terminalProgress(pipe as unknown as NodeJS.WriteStream)(status);
    assert.equal(written, '');
    const tty = Object.assign(new PassThrough(), { isTTY: true });
    tty.on('data', (c: Buffer) => (written += c.toString()));
    const sink = terminalProgress(tty as unknown as NodeJS.WriteStream);
    sink(status);
    sink({ ...status, finished: true });
    assert.equal(
      written,
      `\r\x1b[K${formatTransfer(status)}\r\x1b[K${formatTransfer({ ...status, finished: true })}\n`,
    );
  });
});

describe('store: names, policy, part sizes and the bootstrap script', () => {
  const s3: S3Config = { bucket: 'llm-infra-operator-rootfs', region: 'eu-west-1', forcePathStyle: false };

  it('accepts configured language names only', () => {
    assert.equal(checkLanguage('python', ['bash', 'python']), 'python');
    for (const bad of ['python;rm -rf /', '../x', 'Python', '', 'py thon', 'a'.repeat(40), '$(id)']) {
      assert.throws(
        () => checkLanguage(bad, ['python']),
        (e: unknown) =>
          e instanceof StoreError && e.kind === 'invalid-input' && /is not a language name/.test(e.message),
      );
    }
    assert.throws(() => checkLanguage('ruby', ['bash', 'python']), {
      message: '"ruby" is not a configured language (configured: bash, python).',
    });
    assert.throws(() => checkLanguage(42, ['python']), /is not a language name/);
  });

  it('grants exactly the actions the tool uses, on exactly its keys', () => {
    const policy = iamPolicy(s3);
    assert.equal(policy.Version, '2012-10-17');
    const actions = policy.Statement.flatMap((s) => s.Action).sort();
    assert.deepEqual(actions, [
      's3:AbortMultipartUpload',
      's3:DeleteObject',
      's3:GetObject',
      's3:ListBucket',
      's3:ListBucketMultipartUploads',
      's3:ListMultipartUploadParts',
      's3:PutObject',
    ]);
    // Deletes only what prune removes: the block store's immutable indexes and packs, never an image.
    const deletes = policy.Statement.filter((st) => st.Action.includes('s3:DeleteObject'));
    assert.deepEqual(
      deletes.flatMap((st) => st.Resource),
      [
        'arn:aws:s3:::llm-infra-operator-rootfs/blocks/indexes/*',
        'arn:aws:s3:::llm-infra-operator-rootfs/blocks/packs/*',
      ],
    );
    assert.deepEqual(
      deletes.flatMap((st) => st.Action),
      ['s3:DeleteObject'],
    );
    const bucketStatement = policy.Statement.find((s) => s.Action.includes('s3:ListBucket'))!;
    assert.deepEqual(bucketStatement.Resource, ['arn:aws:s3:::llm-infra-operator-rootfs']);
    const objectStatement = policy.Statement.find((s) => s.Action.includes('s3:GetObject'))!;
    assert.deepEqual(objectStatement.Resource, [
      'arn:aws:s3:::llm-infra-operator-rootfs/vmlinux',
      'arn:aws:s3:::llm-infra-operator-rootfs/vmlinux.manifest.json',
      'arn:aws:s3:::llm-infra-operator-rootfs/vmlinux.config',
      'arn:aws:s3:::llm-infra-operator-rootfs/rootfs-*.ext4',
      'arn:aws:s3:::llm-infra-operator-rootfs/rootfs-*.ext4.manifest.json',
      'arn:aws:s3:::llm-infra-operator-rootfs/blocks/*',
    ]);
    assert.deepEqual(
      iamPolicy(s3.bucket, { access: 'read-only' }).Statement.flatMap((s) => s.Action),
      ['s3:ListBucket', 's3:GetObject'],
    );
    const withSetup = iamPolicy(s3, { includeBucketSetup: true }).Statement.at(-1)!;
    assert.deepEqual(withSetup.Action, [
      's3:PutBucketVersioning',
      's3:GetLifecycleConfiguration',
      's3:PutLifecycleConfiguration',
    ]);
    assert.deepEqual(withSetup.Resource, ['arn:aws:s3:::llm-infra-operator-rootfs']);
  });

  it('sizes parts within the limits of S3', () => {
    assert.equal(choosePartSize(2 * GiB), 16 * MiB);
    assert.equal(choosePartSize(10 * MiB, MiB), MIN_PART_SIZE);
    // 10 000 parts at most: 1 TiB needs parts of at least 105 MiB (rounded to whole MiB).
    assert.equal(choosePartSize(1024 * GiB), 105 * MiB);
  });

  it('builds object URLs path-style or virtual-hosted as configured', () => {
    assert.equal(bucketUrl(s3), 'https://llm-infra-operator-rootfs.s3.eu-west-1.amazonaws.com');
    assert.equal(bucketUrl({ ...s3, bucket: 'a.b.c' }), 'https://s3.eu-west-1.amazonaws.com/a.b.c');
    assert.equal(
      bucketUrl({ ...s3, endpoint: 'http://127.0.0.1:9000/', forcePathStyle: true }),
      'http://127.0.0.1:9000/llm-infra-operator-rootfs',
    );
    assert.equal(
      bucketUrl({ ...s3, endpoint: 'https://s3.example.test' }),
      'https://llm-infra-operator-rootfs.s3.example.test',
    );
  });

  it('writes a bash script that parses, quotes its values, and refuses odd inputs', () => {
    const script = bootstrapScript(
      { s3, workspace: '/srv/firecracker', languages: { bash: {}, python: {} } },
      { fallbackUrl: 'https://images.example.test/rootfs/' },
    );
    execFileSync('bash', ['-n'], { input: script });
    assert.match(script, /^#!\/bin\/bash\n/);
    assert.match(
      script,
      /^S3_BUCKET_URL=\$\{S3_BUCKET_URL:-'https:\/\/llm-infra-operator-rootfs\.s3\.eu-west-1\.amazonaws\.com'\}$/m,
    );
    assert.match(script, /^FALLBACK_URL=\$\{ROOTFS_FALLBACK_URL:-'https:\/\/images\.example\.test\/rootfs'\}$/m);
    assert.match(script, /^LANGUAGES='bash python'$/m);
    assert.ok(!/AWS_SECRET_ACCESS_KEY"? *\S*@/.test(script));
    assert.equal(shellQuote("it's"), `'it'\\''s'`);
    assert.throws(
      () => bootstrapScript({ s3, workspace: '/srv/firecracker', languages: ['py;thon'] }),
      /is not a language name/,
    );
    const refused = (fallbackUrl: string, why: RegExp) =>
      assert.throws(
        () => bootstrapScript({ s3, workspace: '/w', languages: [] }, { fallbackUrl }),
        (err: StoreError) => err.kind === 'invalid-input' && why.test(err.message),
      );
    refused("https://x/'$(id)'", /is not an https URL\.$/);
    refused('file:///etc', /is not an https URL\.$/);
    refused(
      'http://images.example.test/rootfs',
      /"http:\/\/images\.example\.test\/rootfs" is not an https URL: .* must not be open to change in transit\.$/,
    );
    refused('https://user:pass@images.example.test/rootfs', /carries credentials/);
    refused('https://images.example.test/rootfs?token=1', /has a \?query or #fragment/);
    const pin = (pins: Record<string, string>) => bootstrapScript({ s3, workspace: '/w', languages: [] }, { pins });
    execFileSync('bash', ['-n'], { input: pin({ 'rootfs-go.ext4': 'a'.repeat(64), vmlinux: 'b'.repeat(64) }) });
    assert.match(
      pin({ 'rootfs-go.ext4': 'a'.repeat(64), vmlinux: 'b'.repeat(64) }),
      /^PINNED_KEYS='vmlinux rootfs-go\.ext4'$/m,
    );
    assert.throws(
      () => pin({ "rootfs-go.ext4'$(id)'": 'a'.repeat(64) }),
      /Cannot pin .*: not a kernel or image key\.$/,
    );
    assert.throws(() => pin({ vmlinux: "a'$(id)'" }), /Cannot pin vmlinux: .* is not a sha256\.$/);
  });
});
