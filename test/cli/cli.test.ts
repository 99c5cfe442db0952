import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { stringify } from 'yaml';
import { requireTool } from '../../src/setup/tools';
import { tempDir } from '../support/process';
import { testS3 } from '../support/s3';
import { testTemporal } from '../support/temporal';

const CLI = path.join(__dirname, '../../src/cli/main.js');

function rootfs(args: string[], env: NodeJS.ProcessEnv = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [CLI, ...args], { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (c: Buffer) => (stdout += c.toString()));
    child.stderr.on('data', (c: Buffer) => (stderr += c.toString()));
    child.once('exit', (code) => resolve({ code, stdout, stderr }));
  });
}

describe('rootfs CLI', function () {
  this.timeout(20 * 60 * 1000);

  it('exits 2 with every problem of a bad config, and on bad usage', async () => {
    const dir = tempDir('cli-bad');
    fs.writeFileSync(path.join(dir, 'rootfs.yaml'), 'workspace: relative\ns3:\n  bucket: UPPER\n');
    const bad = await rootfs(['--config', path.join(dir, 'rootfs.yaml'), 'create-all']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /rootfs\.yaml:1: workspace: expected an absolute path/);
    assert.match(bad.stderr, /rootfs\.yaml:3: s3\.bucket: expected an S3 bucket name/);
    assert.equal((await rootfs(['no-such-command'])).code, 2);
    const hostile = await rootfs(['s3', 'upload-single', 'python;rm -rf /']);
    assert.equal(hostile.code, 2);
    assert.match(hostile.stderr, /not a language name/);
  });

  it('prints help with an example for every command', async () => {
    for (const cmd of [['create-all'], ['status'], ['verify'], ['resume'], ['s3', 'list'], ['s3', 'download'], ['s3', 'bootstrap-script']]) {
      const help = await rootfs([...cmd, '--help']);
      assert.equal(help.code, 0, cmd.join(' '));
      assert.match(help.stdout, /Example:\n {2}rootfs /, cmd.join(' '));
    }
  });

  it('@real create builds an image through Temporal with its own worker, then status shows it done', async () => {
    const temporal = await testTemporal();
    const s3 = await testS3();
    const bucket = await s3.freshBucket();
    const dir = tempDir('cli');
    const config = path.join(dir, 'rootfs.yaml');
    fs.writeFileSync(
      config,
      stringify({
        workspace: path.join(dir, 'workspace'),
        operator: { path: requireTool('referenceOperator') },
        buildHost: { kind: 'local', alias: 'cli-test' },
        temporal: { address: temporal.address, namespace: temporal.namespace },
        s3: bucket,
      }),
    );
    const run = await rootfs(['--config', config, 'create', 'bash', '--run-tag', 'cli-test'], s3.env);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stderr, /^workflow cli-test\/all$/m);
    assert.match(run.stderr, /^bash +debootstrap base +done \(\d+\.\d s\)$/m);
    assert.match(run.stderr, /^bash +upload +done/m);
    assert.match(run.stdout, /^bash +rootfs-bash\.ext4 +\d+\.\d MiB +[0-9a-f]{12} +6 ran, 0 reused\n +GNU bash, version 5\.1/m);
    assert.match(run.stdout, new RegExp(`^bucket ${bucket.bucket}: 2 objects`, 'm'));

    const status = await rootfs(['--config', config, 'status', 'cli-test/all']);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /^bash +rootfs-bash\.ext4 .* 6 ran, 0 reused$/m);

    const verify = await rootfs(['--config', config, 'verify', 'bash']);
    assert.equal(verify.code, 0, verify.stderr);
    assert.match(verify.stdout, /^ok {3}GNU bash, version 5\.1\.\d+/m);
    assert.match(verify.stdout, /^Filesystem +Size +Used +Avail Use%\nrootfs-bash\.ext4 +[\d.]+[MG] +[\d.]+[MG] +[\d.]+[MG] +\d+%$/m);
    assert.equal(fs.readFileSync('/proc/self/mountinfo', 'utf8').includes('rootfs-verify-'), false, 'verify leaves no mount');

    const list = await rootfs(['--config', config, 's3', 'list'], s3.env);
    assert.match(list.stdout, /rootfs-bash\.ext4\n +bash: GNU bash, version 5\.1/);
  });
});
