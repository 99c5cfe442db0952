import { strict as assert } from 'node:assert';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { LocalHost, runInImage, runInSandbox, SANDBOX_UID, type Host, type ImageCommand } from '../../src/host';
import { makeImage } from '../support/image';
import { tempDir } from '../support/process';
import { busyboxTree } from '../support/trees';
import { TEST_HOSTS } from '../support/hosts';

/** A busybox tree (0755, as debootstrap makes them) with a file only root may read and one anyone may read. */
function tree(): string {
  const root = busyboxTree();
  fs.chmodSync(root, 0o755);
  fs.mkdirSync(path.join(root, 'etc'));
  fs.writeFileSync(path.join(root, 'etc/secret'), 'root only\n', { mode: 0o600 });
  fs.writeFileSync(path.join(root, 'etc/motd'), 'hello\n', { mode: 0o644 });
  return root;
}

const sh = (script: string): ImageCommand => ({ argv: ['sh', '-c', script], env: { PATH: '/bin', LC_ALL: 'C' } });

/** Network interfaces the sandbox sees, from its /proc/net/dev. */
const interfaces = (procNetDev: string) =>
  procNetDev
    .split('\n')
    .slice(2)
    .map((l) => l.split(':')[0]!.trim())
    .filter(Boolean);

/** Block devices in an `ls -l /dev` listing (lines starting with "b"). */
const blockDevices = (listing: string) => listing.split('\n').filter((l) => l.startsWith('b'));

/** The host's view of the uid of a process whose command line is `sleep <marker>`, once it runs. */
async function hostUidOf(marker: string): Promise<string> {
  for (let i = 0; i < 100; i++) {
    for (const pid of fs.readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
      try {
        if (fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8') === `sleep\0${marker}\0`) {
          return /^Uid:\s+(.*)$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))![1]!;
        }
      } catch {
        // gone meanwhile
      }
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`no process "sleep ${marker}" appeared`);
}

for (const [name, connect] of TEST_HOSTS) {
  describe(`runInSandbox on ${name} @real`, function () {
    this.timeout(60_000);
    let host: Host;
    before(async () => {
      host = await connect();
    });
    after(async () => host?.close());

    async function run(root: string, argv: string[], env?: Record<string, string>) {
      const out: Buffer[] = [];
      const err: Buffer[] = [];
      const { code } = await runInSandbox(host, root, argv, {
        env,
        onStdout: (c) => out.push(c),
        onStderr: (c) => err.push(c),
      });
      return { code, stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString() };
    }

    it('runs a tree as an unprivileged uid: no host root, network, devices or writes', async () => {
      const root = tree();
      const map = await run(root, ['cat', '/proc/self/uid_map']);
      assert.equal(map.code, 0, map.stderr);
      assert.match(
        map.stdout,
        /^\s*0\s+\d+\s+1\n$/,
        'one uid mapped: root inside, one unprivileged uid outside (see the host view below)',
      );
      const secret = await run(root, ['cat', '/etc/secret']);
      assert.notEqual(secret.code, 0, 'a file only the host root may read stays closed');
      assert.match(secret.stderr, /Permission denied/);
      assert.equal((await run(root, ['cat', '/etc/motd'])).stdout, 'hello\n');
      const write = await run(root, ['sh', '-c', 'echo x > /etc/motd']);
      assert.notEqual(write.code, 0);
      assert.match(write.stderr, /Read-only file system/);
      assert.equal(fs.readFileSync(path.join(root, 'etc/motd'), 'utf8'), 'hello\n');
      assert.deepEqual(interfaces((await run(root, ['cat', '/proc/net/dev'])).stdout), ['lo']);
      const dev = await run(root, ['ls', '-l', '/dev']);
      assert.match(dev.stdout, /^c.* null$/m);
      assert.match(dev.stdout, /^c.* urandom$/m);
      assert.deepEqual(blockDevices(dev.stdout), []);
      const env = await run(root, ['env'], { EXTRA: 'x' });
      assert.match(env.stdout, /^EXTRA=x$/m);
      assert.doesNotMatch(env.stdout, /^(AWS_|SSH_|npm_)/m, 'nothing of the worker environment');
    });

    it('is seen by the host as the sandbox uid, and ends with its caller', async () => {
      const root = tree();
      const marker = `${3000 + crypto.randomInt(1000)}`;
      const controller = new AbortController();
      const running = runInSandbox(host, root, ['sleep', marker], { signal: controller.signal });
      assert.deepEqual((await hostUidOf(marker)).split(/\s+/), Array(4).fill(String(SANDBOX_UID)));
      controller.abort();
      await assert.rejects(running);
      await assertSleepGone(host, marker);
    });
  });
}

/** The aborted `sleep MARKER` is gone from the host within 3 s. */
async function assertSleepGone(host: Host, marker: string): Promise<void> {
  for (let i = 0; i < 30 && (await host.run(['pgrep', '-f', `^sleep ${marker}$`])).code === 0; i++)
    await new Promise((r) => setTimeout(r, 100));
  assert.equal((await host.run(['pgrep', '-f', `^sleep ${marker}$`])).code, 1, 'the sandboxed command is gone');
}

describe('runInImage @real', function () {
  this.timeout(120_000);
  const host = new LocalHost();

  it('runs commands inside an ext4 image it never mounts, unprivileged, without host network or devices', async () => {
    const dir = tempDir('sandbox-image');
    const image = makeImage(tree(), path.join(dir, 'rootfs.ext4'));
    const mountsBefore = fs.readFileSync('/proc/self/mountinfo', 'utf8');
    const run = await runInImage(host, image, [
      { argv: ['busybox'], env: { PATH: '/bin' } },
      sh('cat /proc/self/uid_map; cat /etc/secret'),
      sh('cat /proc/net/dev'),
      sh('ls -l /dev'),
      sh('echo x > /etc/motd'),
      sh('env; exit 3'),
    ]);
    const [version, ids, net, dev, write, env] = run.results;
    assert.equal(version!.code, 0);
    assert.match(version!.stdout, /^BusyBox v1\.\d+/);
    assert.equal(ids!.code, 0, ids!.stderr);
    assert.match(
      ids!.stdout,
      /^\s*0\s+\d+\s+1\nroot only\n$/,
      'a single uid, root in the image only (the copy is its own)',
    );
    assert.deepEqual(interfaces(net!.stdout), ['lo']);
    assert.match(dev!.stdout, /^c.* null$/m);
    assert.deepEqual(blockDevices(dev!.stdout), []);
    assert.notEqual(write!.code, 0);
    assert.match(write!.stderr, /Read-only file system/);
    assert.equal(env!.code, 3);
    assert.deepEqual(
      env!.stdout
        .trim()
        .split('\n')
        .filter((l) => !/^(PWD|SHLVL)=/.test(l))
        .sort(),
      ['LC_ALL=C', 'PATH=/bin'],
      'only the given env',
    );
    assert.match(run.dumpe2fs, /^Block count:\s+\d+$/m);
    assert.equal(fs.readFileSync('/proc/self/mountinfo', 'utf8'), mountsBefore, 'nothing was mounted on the host');
  });

  it('runs the image as the sandbox uid, as the host sees it, and ends with its caller', async () => {
    const image = makeImage(tree(), path.join(tempDir('sandbox-uid'), 'rootfs.ext4'));
    const marker = `${3000 + crypto.randomInt(1000)}`;
    const controller = new AbortController();
    const running = runInImage(host, image, [{ argv: ['sleep', marker], env: { PATH: '/bin' } }], {
      signal: controller.signal,
    });
    assert.deepEqual((await hostUidOf(marker)).split(/\s+/), Array(4).fill(String(SANDBOX_UID)));
    controller.abort();
    await assert.rejects(running);
    await assertSleepGone(host, marker);
  });

  it('keeps a hostile image in: names with ../ write nowhere on the host, a flood of data fails, a hang times out', async () => {
    const dir = tempDir('sandbox-hostile');
    // A file name with "/" in it, which no kernel would write but debugfs follows: ../../… to the host's /tmp.
    const escapee = `rootfs-escape-${crypto.randomBytes(4).toString('hex')}`;
    const src = tree();
    const fake = `..X..X..X..X..X..XtmpX${escapee}`;
    fs.mkdirSync(path.join(src, 'd'));
    fs.writeFileSync(path.join(src, 'd', fake), 'escaped\n');
    const image = makeImage(src, path.join(dir, 'traversal.ext4'), '16M', ['-O', '^metadata_csum']);
    const bytes = fs.readFileSync(image);
    const at = bytes.indexOf(fake);
    assert.ok(at > 0);
    bytes.write(fake.replace(/X/g, '/'), at);
    fs.writeFileSync(image, bytes);
    const run = await runInImage(host, image, [{ argv: ['busybox', 'true'], env: { PATH: '/bin' } }]);
    assert.equal(run.results[0]!.code, 0);
    assert.equal(fs.existsSync(path.join('/tmp', escapee)), false, 'the ../ name wrote nothing outside the sandbox');

    // 8 MiB of image, 2 GiB of data once written out: a sparse file and a hard link to it.
    const flood = tree();
    fs.writeFileSync(path.join(flood, 'big'), '');
    fs.truncateSync(path.join(flood, 'big'), 2 ** 30);
    fs.linkSync(path.join(flood, 'big'), path.join(flood, 'big2'));
    const floodImage = makeImage(flood, path.join(dir, 'flood.ext4'), '8M');
    await assert.rejects(
      runInImage(host, floodImage, [sh('true')]),
      /could not extract .*flood\.ext4 \(the tree is held in memory, at most 8 MiB\):\n.*No space left on device/s,
    );

    const t0 = Date.now();
    const hang = await runInImage(
      host,
      makeImage(tree(), path.join(dir, 'hang.ext4')),
      [sh('sleep 100'), sh('echo next')],
      { timeoutSeconds: 1 },
    );
    assert.equal(hang.results[0]!.code, 124, 'timeout(1) stopped it');
    assert.equal(hang.results[1]!.stdout, 'next\n', 'the next command still runs');
    assert.ok(Date.now() - t0 < 20_000);
  });

  it('says why when the image is missing or unreadable by the sandbox uid', async () => {
    const dir = tempDir('sandbox-missing');
    await assert.rejects(
      runInImage(host, path.join(dir, 'none.ext4'), [sh('true')]),
      /none\.ext4 does not exist: build it first/,
    );
    const image = makeImage(tree(), path.join(dir, 'private.ext4'));
    fs.chmodSync(image, 0o600);
    await assert.rejects(
      runInImage(host, image, [sh('true')]),
      /could not extract .*private\.ext4 \(the image is read as uid 65534: it must be readable by others\)/,
    );
  });
});
