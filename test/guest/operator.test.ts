import { strict as assert } from 'node:assert';
import { execFileSync, spawn } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { requireTool } from '../../src/setup/tools';
import { projectRoot } from '../../src/util/paths';
import { freePort, tempDir } from '../support/process';

describe('reference guest operator @real', () => {
  it('passes its own Go tests', function () {
    this.timeout(180_000);
    execFileSync('go', ['test', './...'], { cwd: path.join(projectRoot(), 'guest'), stdio: 'pipe', env: { ...process.env, CGO_ENABLED: '0' } });
  });

  it('is a static binary that serves /health, and /exec only when the command line arms it, and stops cleanly on SIGTERM', async () => {
    const binary = requireTool('referenceOperator');
    assert.match(execFileSync('file', ['-b', binary], { encoding: 'utf8' }), /ELF 64-bit LSB executable, x86-64.*statically linked/);
    const token = crypto.randomBytes(16).toString('hex');
    // The kernel command line of a boot check's VM, put where the operator reads it: /proc/cmdline,
    // in a mount namespace of its own.
    const cmdline = path.join(tempDir('cmdline'), 'cmdline');
    fs.writeFileSync(cmdline, `console=ttyS0 root=/dev/vda rootfs.exec_token=${token}\n`);
    const port = await freePort();
    const child = spawn(
      'unshare',
      [
        '--mount',
        '--propagation',
        'private',
        'sh',
        '-c',
        'mount --bind "$0" /proc/cmdline && exec "$1" guest --port "$2" --listen 127.0.0.1',
        cmdline,
        binary,
        String(port),
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    let log = '';
    child.stdout.on('data', (c: Buffer) => (log += c.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
    const exec = (auth?: string) =>
      fetch(`http://127.0.0.1:${port}/exec`, {
        method: 'POST',
        headers: auth ? { Authorization: auth } : {},
        body: JSON.stringify({ argv: ['env'], env: ['PATH=/usr/bin:/bin', 'A=1'], timeoutSeconds: 5 }),
      });
    try {
      let body: { status?: string; version?: string } | undefined;
      for (let i = 0; i < 50 && !body; i++) {
        body = await fetch(`http://127.0.0.1:${port}/health`)
          .then((r) => (r.status === 200 ? (r.json() as Promise<{ status: string; version: string }>) : undefined))
          .catch(() => undefined);
        if (!body) await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(body?.status, 'ok');
      const { version } = JSON.parse(fs.readFileSync(path.join(projectRoot(), 'package.json'), 'utf8')) as { version: string };
      assert.equal(body?.version, version);
      assert.equal((await exec()).status, 401, 'armed, but only for the token');
      assert.equal((await exec('Bearer ' + 'f'.repeat(32))).status, 401);
      // The static binary (no cgo) starts programs with exactly the environment it is given.
      const ran = await exec(`Bearer ${token}`);
      assert.equal(ran.status, 200, await ran.clone().text());
      assert.deepEqual(await ran.json(), {
        code: 0,
        stdout: 'PATH=/usr/bin:/bin\nA=1\n',
        stderr: '',
        stdoutTruncated: false,
        stderrTruncated: false,
        timedOut: false,
      });
    } finally {
      child.kill('SIGTERM');
    }
    assert.equal(await exited, 0);
    assert.match(log, /listening on 127\.0\.0\.1:\d+ \(POST \/exec armed\)/);
    assert.match(log, /GET \/health/);
    assert.match(log, /exec "env": code 0/);
    assert.ok(!log.includes(token), 'the token is not logged');

    // Started as a production VM starts it (no token on the command line): no /exec at all.
    const plainPort = await freePort();
    const plain = spawn(binary, ['guest', '--port', String(plainPort), '--listen', '127.0.0.1'], { stdio: 'ignore' });
    try {
      let status = 0;
      for (let i = 0; i < 50 && !status; i++) {
        status = await fetch(`http://127.0.0.1:${plainPort}/exec`, { method: 'POST', body: '{"argv":["id"]}' })
          .then((r) => r.status)
          .catch(() => 0);
        if (!status) await new Promise((r) => setTimeout(r, 100));
      }
      assert.equal(status, 404);
    } finally {
      plain.kill('SIGTERM');
    }
  });
});
