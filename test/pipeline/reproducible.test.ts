import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { stringify } from 'yaml';
import { loadConfig } from '../../src/config';
import { Base } from '../../src/config/schema';
import { LocalHost, SshHost } from '../../src/host';
import { Archive } from '../../src/pipeline/archive';
import { BuildError, StepRunner } from '../../src/pipeline/context';
import { Pipeline } from '../../src/pipeline/pipeline';
import type { PublishedManifest } from '../../src/pipeline/publish';
import {
  archiveEpoch,
  clampCommands,
  clampImageTimes,
  clampShadow,
  e2fsEnv,
  imageUuid,
  installedPackages,
  mkfsArgv,
  packageLines,
  releaseDate,
  settleTree,
  treeUsageBytes,
  treeUsageMiB,
  usedInodes,
} from '../../src/pipeline/reproducible';
import { TreeOrigin } from '../../src/pipeline/step-data';
import { requireTool } from '../../src/setup/tools';
import { Manifest } from '../../src/store/layout';
import { startFixtureServer } from '../support/fixture-server';
import { catInImage, debugfs, e2fsckStatus, statInImage } from '../support/image';
import { tempDir } from '../support/process';
import { testSshd } from '../support/sshd';

const sha256 = (b: Buffer | string) => crypto.createHash('sha256').update(b).digest('hex');
const runner = () => new StepRunner(new LocalHost());

/** An InRelease as the archive signs it, cut short: the header fields, then the signature. */
const inRelease = (date: string, suite: string) =>
  `-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nOrigin: Ubuntu\nSuite: ${suite}\nDate: ${date}\n` +
  `SHA256:\n 0123 12 main/binary-amd64/Packages\n-----BEGIN PGP SIGNATURE-----\n\nxyz\n-----END PGP SIGNATURE-----\n`;

describe('reproducible images: the pure parts', () => {
  it('take the epoch from the newest InRelease Date:, space-padded hours included', () => {
    assert.equal(releaseDate(inRelease('Thu, 21 Apr 2022 17:16:08 UTC', 'jammy')), 1650561368);
    assert.equal(releaseDate(inRelease('Sat, 21 Nov 2026  9:56:45 UTC', 'jammy-updates')), 1795255005);
    assert.equal(
      archiveEpoch([
        inRelease('Thu, 21 Apr 2022 17:16:08 UTC', 'jammy'),
        inRelease('Sat, 21 Nov 2026  9:56:45 UTC', 'jammy-updates'),
      ]),
      1795255005,
    );
    assert.throws(() => releaseDate('Origin: Ubuntu\n'), /no Date: field/);
    assert.throws(() => releaseDate(inRelease('Thu, 21 Apr 2022 17:16:08 +0200', 'jammy')), /in UTC/);
    assert.throws(() => archiveEpoch([]), /no InRelease/);
  });

  it("clamp /etc/shadow's last-change days after the epoch's day, and keep the ones that mean something", () => {
    const shadow = 'root:*:20780:0:99999:7:::\nsys:*:19000:0:99999:7:::\nnew:!:0:0:99999:7:::\nnone:*::0:99999:7:::\n';
    assert.equal(
      clampShadow(shadow, 20778),
      'root:*:20778:0:99999:7:::\nsys:*:19000:0:99999:7:::\nnew:!:0:0:99999:7:::\nnone:*::0:99999:7:::\n',
    );
    assert.equal(clampShadow('garbage\n', 1), 'garbage\n');
  });

  it('find the inodes in use from dumpe2fs, and address them by number', () => {
    const dumpe2fs = [
      'Inode count:              48',
      'First inode:              11',
      'Group 0: (Blocks 0-32767) csum 0x2a05',
      '  Free inodes: 14-16, 20',
      'Group 1: (Blocks 32768-65535) csum 0x1836 [INODE_UNINIT]',
      '  Free inodes: 25-48',
      'Group 2: (Blocks 65536-98303)',
      '  Free inodes: ',
    ].join('\n');
    assert.deepEqual(usedInodes(dumpe2fs), [2, 11, 12, 13, 17, 18, 19, 21, 22, 23, 24]);
    assert.throws(() => usedInodes('Inode count: 4\n'), /no inode count or first inode/);
    assert.throws(() => usedInodes(`${dumpe2fs}\n  Free inodes: 3-x`), /cannot read: 3-x/);
    assert.equal(
      clampCommands([2, 11], 7),
      'sif <2> atime @7\nsif <2> ctime @7\nsif <11> atime @7\nsif <11> ctime @7\n',
    );
  });

  it('measure a tree from its content: hard links once, a block per folder and long link, the names', () => {
    const listing = [
      'd 4096 2 1 tree',
      'f 1 1 2 a',
      'f 5000 2 3 hard',
      'f 5000 2 3 link-to-hard',
      'l 10 1 4 short',
      `l 70 1 5 long`,
      '',
    ].join('\0');
    const names = ['tree', 'a', 'hard', 'link-to-hard', 'short', 'long'];
    const entries = names.reduce((n, name) => n + 8 + Math.ceil(name.length / 4) * 4, 0);
    assert.equal(treeUsageBytes(listing), entries + 4096 + 4096 + 8192 + 4096);
  });

  it('list installed packages sorted, without the removed ones', () => {
    assert.deepEqual(packageLines('installed zlib1g 1:1.2.11\nconfig-files old 1.0\ninstalled bash 5.1-6ubuntu1\n'), [
      'bash 5.1-6ubuntu1',
      'zlib1g 1:1.2.11',
    ]);
  });

  it("derive the image's UUID from its key", () => {
    assert.equal(imageUuid('image-0123456789abcdef0123456789abcdef'), '01234567-89ab-4def-8123-456789abcdef');
  });

  it('keep manifests written before parseable, and check the new fields', () => {
    const old = {
      format: 1,
      key: 'rootfs-bash.ext4',
      kind: 'image',
      language: 'bash',
      sizeBytes: 1,
      sha256: 'a'.repeat(64),
      crc32: 'AAAAAA==',
      versions: [],
      builtAt: '2026-01-01T00:00:00.000Z',
      uploadedAt: '2026-01-01T00:00:00.000Z',
    };
    assert.equal(Manifest.parse(old).packages, undefined);
    const now = {
      ...old,
      archive: { jammy: 'b'.repeat(64) },
      packages: ['bash 5.1-6ubuntu1'],
      operatorSha256: 'c'.repeat(64),
    };
    assert.deepEqual(Manifest.parse(now).archive, { jammy: 'b'.repeat(64) });
    assert.ok(!Manifest.safeParse({ ...now, packages: ['bash 5.1\nevil'] }).success);
    assert.ok(!Manifest.safeParse({ ...now, archive: { '../x': 'b'.repeat(64) } }).success);
  });
});

/** A small root tree, written now: what a build leaves, with this moment's times and logs. */
function writeTree(tree: string, stamp: string): void {
  const files: Record<string, string> = {
    'etc/machine-id': `${sha256(stamp).slice(0, 32)}\n`,
    'etc/shadow': 'root:*:20780:0:99999:7:::\nold:*:19000:0:99999:7:::\n',
    'etc/shadow-': `root:*:${stamp.length}:0:99999:7:::\n`,
    'etc/hostname': 'localhost\n',
    'var/log/dpkg.log': `${stamp} status installed bash\n`,
    'var/log/apt/history.log': `Start-Date: ${stamp}\n`,
    'var/log/apt/eipp.log.xz': stamp,
    'var/cache/ldconfig/aux-cache': stamp,
    'var/cache/debconf/config.dat': 'Name: x\n',
    'var/cache/debconf/config.dat-old': stamp,
    'var/lib/dpkg/status-old': stamp,
    'usr/bin/tool': '#!/bin/sh\necho tool\n',
  };
  for (const [name, content] of Object.entries(files)) {
    fs.mkdirSync(path.join(tree, path.dirname(name)), { recursive: true });
    fs.writeFileSync(path.join(tree, name), content);
  }
  fs.writeFileSync(path.join(tree, 'var/log/wtmp'), '');
  fs.chmodSync(path.join(tree, 'etc/shadow'), 0o640);
  // From a package: an mtime of its own, which the image keeps.
  execFileSync('touch', ['-d', '@1600000000', path.join(tree, 'usr/bin/tool')]);
  fs.linkSync(path.join(tree, 'usr/bin/tool'), path.join(tree, 'usr/bin/tool-again'));
  fs.symlinkSync('/usr/bin/tool', path.join(tree, 'usr/bin/t'));
}

/** stat of a path in an image, its four times in seconds. */
function timesInImage(image: string, file: string): Record<'atime' | 'ctime' | 'mtime' | 'crtime', number> {
  const out = debugfs(image, `stat ${file}`);
  const at = (name: string) => parseInt(new RegExp(`^ *${name}: 0x([0-9a-f]+)`, 'm').exec(out)![1]!, 16);
  return { atime: at('atime'), ctime: at('ctime'), mtime: at('mtime'), crtime: at('crtime') };
}

describe('reproducible images: settled trees and clamped images @real', function () {
  this.timeout(60_000);
  const epoch = 1795255005;

  /** settle, measure, mkfs and clamp as the pipeline does; returns the image. */
  async function imageOf(tree: string, clamp = true, r = runner()): Promise<string> {
    await settleTree(r, tree, epoch);
    const image = `${tree}.ext4`;
    const sizeMiB = (await treeUsageMiB(r, tree)) + 16;
    await r.run(mkfsArgv(tree, image, sizeMiB, imageUuid('image-0123456789abcdef0123456789abcdef')), {
      env: e2fsEnv(epoch),
    });
    if (clamp) await clampImageTimes(r, image, epoch, path.dirname(tree));
    return image;
  }

  it('two trees with the same content, written at different times and ways, give the same image', async () => {
    const dir = tempDir('settle');
    const [a, b, c] = ['a', 'b', 'c'].map((n) => path.join(dir, n)) as [string, string, string];
    writeTree(a, 'first build 2026-11-23 10:00:01');
    // The second build writes later, and its folders have a history: /usr/bin once held many files.
    await new Promise((r) => setTimeout(r, 1100));
    fs.mkdirSync(path.join(b, 'usr/bin'), { recursive: true });
    for (let i = 0; i < 400; i++) fs.writeFileSync(path.join(b, 'usr/bin', `tmp-${i}-${'x'.repeat(40)}`), '');
    for (let i = 0; i < 400; i++) fs.rmSync(path.join(b, 'usr/bin', `tmp-${i}-${'x'.repeat(40)}`));
    writeTree(b, 'second build 2026-11-24 18:30:59 on another host');
    execFileSync('cp', ['-a', a, c]);
    const du = (t: string) => execFileSync('du', ['-s', '--block-size=1', t], { encoding: 'utf8' }).split('\t')[0];
    assert.notEqual(du(a), du(b), 'the host filesystem allocated the two trees differently');

    const [imageA, imageB] = [await imageOf(a), await imageOf(b)];
    assert.equal(sha256(fs.readFileSync(imageA)), sha256(fs.readFileSync(imageB)));
    assert.equal(e2fsckStatus(imageA), 0);
    // Without the pass over the inodes, the ctimes of the build remain.
    const unclamped = await imageOf(c, false);
    assert.notEqual(sha256(fs.readFileSync(unclamped)), sha256(fs.readFileSync(imageA)));

    for (const gone of ['var/log/dpkg.log', 'var/log/apt/history.log', 'var/log/apt/eipp.log.xz']) {
      assert.ok(!fs.existsSync(path.join(a, gone)), gone);
    }
    for (const gone of [
      'var/cache/ldconfig/aux-cache',
      'var/cache/debconf/config.dat-old',
      'var/lib/dpkg/status-old',
    ]) {
      assert.ok(!fs.existsSync(path.join(a, gone)), gone);
    }
    assert.ok(!fs.existsSync(path.join(a, 'etc/shadow-')));
    assert.ok(fs.existsSync(path.join(a, 'var/log/wtmp')), 'an empty log file that systemd expects stays');
    assert.ok(fs.existsSync(path.join(a, 'var/cache/debconf/config.dat')));
    assert.equal(fs.readFileSync(path.join(a, 'etc/machine-id'), 'utf8'), '');
    const day = Math.floor(epoch / 86400);
    assert.equal(
      fs.readFileSync(path.join(a, 'etc/shadow'), 'utf8'),
      `root:*:${day}:0:99999:7:::\nold:*:19000:0:99999:7:::\n`,
    );
    assert.equal(fs.statSync(path.join(a, 'etc/shadow')).mode & 0o777, 0o640, 'shadow keeps its mode');

    const generated = timesInImage(imageA, '/etc/hostname');
    assert.deepEqual(generated, { atime: epoch, ctime: epoch, mtime: epoch, crtime: epoch });
    const packaged = timesInImage(imageA, '/usr/bin/tool');
    assert.deepEqual(packaged, { atime: epoch, ctime: epoch, mtime: 1600000000, crtime: epoch });
    assert.equal(timesInImage(imageA, '/').mtime <= epoch, true);
  });

  it('settles and clamps the same over SSH', async () => {
    const dir = tempDir('settle-ssh');
    const [local, remote] = [path.join(dir, 'local'), path.join(dir, 'remote')];
    writeTree(local, 'a local build');
    writeTree(remote, 'a build on another host');
    const sshd = await testSshd();
    const { host: address, port, user, clientKeyPath: keyPath, hostKeySha256 } = sshd;
    const host = await SshHost.connect({ host: address, port, user, keyPath, hostKeySha256 });
    try {
      const overSsh = await imageOf(remote, true, new StepRunner(host));
      assert.equal(sha256(fs.readFileSync(overSsh)), sha256(fs.readFileSync(await imageOf(local))));
    } finally {
      await host.close();
    }
  });

  it('removes links it finds, never what they point to on the build host', async () => {
    const dir = tempDir('settle-links');
    const tree = path.join(dir, 'tree');
    const host = path.join(dir, 'host');
    fs.mkdirSync(path.join(host, 'log'), { recursive: true });
    fs.writeFileSync(path.join(host, 'aux-cache'), 'host file\n');
    fs.writeFileSync(path.join(host, 'log/dpkg.log'), 'host log\n');
    fs.mkdirSync(path.join(tree, 'var/cache/ldconfig'), { recursive: true });
    fs.mkdirSync(path.join(tree, 'etc'), { recursive: true });
    fs.symlinkSync(path.join(host, 'aux-cache'), path.join(tree, 'var/cache/ldconfig/aux-cache'));
    fs.symlinkSync(path.join(host, 'log'), path.join(tree, 'var/log'));
    fs.symlinkSync(path.join(host, 'aux-cache'), path.join(tree, 'etc/shadow'));
    await settleTree(runner(), tree, 1795255005);
    assert.equal(fs.readFileSync(path.join(host, 'aux-cache'), 'utf8'), 'host file\n');
    assert.equal(fs.readFileSync(path.join(host, 'log/dpkg.log'), 'utf8'), 'host log\n');
    assert.ok(!fs.existsSync(path.join(tree, 'var/cache/ldconfig/aux-cache')));
  });

  it("lists the packages of a tree's dpkg database with the build host's dpkg-query", async () => {
    const tree = tempDir('dpkgdb');
    fs.mkdirSync(path.join(tree, 'var/lib/dpkg/info'), { recursive: true });
    const entry = (pkg: string, status: string, version: string) =>
      `Package: ${pkg}\nStatus: ${status}\nArchitecture: amd64\nVersion: ${version}\nDescription: x\n`;
    fs.writeFileSync(
      path.join(tree, 'var/lib/dpkg/status'),
      [
        entry('zlib1g', 'install ok installed', '1:1.2.11.dfsg-2ubuntu9.2'),
        entry('old', 'deinstall ok config-files', '1.0'),
        entry('bash', 'install ok installed', '5.1-6ubuntu1.1'),
      ].join('\n'),
    );
    assert.deepEqual(await installedPackages(runner(), tree), [
      'bash 5.1-6ubuntu1.1',
      'zlib1g 1:1.2.11.dfsg-2ubuntu9.2',
    ]);
  });

  it('takes the epoch of a snapshot from the InRelease files it cached, and refuses one the archive no longer serves', async () => {
    const fixture = await startFixtureServer();
    const jammy = inRelease('Thu, 21 Apr 2022 17:16:08 UTC', 'jammy');
    fixture.serve('/ubuntu/dists/jammy/InRelease', jammy);
    fixture.serve('/ubuntu/dists/jammy-updates/InRelease', inRelease('Sat, 21 Nov 2026  9:56:45 UTC', 'jammy-updates'));
    const cacheDir = tempDir('inrelease');
    const base = Base.parse({ mirror: `${fixture.url}/ubuntu`, pockets: ['updates'] });
    const archive = new Archive(runner(), base, '/nonexistent.gpg', cacheDir);
    const snapshot = await archive.state();
    assert.deepEqual(Object.keys(snapshot), ['jammy', 'jammy-updates']);
    assert.equal(snapshot.jammy, sha256(jammy));

    // The archive publishes: the build's snapshot still has its epoch, from the copies state() kept.
    fixture.serve('/ubuntu/dists/jammy-updates/InRelease', inRelease('Mon, 23 Nov 2026 10:00:00 UTC', 'jammy-updates'));
    const hits = fixture.hits('/ubuntu/dists/jammy-updates/InRelease');
    assert.equal(await archive.epochOf(snapshot), 1795255005);
    assert.equal(fixture.hits('/ubuntu/dists/jammy-updates/InRelease'), hits, 'read from the cache');
    assert.equal(await archive.epochOf(await archive.state()), Date.UTC(2026, 10, 23, 10) / 1000);

    // Names that would reach a URL or a path are refused before any request.
    const bads: Array<Record<string, string>> = [{ '../x': sha256('x') }, { jammy: '../../../etc/passwd' }];
    for (const bad of bads) {
      await assert.rejects(
        archive.epochOf(bad),
        (err: unknown) => err instanceof BuildError && err.type === 'InvalidInput',
      );
    }

    // A build host without the copies: what the archive serves now is not the snapshot's.
    const elsewhere = new Archive(runner(), base, '/nonexistent.gpg', tempDir('inrelease-empty'));
    await assert.rejects(
      elsewhere.epochOf(snapshot),
      (err: unknown) =>
        err instanceof BuildError &&
        err.type === 'ChecksumMismatch' &&
        /jammy-updates InRelease is no longer the one this build's archive snapshot names/.test(err.message),
    );
  });
});

/** Path → what a file is (type, mode, owner, size, content or link target, mtime), for every entry of a tree. */
function treeSignatures(root: string): Map<string, string> {
  const out = new Map<string, string>();
  const walk = (rel: string) => {
    for (const name of fs.readdirSync(path.join(root, rel)).sort()) {
      const p = path.join(rel, name);
      const st = fs.lstatSync(path.join(root, p));
      const what = st.isFile()
        ? sha256(fs.readFileSync(path.join(root, p))).slice(0, 16)
        : st.isSymbolicLink()
          ? `-> ${fs.readlinkSync(path.join(root, p))}`
          : '';
      const size = st.isDirectory() ? '' : String(st.size);
      out.set(p, `${st.mode.toString(8)} ${st.uid}:${st.gid} ${size} ${what} mtime ${Math.floor(st.mtimeMs / 1000)}`);
      if (st.isDirectory()) walk(p);
    }
  };
  walk('');
  return out;
}

/**
 * What differs between two images and the trees they were made from, for a failure message: the
 * first differing entries of the trees, the superblock fields, and the first differing blocks of
 * the images with the inodes (and paths) that own them.
 */
function imageDifferences(imageA: string, treeA: string, imageB: string, treeB: string): string {
  const lines: string[] = [];
  const [a, b] = [treeSignatures(treeA), treeSignatures(treeB)];
  const names = [...new Set([...a.keys(), ...b.keys()])].sort();
  const trees = names.filter((n) => a.get(n) !== b.get(n)).slice(0, 15);
  lines.push(`trees: ${trees.length ? '' : 'equal'}`);
  for (const n of trees) lines.push(`  /${n}: ${a.get(n) ?? 'absent'} | ${b.get(n) ?? 'absent'}`);
  const header = (image: string) =>
    execFileSync('dumpe2fs', ['-h', image], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).split('\n');
  const [ha, hb] = [header(imageA), header(imageB)];
  const fields = ha.flatMap((l, i) => (l === hb[i] ? [] : [`  ${l} | ${hb[i] ?? ''}`.slice(0, 200)]));
  lines.push(`superblocks: ${fields.length ? '' : 'equal'}`, ...fields.slice(0, 10));
  const blocks: number[] = [];
  const [fa, fb] = [fs.openSync(imageA, 'r'), fs.openSync(imageB, 'r')];
  const [ba, bb] = [Buffer.alloc(1 << 20), Buffer.alloc(1 << 20)];
  for (let off = 0; blocks.length < 10; off += 1 << 20) {
    const [na, nb] = [fs.readSync(fa, ba.fill(0), 0, ba.length, off), fs.readSync(fb, bb.fill(0), 0, bb.length, off)];
    if (!na && !nb) break;
    for (let i = 0; i < Math.max(na, nb) && blocks.length < 10; i += 4096) {
      if (!ba.subarray(i, i + 4096).equals(bb.subarray(i, i + 4096))) blocks.push((off + i) / 4096);
    }
  }
  fs.closeSync(fa);
  fs.closeSync(fb);
  const owners = blocks.length ? debugfs(imageA, `icheck ${blocks.join(' ')}`) : '';
  const inodes = [...owners.matchAll(/^\d+\s+(\d+)$/gm)].map((m) => m[1]);
  const paths = inodes.length ? debugfs(imageA, `ncheck ${inodes.join(' ')}`) : '';
  const rows = (text: string) =>
    text
      .split('\n')
      .filter((l) => /^\s*\d/.test(l))
      .map((l) => l.trim().replace(/\s+/, ' '));
  lines.push(`first differing 4 KiB blocks (block inode): ${rows(owners).join('; ') || 'none'}`);
  if (rows(paths).length) lines.push(`their paths (inode path): ${rows(paths).join('; ')}`);
  return lines.join('\n');
}

describe('two cold builds in two workspaces, same config and archive snapshot @real @heavy', function () {
  this.timeout(40 * 60 * 1000);

  /** A pipeline on its own workspace (an empty artifact store), with the default config. */
  function pipelineIn(name: string): Pipeline {
    const dir = tempDir(name);
    const workspace = path.join(dir, 'workspace');
    fs.writeFileSync(path.join(dir, 'rootfs.yaml'), stringify({ workspace }));
    const { config } = loadConfig({ file: path.join(dir, 'rootfs.yaml'), env: {} });
    return new Pipeline(new StepRunner(new LocalHost()), {
      config,
      operatorPath: requireTool('referenceOperator'),
      keyringPath: requireTool('ubuntuKeyring'),
    });
  }

  it('give bash and python images (and a customized bash) with the same sha256 and size, clean, that say what they were built from', async () => {
    const [a, b] = [pipelineIn('repro-a'), pipelineIn('repro-b')];
    const snapshot = await a.archiveSnapshot();
    const languages = ['bash', 'python'];
    // Step by step, a then b: the two read the archive (mmdebstrap, apt) as close together as they can.
    const both = async <T>(step: (p: Pipeline) => Promise<T>): Promise<[T, T]> => [await step(a), await step(b)];
    const [{ operatorSha256 }] = await both((p) => p.prepare('bash'));
    const [baseA, baseB] = await both((p) => p.base(snapshot));
    assert.ok(!baseA.reused && !baseB.reused, 'both bases were built');
    for (const language of languages) {
      const [runtime] = await both((p) => p.runtime(language, baseA.key, snapshot));
      const [operator] = await both((p) => p.operator(language, runtime.key, operatorSha256));
      const [verify] = await both((p) => p.verify(language, operator.key));
      const [imageA, imageB] = await both((p) => p.image(language, verify.key, operator.key));
      assert.ok(!imageA.reused && !imageB.reused);
      const files = [imageA.data.path, imageB.data.path];
      const why = () => imageDifferences(files[0]!, a.store.tree(operator.key), files[1]!, b.store.tree(operator.key));
      if (imageA.data.sha256 !== imageB.data.sha256 || imageA.data.sizeBytes !== imageB.data.sizeBytes) {
        assert.fail(
          `${language}: ${imageA.data.sha256} (${imageA.data.sizeBytes} bytes) in one workspace, ` +
            `${imageB.data.sha256} (${imageB.data.sizeBytes} bytes) in the other:\n${why()}`,
        );
      }
      for (const file of files) {
        assert.equal(sha256(fs.readFileSync(file)), imageA.data.sha256, file);
        assert.equal(e2fsckStatus(file), 0, `e2fsck -fn ${file}`);
      }

      const epoch = TreeOrigin.parse((await a.store.lookup(operator.key))!.data).epoch;
      assert.equal(epoch, archiveEpoch(snapshotInReleases(a, snapshot)));
      assert.deepEqual(timesInImage(files[0]!, '/etc/hostname'), {
        atime: epoch,
        ctime: epoch,
        mtime: epoch,
        crtime: epoch,
      });
      assert.equal(catInImage(files[0]!, '/etc/machine-id'), '');
      assert.equal(statInImage(files[0]!, '/var/log/dpkg.log'), null);
      assert.equal(statInImage(files[0]!, '/var/cache/ldconfig/aux-cache'), null);

      const manifest = JSON.parse(fs.readFileSync(`${files[0]}.manifest.json`, 'utf8')) as PublishedManifest;
      assert.deepEqual(manifest.archive, snapshot);
      assert.equal(manifest.operatorSha256, operatorSha256);
      assert.ok(manifest.packages!.some((p) => /^bash 5\.1-/.test(p)));
      assert.ok(manifest.packages!.some((p) => /^systemd 249\./.test(p)));
      if (language === 'python') assert.ok(manifest.packages!.some((p) => /^python3 3\.10\./.test(p)));
      assert.deepEqual(manifest.packages, [...manifest.packages!].sort());
    }

    // A one-off change is settled the same way: the same command gives the same image in both.
    const argv = ['sh', '-c', 'echo hello > /etc/motd.d-custom; touch /var/log/custom.log'];
    const [customA, customB] = await both(async (p) => {
      const changed = await p.customize('bash', argv);
      const verify = await p.verify('bash', changed.key);
      return {
        tree: p.store.tree(changed.key),
        image: await p.image('bash', verify.key, changed.key, changed.customizations),
      };
    });
    if (customA.image.data.sha256 !== customB.image.data.sha256) {
      const [a, b] = [customA, customB];
      assert.fail(
        `customized bash differs:\n${imageDifferences(a.image.data.path, a.tree, b.image.data.path, b.tree)}`,
      );
    }
    assert.equal(catInImage(customA.image.data.path, '/etc/motd.d-custom'), 'hello\n');
    assert.equal(statInImage(customA.image.data.path, '/var/log/custom.log'), null);
  });
});

/** The InRelease files the pipeline cached for `snapshot` in its workspace. */
function snapshotInReleases(p: Pipeline, snapshot: Record<string, string>): string[] {
  const cache = path.join(path.dirname(p.store.root), 'cache', 'inrelease');
  return Object.values(snapshot).map((sha) => fs.readFileSync(path.join(cache, `${sha}.InRelease`), 'utf8'));
}
