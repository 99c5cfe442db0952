import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BuildError, StepRunner } from '../../src/pipeline/context';
import { Pipeline } from '../../src/pipeline/pipeline';
import { installSource, type SourceContext } from '../../src/pipeline/sources';
import { resolveInTree, writeInTree } from '../../src/pipeline/tree-path';
import { Config } from '../../src/config/schema';
import { LocalHost, type Host } from '../../src/host';
import { startFixtureServer, type FixtureServer } from '../support/fixture-server';
import { onCleanup, tempDir } from '../support/process';
import { busyboxTree, tarball } from '../support/trees';
import { TEST_HOSTS } from '../support/hosts';

const sha256 = (b: Buffer | string) => crypto.createHash('sha256').update(b).digest('hex');

/**
 * A folder of the build host that trees' links point at, standing for its /run, /etc, /usr/local:
 * filled with files, and fingerprinted (names, types, link targets, modes, contents) so that a test
 * can check that nothing in it was created, changed or removed.
 */
function outsideDir(): { dir: string; fingerprint(): string } {
  // Not under /tmp: a tree's own /tmp (a link in one test) must not lie on the way to it.
  const dir = fs.mkdtempSync('/var/tmp/rootfs-test-outside-');
  onCleanup(() => fs.rmSync(dir, { recursive: true, force: true }));
  const folders = [
    'run',
    'apt/keyrings',
    'apt/sources.list.d',
    'opt',
    'sbin',
    'usr-local/bin',
    'systemd/system',
    'profile.d',
    'tmp',
    'apt-lib/lists',
  ];
  for (const d of folders) fs.mkdirSync(path.join(dir, d), { recursive: true });
  fs.writeFileSync(path.join(dir, 'resolv.conf'), 'nameserver 192.0.2.1 # the host\n');
  fs.writeFileSync(path.join(dir, 'apt-lib/lists/host-list'), 'the host apt list\n');
  fs.writeFileSync(path.join(dir, 'version-file'), 'host file\n');
  const fingerprint = () =>
    execFileSync('find', [dir, '-printf', '%P %y %m %l\\n'], { encoding: 'utf8' })
      .split('\n')
      .sort()
      .map((line) => {
        const file = path.join(dir, line.split(' ')[0]!);
        return line.includes(' f ') ? `${line} ${sha256(fs.readFileSync(file))}` : line;
      })
      .join('\n');
  return { dir, fingerprint };
}

/**
 * A tree whose links lead out of it the two ways jammy's do: absolute targets (`/var/run -> /run`)
 * and relative ones with more `..` than the tree is deep. Followed by the build host, every write
 * below them would land in `outside`; resolved as the image sees them, they land in the tree at
 * `<tree><outside>/…` (absolute targets start at the tree's root, `..` stops there).
 */
function hostileTree(outside: string): { tree: string; inTree: (p: string) => string } {
  const tree = busyboxTree();
  const escape = (from: string, to: string) => `${'../'.repeat(from.split('/').length + 12)}${outside.slice(1)}/${to}`;
  const links: Record<string, string> = {
    'var/run': `${outside}/run`,
    'etc/apt': `${outside}/apt`,
    'var/lib/apt': `${outside}/apt-lib`,
    'usr/local': `${outside}/usr-local`,
    'etc/profile.d': `${outside}/profile.d`,
    'etc/resolv.conf': `${outside}/resolv.conf`,
    opt: escape('opt', 'opt'),
    'usr/sbin': escape('usr/sbin', 'sbin'),
    'etc/systemd': escape('etc/systemd', 'systemd'),
  };
  for (const [at, target] of Object.entries(links)) {
    fs.mkdirSync(path.dirname(path.join(tree, at)), { recursive: true });
    fs.symlinkSync(target, path.join(tree, at));
  }
  const inTree = (p: string) => path.join(tree, outside, p);
  // What the image sees behind its links: the re-rooted folders exist, as in a real tree.
  for (const d of ['run', 'apt-lib/lists', 'usr-local/bin']) fs.mkdirSync(inTree(d), { recursive: true });
  fs.writeFileSync(inTree('apt-lib/lists/image-list'), 'an index apt fetched\n');
  fs.mkdirSync(path.join(tree, 'var/cache/apt/archives'), { recursive: true });
  return { tree, inTree };
}

const refused = (pattern: RegExp) => (err: unknown) => {
  assert.ok(err instanceof BuildError, `a BuildError, not ${String(err)}`);
  assert.equal(err.type, 'InvalidInput');
  assert.match(err.message, pattern);
  return true;
};

for (const [name, connect] of TEST_HOSTS) {
  describe(`tree paths resolve as the image sees them, on ${name} @real`, function () {
    this.timeout(60_000);
    let host: Host;
    before(async () => {
      host = await connect();
    });
    after(async () => host?.close());

    it('re-roots absolute links at the tree, stops `..` at its root, follows chains, keeps the last link on request', async () => {
      const outside = outsideDir();
      const before = outside.fingerprint();
      const { tree, inTree } = hostileTree(outside.dir);
      fs.mkdirSync(path.join(tree, 'etc/alternatives'), { recursive: true });
      fs.writeFileSync(path.join(tree, 'usr/bin/mawk'), 'mawk');
      fs.symlinkSync('/etc/alternatives/awk', path.join(tree, 'usr/bin/awk'));
      fs.symlinkSync('../../usr/bin/mawk', path.join(tree, 'etc/alternatives/awk'));

      assert.equal(await resolveInTree(host, tree, '/var/run/x', { followLast: true }), inTree('run/x'));
      assert.equal(await resolveInTree(host, tree, '/opt/tool/bin', { followLast: true }), inTree('opt/tool/bin'));
      assert.equal(
        await resolveInTree(host, tree, '/usr/sbin/policy-rc.d', { followLast: true }),
        inTree('sbin/policy-rc.d'),
      );
      assert.equal(
        await resolveInTree(host, tree, '/usr/bin/awk', { followLast: true }),
        path.join(tree, 'usr/bin/mawk'),
      );
      assert.equal(
        await resolveInTree(host, tree, '/usr/bin/awk', { followLast: false }),
        path.join(tree, 'usr/bin/awk'),
      );
      assert.equal(
        await resolveInTree(host, tree, '/etc/resolv.conf', { followLast: false }),
        path.join(tree, 'etc/resolv.conf'),
      );
      assert.equal(await resolveInTree(host, tree, '/etc/resolv.conf', { followLast: true }), inTree('resolv.conf'));
      assert.equal(await resolveInTree(host, tree, '/', { followLast: true }), tree);

      fs.symlinkSync('b', path.join(tree, 'a'));
      fs.symlinkSync('/a', path.join(tree, 'b'));
      await assert.rejects(
        resolveInTree(host, tree, '/a/x', { followLast: true }),
        refused(/^cannot write \/a\/x into the image tree: too many levels of symbolic links/),
      );
      await assert.rejects(
        resolveInTree(host, tree, '/usr/bin/mawk/x', { followLast: true }),
        refused(
          /^cannot write \/usr\/bin\/mawk\/x into the image tree: \/usr\/bin\/mawk is not a directory in the image$/,
        ),
      );
      assert.equal(outside.fingerprint(), before);
    });

    it('writes a file behind an absolute link into the tree, not onto the host', async () => {
      const outside = outsideDir();
      const before = outside.fingerprint();
      const { tree, inTree } = hostileTree(outside.dir);
      const runner = new StepRunner(host);
      assert.equal(await writeInTree(runner, tree, '/var/run/x', 'hello\n', 0o600), inTree('run/x'));
      assert.equal(fs.readFileSync(inTree('run/x'), 'utf8'), 'hello\n');
      assert.equal(fs.statSync(inTree('run/x')).mode & 0o777, 0o600);
      // The image's own link at the path is replaced, not written through.
      await writeInTree(runner, tree, '/etc/resolv.conf', 'nameserver 192.0.2.53\n');
      assert.equal(fs.readFileSync(path.join(tree, 'etc/resolv.conf'), 'utf8'), 'nameserver 192.0.2.53\n');
      assert.equal(fs.lstatSync(path.join(tree, 'etc/resolv.conf')).isFile(), true);
      assert.equal(outside.fingerprint(), before, 'nothing outside the tree changed');
    });

    it('refuses a link that goes through a missing name and back up with `..` (it would skip the links after it)', async () => {
      const outside = outsideDir();
      const before = outside.fingerprint();
      const { tree } = hostileTree(outside.dir);
      // With the `..` taken lexically, var/run (a link out of the tree) would not be looked at.
      fs.symlinkSync('/nope/../var/run', path.join(tree, 'etc/sneaky'));
      await assert.rejects(
        writeInTree(new StepRunner(host), tree, '/etc/sneaky/systemd/x', 'x'),
        refused(
          /^cannot write \/etc\/sneaky\/systemd into the image tree: a link leads through \/nope, which does not exist/,
        ),
      );
      assert.equal(outside.fingerprint(), before, 'nothing outside the tree changed');
    });

    it('replaces a device node or a FIFO at the path instead of writing into it', async () => {
      const { tree } = hostileTree(outsideDir().dir);
      execFileSync('mknod', [path.join(tree, 'etc/null-device'), 'c', '1', '3']);
      execFileSync('mkfifo', [path.join(tree, 'etc/a-fifo')]);
      const runner = new StepRunner(host);
      await writeInTree(runner, tree, '/etc/null-device', 'data\n');
      await writeInTree(runner, tree, '/etc/a-fifo', 'data\n');
      for (const name of ['null-device', 'a-fifo']) {
        assert.ok(fs.lstatSync(path.join(tree, 'etc', name)).isFile(), `${name} is a plain file now`);
        assert.equal(fs.readFileSync(path.join(tree, 'etc', name), 'utf8'), 'data\n');
      }
    });
  });
}

describe('every writer stays inside a tree whose links point outside @real', function () {
  this.timeout(300_000);
  let fixture: FixtureServer;
  let outside: ReturnType<typeof outsideDir>;
  let before: string;
  let ctx: SourceContext;
  let inTree: (p: string) => string;

  beforeEach(async () => {
    fixture ??= await startFixtureServer();
    outside = outsideDir();
    before = outside.fingerprint();
    const hostile = hostileTree(outside.dir);
    inTree = hostile.inTree;
    ctx = { runner: new StepRunner(new LocalHost()), tree: hostile.tree, cacheDir: tempDir('cache'), clientEnv: {} };
  });

  afterEach(function () {
    // A failed test already says what went wrong; this one would hide it.
    if (this.currentTest?.state === 'passed')
      assert.equal(outside.fingerprint(), before, 'nothing outside the tree changed');
  });

  it('archive: unpacks behind a relative escape and links behind an absolute one', async () => {
    const body = tarball({ 'tool/bin/tool': '#!/bin/sh\necho tool\n', 'tool/VERSION': '1.0\n' });
    fixture.serve('/tool.tgz', body);
    await installSource(ctx, {
      kind: 'archive',
      url: `${fixture.url}/tool.tgz`,
      sha256: sha256(body),
      dest: '/opt/tool',
      stripComponents: 2,
      links: [
        { path: '/var/run/tool', target: '/opt/tool/bin/tool' },
        { path: '/usr/local/bin/tool', target: '/opt/tool/bin/tool' },
      ],
    });
    assert.equal(fs.readFileSync(inTree('opt/tool/VERSION'), 'utf8'), '1.0\n');
    assert.equal(fs.statSync(inTree('opt/tool')).mode & 0o777, 0o755);
    assert.equal(fs.readlinkSync(inTree('run/tool')), '/opt/tool/bin/tool');
    assert.equal(fs.readlinkSync(inTree('usr-local/bin/tool')), '/opt/tool/bin/tool');
    assert.deepEqual(fs.readdirSync(inTree('opt')), ['tool'], 'no staging folder is left');
  });

  it('archive into an existing folder: replaces links in it, refuses a folder where a link is', async () => {
    const dest = path.join(ctx.tree, 'usr/lib/tool');
    fs.mkdirSync(dest, { recursive: true });
    fs.symlinkSync(path.join(outside.dir, 'version-file'), path.join(dest, 'VERSION'));
    fs.symlinkSync(path.join(outside.dir, 'opt'), path.join(dest, 'bin'));
    const archive = (name: string, body: Buffer) => {
      fixture.serve(`/${name}`, body);
      return installSource(ctx, {
        kind: 'archive',
        url: `${fixture.url}/${name}`,
        sha256: sha256(body),
        dest: '/usr/lib/tool',
        stripComponents: 2,
        links: [],
      });
    };
    await archive('one.tgz', tarball({ 'x/VERSION': '2.0\n' }));
    assert.equal(fs.lstatSync(path.join(dest, 'VERSION')).isFile(), true);
    assert.equal(fs.readFileSync(path.join(dest, 'VERSION'), 'utf8'), '2.0\n');

    await assert.rejects(archive('two.tgz', tarball({ 'x/bin/tool': 'tool' })), /cannot overwrite non-directory/);
  });

  it('archive: a link inside the archive cannot lead the unpacking out', async () => {
    // The link first, then a file through it (`tar -A` appends the second archive to the first).
    const dir = tempDir('evil-archive');
    fs.mkdirSync(path.join(dir, 'a'));
    fs.symlinkSync(outside.dir, path.join(dir, 'a/x'));
    execFileSync('tar', ['-cf', path.join(dir, 'evil.tar'), '-C', path.join(dir, 'a'), 'x']);
    fs.mkdirSync(path.join(dir, 'b/x'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'b/x/planted'), 'evil');
    execFileSync('tar', ['-cf', path.join(dir, 'second.tar'), '-C', path.join(dir, 'b'), 'x/planted']);
    execFileSync('tar', ['-Af', path.join(dir, 'evil.tar'), path.join(dir, 'second.tar')]);
    const evil = fs.readFileSync(path.join(dir, 'evil.tar'));
    fixture.serve('/evil.tar', evil);
    await assert.rejects(
      installSource(ctx, {
        kind: 'archive',
        url: `${fixture.url}/evil.tar`,
        sha256: sha256(evil),
        dest: '/opt/evil',
        stripComponents: 0,
        links: [],
      }),
      /Not a directory|Cannot open/,
    );
    assert.equal(fs.existsSync(path.join(outside.dir, 'planted')), false);
  });

  it('script: the installer goes to the tree`s /tmp, wherever that points', async () => {
    fs.rmSync(path.join(ctx.tree, 'tmp'), { recursive: true });
    fs.symlinkSync(`${outside.dir}/tmp`, path.join(ctx.tree, 'tmp'));
    const script = '#!/bin/sh\necho ran > /var/run/ran\n';
    fixture.serve('/install.sh', script);
    await installSource(ctx, {
      kind: 'script',
      url: `${fixture.url}/install.sh`,
      sha256: sha256(script),
      args: [],
      env: {},
      links: [],
    });
    assert.equal(fs.readFileSync(inTree('run/ran'), 'utf8'), 'ran\n');
    assert.deepEqual(fs.readdirSync(inTree('tmp')), [], 'the installer is removed afterwards');
  });

  it('apt: the repository key and source go into the tree`s /etc/apt, for the install only', async () => {
    // Stand-ins for apt-get and dpkg-query: record what apt would have seen, report a version.
    fs.writeFileSync(
      path.join(ctx.tree, 'usr/bin/apt-get'),
      [
        '#!/bin/sh',
        'if [ "$1" = update ]; then mkdir -p /seen; cat /etc/apt/sources.list.d/vendor.list > /seen/list; ls /etc/apt/keyrings > /seen/keys; fi',
        '',
      ].join('\n'),
      { mode: 0o755 },
    );
    fs.writeFileSync(path.join(ctx.tree, 'usr/bin/dpkg-query'), '#!/bin/sh\necho vendor-tool=1.0\n', { mode: 0o755 });
    const key = Buffer.from('not really a key, apt is a stand-in');
    fixture.serve('/vendor.gpg', key);
    const record = await installSource(ctx, {
      kind: 'apt',
      packages: ['vendor-tool'],
      repository: {
        name: 'vendor',
        url: `${fixture.url}/repo`,
        suite: 'stable',
        components: ['main'],
        key: { url: `${fixture.url}/vendor.gpg`, sha256: sha256(key) },
      },
      links: [{ path: '/var/run/vendor-tool', target: '/usr/bin/vendor-tool' }],
    });
    assert.equal(record.apt, 'vendor-tool=1.0');
    const list = fs.readFileSync(path.join(ctx.tree, 'seen/list'), 'utf8');
    assert.match(
      list,
      /^deb \[signed-by=\/etc\/apt\/keyrings\/vendor\.gpg\] http:\/\/127\.0\.0\.1:\d+\/repo stable main\n$/,
    );
    assert.equal(fs.readFileSync(path.join(ctx.tree, 'seen/keys'), 'utf8'), 'vendor.gpg\n');
    assert.deepEqual(fs.readdirSync(inTree('apt/sources.list.d')), [], 'the repository is removed after the install');
    assert.deepEqual(fs.readdirSync(inTree('apt/keyrings')), [], 'and so is its key');
    assert.equal(fs.readlinkSync(inTree('run/vendor-tool')), '/usr/bin/vendor-tool');
  });

  it('npm: unpacks behind an absolute link', async () => {
    await installSource(ctx, {
      kind: 'npm',
      package: 'is-number',
      version: '7.0.0',
      dest: '/usr/local/lib/node_modules/is-number',
      links: [],
    });
    assert.equal(
      JSON.parse(fs.readFileSync(inTree('usr-local/lib/node_modules/is-number/package.json'), 'utf8')).version,
      '7.0.0',
    );
  });

  it('gomodule: copies behind a relative escape', async () => {
    await installSource(ctx, {
      kind: 'gomodule',
      module: 'github.com/google/uuid',
      version: 'v1.6.0',
      dest: '/opt/uuid',
      executable: [],
      links: [],
    });
    assert.ok(fs.existsSync(inTree('opt/uuid/uuid.go')));
    assert.equal(fs.statSync(inTree('opt/uuid')).mode & 0o777, 0o755);
  });

  it('refuses, with the reason, what cannot be made safe', async () => {
    fs.writeFileSync(path.join(ctx.tree, 'usr/bin/plain'), 'a file');
    fs.symlinkSync('loop-b', path.join(ctx.tree, 'usr/bin/loop-a'));
    fs.symlinkSync('loop-a', path.join(ctx.tree, 'usr/bin/loop-b'));
    const body = tarball({ 'x/f': 'f' });
    fixture.serve('/x.tgz', body);
    const archive = (dest: string, links: Array<{ path: string; target: string }> = []) =>
      installSource(ctx, {
        kind: 'archive',
        url: `${fixture.url}/x.tgz`,
        sha256: sha256(body),
        dest,
        stripComponents: 1,
        links,
      });
    await assert.rejects(archive('/usr/bin/plain/x'), refused(/\/usr\/bin\/plain is not a directory in the image$/));
    await assert.rejects(
      archive('/usr/bin/plain'),
      refused(/^cannot write \/usr\/bin\/plain into the image tree: it is not a directory in the/),
    );
    await assert.rejects(archive('/usr/bin/loop-a/x'), refused(/too many levels of symbolic links/));
    await assert.rejects(archive('/'), refused(/over the root of the image/));
    await assert.rejects(
      archive('/opt/y', [{ path: '/usr/bin', target: '/x' }]),
      refused(/\/usr\/bin into the image tree: it is a directory in the/),
    );
  });
});

describe('the pipeline`s writers stay inside a tree whose links point outside @real', function () {
  this.timeout(300_000);

  it('runtime files, the install set-up (policy-rc.d, resolv.conf), apt cleaning and the operator install', async () => {
    const outside = outsideDir();
    const before = outside.fingerprint();
    const { tree: baseTree } = hostileTree(outside.dir);
    const workspace = tempDir('ws');
    const baseKey = `base-${crypto.randomBytes(16).toString('hex')}`;
    const baseDir = path.join(workspace, 'artifacts', baseKey);
    fs.mkdirSync(baseDir, { recursive: true });
    fs.renameSync(baseTree, path.join(baseDir, 'tree'));
    // The operator step settles the tree to the epoch of the base's archive snapshot: a cached InRelease.
    const inRelease = 'Origin: Ubuntu\nSuite: jammy\nDate: Thu, 21 Apr 2022 17:16:08 UTC\n';
    const inReleaseSha = sha256(inRelease);
    fs.mkdirSync(path.join(workspace, 'cache', 'inrelease'), { recursive: true });
    fs.writeFileSync(path.join(workspace, 'cache', 'inrelease', `${inReleaseSha}.InRelease`), inRelease);
    fs.writeFileSync(
      path.join(baseDir, 'meta.json'),
      JSON.stringify({
        key: baseKey,
        step: 'base',
        createdAt: new Date().toISOString(),
        data: { archive: { jammy: inReleaseSha } },
      }),
    );
    const fixture = await startFixtureServer();
    // Runs inside the tree during the install: what did it see of the set-up?
    const script = '#!/bin/sh\ncat /etc/resolv.conf > /seen-resolv\ncat /usr/sbin/policy-rc.d > /seen-policy\n';
    fixture.serve('/look.sh', script);
    const operator = path.join(tempDir('operator'), 'infra.operator');
    fs.writeFileSync(operator, '#!/bin/sh\necho operator\n');
    const config = Config.parse({
      workspace,
      languages: {
        hostile: {
          runtime: [{ kind: 'script', url: `${fixture.url}/look.sh`, sha256: sha256(script) }],
          files: [
            { path: '/var/run/config-file', content: 'from the config\n', mode: 0o640 },
            { path: '/opt/app/settings', content: 'settings\n' },
          ],
          verify: [{ argv: ['true'], expect: '' }],
        },
      },
    });
    const pipeline = new Pipeline(new StepRunner(new LocalHost()), {
      config,
      operatorPath: operator,
      keyringPath: '/dev/null',
    });

    const runtime = await pipeline.runtime('hostile', baseKey);
    const tree = pipeline.store.tree(runtime.key);
    const inTree = (p: string) => path.join(tree, outside.dir, p);
    assert.equal(fs.readFileSync(inTree('run/config-file'), 'utf8'), 'from the config\n');
    assert.equal(fs.statSync(inTree('run/config-file')).mode & 0o777, 0o640);
    assert.equal(fs.readFileSync(inTree('opt/app/settings'), 'utf8'), 'settings\n');
    assert.equal(
      fs.readFileSync(path.join(tree, 'seen-resolv'), 'utf8'),
      fs.readFileSync('/etc/resolv.conf', 'utf8'),
      'DNS worked',
    );
    assert.match(fs.readFileSync(path.join(tree, 'seen-policy'), 'utf8'), /exit 101/);
    assert.equal(
      fs.readlinkSync(path.join(tree, 'etc/resolv.conf')),
      `${outside.dir}/resolv.conf`,
      'the image`s own link is back',
    );
    assert.equal(fs.existsSync(inTree('sbin/policy-rc.d')), false, 'policy-rc.d is gone after the install');
    assert.deepEqual(fs.readdirSync(inTree('apt-lib/lists')), [], 'the image`s apt lists are cleaned');
    assert.equal(outside.fingerprint(), before, 'nothing outside the tree changed in the runtime step');

    const op = await pipeline.operator('hostile', runtime.key, sha256(fs.readFileSync(operator)));
    const opTree = pipeline.store.tree(op.key);
    const inOp = (p: string) => path.join(opTree, outside.dir, p);
    assert.equal(fs.readFileSync(inOp('usr-local/bin/infra.operator'), 'utf8'), '#!/bin/sh\necho operator\n');
    assert.equal(fs.statSync(inOp('usr-local/bin/infra.operator')).mode & 0o777, 0o755);
    assert.match(
      fs.readFileSync(inOp('systemd/system/infra.operator.service'), 'utf8'),
      /ExecStart=\/usr\/local\/bin\/infra\.operator/,
    );
    const wants = inOp('systemd/system/multi-user.target.wants/infra.operator.service');
    assert.equal(fs.readlinkSync(wants), '/etc/systemd/system/infra.operator.service');
    assert.ok(fs.existsSync(inOp('profile.d/hostile.sh')));
    assert.equal(outside.fingerprint(), before, 'nothing outside the tree changed in the operator step');
  });
});
