import { strict as assert } from 'node:assert';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { check, CommandError, output, runInChroot, SshHost, type Host } from '../../src/host';
import { tempDir } from '../support/process';
import { testSshd } from '../support/sshd';
import { busyboxTree } from '../support/trees';
import { TEST_HOSTS } from '../support/hosts';

const sha256 = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');

async function gone(host: Host, pattern: string): Promise<boolean> {
  // pgrep exits 1 when nothing matches; it never matches itself.
  return (await host.run(['pgrep', '-f', pattern])).code === 1;
}

function mountsUnder(dir: string): string[] {
  return fs
    .readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) => l.split(' ')[4] ?? '')
    .filter((m) => m === dir || m.startsWith(`${dir}/`));
}

for (const [name, connect] of TEST_HOSTS) {
  describe(`${name} @real`, function () {
    this.timeout(120_000);
    let host: Host;
    before(async () => {
      host = await connect();
    });
    after(async () => host?.close());

    it('reports exit codes and signals', async () => {
      assert.deepEqual(await host.run(['true']), { code: 0, signal: null });
      assert.deepEqual(await host.run(['sh', '-c', 'exit 3']), { code: 3, signal: null });
      assert.deepEqual(await host.run(['sh', '-c', 'kill -TERM $$']), { code: null, signal: 'SIGTERM' });
      await assert.rejects(check(host, ['sh', '-c', 'echo why >&2; exit 4']), (err: unknown) => {
        assert.ok(err instanceof CommandError);
        assert.equal(
          err.message,
          `sh exited with 4: why\nwhy\ncommand: sh -c ${JSON.stringify('echo why >&2; exit 4')}`,
        );
        return true;
      });
    });

    it('keeps stdout and stderr apart', async () => {
      const { stdout, stderr } = await output(host, ['sh', '-c', 'echo out; echo err >&2; echo out2']);
      assert.equal(stdout, 'out\nout2\n');
      assert.equal(stderr, 'err\n');
    });

    it('streams 50 MB of output without keeping it', async () => {
      let bytes = 0;
      let chunks = 0;
      const { code } = await host.run(['head', '-c', String(50 * 1024 * 1024), '/dev/zero'], {
        onStdout: (c) => {
          bytes += c.length;
          chunks++;
        },
      });
      assert.equal(code, 0);
      assert.equal(bytes, 50 * 1024 * 1024);
      assert.ok(chunks > 50, `delivered in ${chunks} chunks, not buffered whole`);
    });

    it('passes arguments and environment values through literally', async () => {
      const args = [
        'two words',
        "it's",
        '"dq"',
        '$(id)',
        '`id`',
        'a;b',
        'line\nbreak',
        '*',
        '',
        'héllo ✓',
        '\\',
        '--',
        '-n',
      ];
      const { stdout } = await output(host, ['printf', '%s\\0', ...args]);
      assert.deepEqual(stdout.split('\0').slice(0, -1), args);
      const env = await output(host, ['sh', '-c', 'printf %s "$ODD"'], { env: { ODD: "$(id) 'q' `x` ;" } });
      assert.equal(env.stdout, "$(id) 'q' `x` ;");
      const cwd = await output(host, ['pwd'], { cwd: '/tmp' });
      assert.equal(cwd.stdout.trim(), '/tmp');
    });

    it('gives commands, and what they start, none of the worker`s credentials', async () => {
      const planted = {
        AWS_SECRET_ACCESS_KEY: 'planted-aws-secret',
        ROOTFS_TEST_TEMPORAL_API_KEY: 'planted-api-key',
        SSH_AUTH_SOCK: '/planted/agent.sock',
        https_proxy: 'http://proxy.invalid:3128',
        LC_TIME: 'C.UTF-8',
      };
      const saved = Object.fromEntries(Object.keys(planted).map((k) => [k, process.env[k]]));
      Object.assign(process.env, planted);
      try {
        // `sh` starting `env`: a child of the command, as mmdebstrap starts apt and maintainer scripts.
        const { stdout } = await output(host, ['sh', '-c', 'env'], { env: { GIVEN: 'by the caller' } });
        assert.doesNotMatch(stdout, /planted/, 'no planted secret reaches the command');
        assert.match(stdout, /^GIVEN=by the caller$/m);
        assert.match(stdout, /^PATH=/m);
        if (name === 'LocalHost') {
          assert.match(stdout, /^https_proxy=http:\/\/proxy\.invalid:3128$/m, 'proxy settings are kept');
          assert.match(stdout, /^LC_TIME=C\.UTF-8$/m);
          assert.doesNotMatch(stdout, /^(TERM|npm_lifecycle_event|AWS_[A-Z_]+)=/m);
        }
      } finally {
        for (const [k, v] of Object.entries(saved)) {
          if (v === undefined) delete process.env[k];
          else process.env[k] = v;
        }
      }
    });

    it('round-trips a 20 MB binary file and small files byte for byte', async () => {
      const dir = tempDir('files');
      const src = path.join(dir, 'src.bin');
      fs.writeFileSync(src, crypto.randomBytes(20 * 1024 * 1024));
      const remote = path.join(dir, 'remote.bin');
      const back = path.join(dir, 'back.bin');
      await host.putFile(src, remote, 0o640);
      await host.getFile(remote, back);
      assert.equal(sha256(back), sha256(src));
      const st = await host.stat(remote);
      assert.equal(st?.size, 20 * 1024 * 1024);
      assert.equal(st!.mode & 0o777, 0o640);
      assert.ok(st!.isFile && !st!.isDirectory);

      const small = path.join(dir, 'small.txt');
      await host.writeFile(small, 'hello\n', 0o755);
      assert.equal((await host.readFile(small)).toString(), 'hello\n');
      assert.equal((await host.stat(small))!.mode & 0o777, 0o755);
      await host.remove(small);
      assert.equal(await host.stat(small), null);
      await host.remove(small); // absent: no error
      await host.remove(dir, { recursive: true });
      assert.equal(await host.stat(dir), null);
    });

    it('reads link targets as stored, not resolved', async () => {
      const dir = tempDir('links');
      fs.symlinkSync('/run', path.join(dir, 'abs'));
      fs.symlinkSync('../../x/./y', path.join(dir, 'rel'));
      assert.equal(await host.readlink(path.join(dir, 'abs')), '/run');
      assert.equal(await host.readlink(path.join(dir, 'rel')), '../../x/./y');
      assert.equal((await host.stat(path.join(dir, 'abs')))?.isSymbolicLink, true);
      await assert.rejects(host.readlink(path.join(dir, 'missing')));
    });

    it('abort kills the command and what it started', async () => {
      const marker = `${3000 + crypto.randomInt(1000)}.${crypto.randomInt(1000)}`;
      const controller = new AbortController();
      const running = host.run(['sh', '-c', `sleep ${marker} & sleep ${marker}; wait`], { signal: controller.signal });
      await new Promise((r) => setTimeout(r, 700));
      assert.equal(await gone(host, `sleep ${marker}`), false, 'the command is running');
      const t0 = Date.now();
      controller.abort();
      await assert.rejects(running);
      assert.ok(Date.now() - t0 < 5000, 'abort is prompt');
      for (let i = 0; i < 20 && !(await gone(host, `sleep ${marker}`)); i++)
        await new Promise((r) => setTimeout(r, 100));
      assert.ok(await gone(host, `sleep ${marker}`), 'no process is left');
    });

    it('runs commands in a chroot with /proc mounted, and leaves no mount behind, also when aborted', async () => {
      const tree = busyboxTree();
      const lines: string[] = [];
      const result = await runInChroot(host, tree, ['cat', '/proc/self/status'], {
        onStdout: (c) => lines.push(c.toString()),
      });
      assert.equal(result.code, 0);
      assert.match(lines.join(''), /^Name:\s+cat$/m);
      const env = await output(host, ['true']).then(async () => {
        const chunks: Buffer[] = [];
        await runInChroot(host, tree, ['env'], { env: { EXTRA: 'x' }, onStdout: (c) => chunks.push(c) });
        return Buffer.concat(chunks).toString();
      });
      assert.match(env, /^EXTRA=x$/m);
      assert.doesNotMatch(env, /^AWS_|^SSH_|^npm_/m, 'the worker environment does not leak into the chroot');
      assert.deepEqual(mountsUnder(tree), []);

      const marker = `${4000 + crypto.randomInt(1000)}`;
      const controller = new AbortController();
      const running = runInChroot(host, tree, ['sleep', marker], { signal: controller.signal });
      await new Promise((r) => setTimeout(r, 700));
      controller.abort();
      await assert.rejects(running);
      for (let i = 0; i < 20 && !(await gone(host, `sleep ${marker}`)); i++)
        await new Promise((r) => setTimeout(r, 100));
      assert.ok(await gone(host, `sleep ${marker}`));
      assert.deepEqual(mountsUnder(tree), []);
    });
  });
}

describe('SshHost refuses @real', () => {
  it('an unknown host key, before any command, with a plain message', async () => {
    const sshd = await testSshd();
    const wrong = 'SHA256:' + crypto.createHash('sha256').update('not the key').digest('base64').replace(/=+$/, '');
    const t0 = Date.now();
    await assert.rejects(
      SshHost.connect({
        host: sshd.host,
        port: sshd.port,
        user: sshd.user,
        keyPath: sshd.clientKeyPath,
        hostKeySha256: wrong,
      }),
      new RegExp(
        `^Error: host key mismatch for root@127\\.0\\.0\\.1:${sshd.port}: expected ${wrong.replace(/[+/]/g, '\\$&')}, got ${sshd.hostKeySha256.replace(/[+/]/g, '\\$&')} \\(refusing to connect\\)$`,
      ),
    );
    assert.ok(Date.now() - t0 < 5000);
    // sshd never saw an authentication attempt from us for that connection.
    assert.doesNotMatch(
      fs.readFileSync(path.join(sshd.dir, 'sshd.log'), 'utf8').split('\n').slice(-5).join('\n'),
      /Accepted publickey/,
    );
  });

  it('a client key the server does not accept, with a plain message', async () => {
    const sshd = await testSshd();
    const t0 = Date.now();
    await assert.rejects(
      SshHost.connect({
        host: sshd.host,
        port: sshd.port,
        user: sshd.user,
        keyPath: sshd.strangerKeyPath,
        hostKeySha256: sshd.hostKeySha256,
      }),
      /^Error: SSH authentication failed for root@127\.0\.0\.1:\d+ with key .*stranger_ed25519 \(the server did not accept it\)$/,
    );
    assert.ok(Date.now() - t0 < 5000);
  });
});
