import { strict as assert } from 'node:assert';
import { execFileSync, spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { requireTool } from '../../src/setup/tools';
import { projectRoot } from '../../src/util/paths';
import { freePort } from '../support/process';

describe('reference guest operator @real', () => {
  it('passes its own Go tests', function () {
    this.timeout(180_000);
    execFileSync('go', ['test', './...'], { cwd: path.join(projectRoot(), 'guest'), stdio: 'pipe', env: { ...process.env, CGO_ENABLED: '0' } });
  });

  it('is a static binary that serves /health and /exec, and stops cleanly on SIGTERM', async () => {
    const binary = requireTool('referenceOperator');
    assert.match(execFileSync('file', ['-b', binary], { encoding: 'utf8' }), /ELF 64-bit LSB executable, x86-64.*statically linked/);
    const port = await freePort();
    const child = spawn(binary, ['guest', '--port', String(port), '--listen', '127.0.0.1'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    child.stdout.on('data', (c: Buffer) => (log += c.toString()));
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
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
      // The static binary (no cgo) starts programs with exactly the environment it is given.
      const exec = await fetch(`http://127.0.0.1:${port}/exec`, {
        method: 'POST',
        body: JSON.stringify({ argv: ['env'], env: ['PATH=/usr/bin:/bin', 'A=1'], timeoutSeconds: 5 }),
      });
      assert.equal(exec.status, 200, await exec.clone().text());
      assert.deepEqual(await exec.json(), {
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
    assert.match(log, /listening on 127\.0\.0\.1:\d+/);
    assert.match(log, /GET \/health/);
    assert.match(log, /exec "env": code 0/);
  });
});
