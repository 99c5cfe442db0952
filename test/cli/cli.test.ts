import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { stringify } from 'yaml';
import { requireTool } from '../../src/setup/tools';
import { stopBackgroundWorkers } from '../../src/cli/background-worker';
import { catInImage, e2fsckStatus, makeImage } from '../support/image';
import { onCleanup, tempDir } from '../support/process';
import { seedKernel } from '../support/kernel';
import { testS3 } from '../support/s3';
import { testTemporal } from '../support/temporal';
import { busyboxTree } from '../support/trees';
import { CLI, rootfs } from '../support/cli';

const ESC = '\u001b';

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
    const noHost = await rootfs(['config', '--ssh', 'builder-9']);
    assert.equal(noHost.code, 2);
    assert.match(noHost.stderr, /--ssh "builder-9": no such SSH host in sshHosts \(none configured\)/);
    const hostile = await rootfs(['s3', 'upload-single', 'python;rm -rf /']);
    assert.equal(hostile.code, 2);
    assert.match(hostile.stderr, /not a language name/);
    // create checks its names before it starts anything, like verify: exit 2 for both.
    for (const args of [
      ['create', 'BadName'],
      ['verify', 'BadName'],
      ['create', 'cobol'],
      ['create', 'python', '--run-tag', 'Bad Tag'],
    ]) {
      const refused = await rootfs(args);
      assert.equal(refused.code, 2, `${args.join(' ')}: ${refused.stderr}`);
    }
  });

  it('prints help with an example for every command', async () => {
    for (const cmd of [
      ['create-all'],
      ['status'],
      ['verify'],
      ['resume'],
      ['explain'],
      ['s3', 'list'],
      ['s3', 'download'],
      ['s3', 'bootstrap-script'],
    ]) {
      const help = await rootfs([...cmd, '--help']);
      assert.equal(help.code, 0, cmd.join(' '));
      assert.match(help.stdout, /Example:\n {2}rootfs /, cmd.join(' '));
    }
  });

  it('@real verify runs the checks inside the image, sandboxed, and prints version lines and the df line', async () => {
    const dir = tempDir('cli-verify');
    const tree = busyboxTree();
    fs.chmodSync(tree, 0o755);
    fs.mkdirSync(path.join(dir, 'workspace/images'), { recursive: true });
    makeImage(tree, path.join(dir, 'workspace/images/rootfs-bash.ext4'));
    const config = path.join(dir, 'rootfs.yaml');
    const busybox = { argv: ['busybox'], expect: '^BusyBox v1\\.' };
    // The checks run without the host's network: /proc/net/dev lists lo only.
    const netOnlyLo = {
      argv: ['sh', '-c', 'cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d " "'],
      expect: '^lo$',
    };
    fs.writeFileSync(
      config,
      stringify({ workspace: path.join(dir, 'workspace'), languages: { bash: { verify: [busybox, netOnlyLo] } } }),
    );
    const ok = await rootfs(['--config', config, 'verify', 'bash']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.match(
      ok.stdout,
      /^ok {3}BusyBox v1\.\d+\.\d+ .*\nok {3}lo\nFilesystem +Size +Used +Avail Use%\nrootfs-bash\.ext4 +16M +[\d.]+M +[\d.]+M +\d+%\n$/,
    );

    fs.writeFileSync(
      config,
      stringify({
        workspace: path.join(dir, 'workspace'),
        languages: { bash: { verify: [busybox, { argv: ['sh', '-c', 'echo 9.9; exit 2'], expect: '^9' }] } },
      }),
    );
    const failed = await rootfs(['--config', config, 'verify', 'bash']);
    assert.equal(failed.code, 1);
    assert.match(failed.stdout, /^ok {3}BusyBox v1\.[^\n]*\nFAIL 9\.9\nFilesystem/);
    const json = JSON.parse((await rootfs(['--config', config, 'verify', 'bash', '--json'])).stdout) as {
      ok: boolean;
      usage: { sizeBytes: number };
    };
    assert.equal(json.ok, false);
    assert.equal(json.usage.sizeBytes, 16 * 2 ** 20);
    fs.rmSync(path.join(dir, 'workspace/images/rootfs-bash.ext4'));
    const missing = await rootfs(['--config', config, 'verify', 'bash']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /rootfs-bash\.ext4 does not exist: build it first/);
  });

  it('@real @heavy create builds in a background worker; Ctrl-C on the live view detaches, status --follow re-attaches', async () => {
    const temporal = await testTemporal();
    const s3 = await testS3();
    const bucket = await s3.freshBucket();
    const dir = tempDir('cli');
    const state = path.join(dir, 'state');
    onCleanup(() => stopBackgroundWorkers(30_000, state).then(() => undefined));
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
    const env = { ...s3.env, ROOTFS_STATE_DIR: state };
    // This test is about the CLI: the kernel steps are reused from this run's one kernel build.
    await seedKernel(path.join(dir, 'workspace'));

    // On a terminal (a pty from script(1)): the live block, then a real Ctrl-C once the base is being built.
    const tty = await onTerminal(['--config', config, 'create', 'bash', '--run-tag', 'cli-test'], env, (out) =>
      / 1\/8 +debootstrap base +0:0[3-9]/.test(out),
    );
    assert.equal(tty.code, 130, tty.output);
    assert.match(tty.output, /worker: started in the background for build host cli-test \(pid \d+/);
    assert.match(tty.output, /^workflow cli-test\/all\r?$/m);
    assert.match(tty.output, new RegExp(`${ESC}\\[\\d+A`), 'the live block is redrawn in place');
    assert.match(tty.output, /bash +\[#{2,3}-+\] 1\/8 +debootstrap base +\d+:\d\d/);
    assert.match(
      tty.output,
      /detached: the build goes on in the background worker; re-attach with: rootfs status --follow cli-test\/all/,
    );
    const handle = temporal.env.client.workflow.getHandle('cli-test/all');
    assert.equal((await handle.describe()).status.name, 'RUNNING', 'Ctrl-C never stops the build');

    // Re-attach from a pipe: append-only step lines until the build ends, then the summary.
    const follow = await rootfs(['--config', config, 'status', '--follow', 'cli-test/all'], env);
    assert.equal(follow.code, 0, follow.stderr);
    assert.match(follow.stderr, /^bash +debootstrap base +done \(\d+\.\d s\)$/m);
    assert.match(follow.stderr, /^bash +upload +done/m);
    assert.ok(!follow.stderr.includes(ESC), 'no cursor movement when not a terminal');
    assert.match(
      follow.stdout,
      /^bash +rootfs-bash\.ext4 +\d+\.\d MiB +[0-9a-f]{12} +7 ran, 0 reused\n +GNU bash, version 5\.1/m,
    );
    // The plain objects (image, kernel, manifests, config) and the block store beside them.
    assert.match(follow.stdout, new RegExp(`^bucket ${bucket.bucket}: (1[1-9]|[2-9]\\d) objects`, 'm'));

    // A second build finds the worker running and every step's artifact already there.
    const again = await rootfs(['--config', config, 'create', 'bash', '--run-tag', 'cli-again'], env);
    assert.equal(again.code, 0, again.stderr);
    assert.doesNotMatch(again.stderr, /worker: started/);
    assert.match(again.stdout, /^bash +rootfs-bash\.ext4 .* 0 ran, 7 reused$/m);

    const status = await rootfs(['--config', config, 'status', 'cli-test/all'], env);
    assert.equal(status.code, 0, status.stderr);
    assert.match(status.stdout, /^bash +rootfs-bash\.ext4 .* 7 ran, 0 reused$/m);

    const verify = await rootfs(['--config', config, 'verify', 'bash'], env);
    assert.equal(verify.code, 0, verify.stderr);
    assert.match(verify.stdout, /^ok {3}GNU bash, version 5\.1\.\d+/m);
    assert.match(
      verify.stdout,
      /^Filesystem +Size +Used +Avail Use%\nrootfs-bash\.ext4 +[\d.]+[MG] +[\d.]+[MG] +[\d.]+[MG] +\d+%$/m,
    );
    assert.equal(
      fs.readFileSync('/proc/self/mountinfo', 'utf8').includes('rootfs-verify-'),
      false,
      'verify leaves no mount',
    );

    const list = await rootfs(['--config', config, 's3', 'list'], env);
    assert.match(list.stdout, /rootfs-bash\.ext4\n +bash: GNU bash, version 5\.1/);

    // customize: a one-off change becomes a new artifact and a re-made, verified image; a failing one changes nothing.
    const image = path.join(dir, 'workspace', 'images', 'rootfs-bash.ext4');
    const custom = await rootfs(
      [
        '--config',
        config,
        'customize',
        'bash',
        '--',
        'sh',
        '-c',
        'echo "$1" > /etc/motd.d-custom',
        'sh',
        'hello from customize',
      ],
      env,
    );
    assert.equal(custom.code, 0, custom.stderr);
    assert.match(
      custom.stderr,
      /^warning: this changes only the current bash image; the next build from config replaces it/m,
    );
    assert.match(custom.stderr, /bash: changed: artifact customize-[0-9a-f]{32}/);
    assert.match(custom.stdout, /^rootfs-bash\.ext4 +[\d.]+ MiB +sha256 [0-9a-f]{12} +GNU bash, version 5\.1/m);
    assert.equal(catInImage(image, '/etc/motd.d-custom'), 'hello from customize\n');
    assert.equal(e2fsckStatus(image), 0);
    const manifest = JSON.parse(fs.readFileSync(`${image}.manifest.json`, 'utf8')) as { customizations: string[][] };
    assert.deepEqual(manifest.customizations, [
      ['sh', '-c', 'echo "$1" > /etc/motd.d-custom', 'sh', 'hello from customize'],
    ]);
    const before = fs.readFileSync(image);
    const failing = await rootfs(
      ['--config', config, 'customize', 'bash', '--', 'sh', '-c', 'echo broken >&2; exit 3'],
      env,
    );
    assert.equal(failing.code, 1);
    assert.match(failing.stderr, /broken/);
    assert.match(failing.stderr, /the published image is unchanged/);
    assert.ok(fs.readFileSync(image).equals(before), 'the image is untouched');
    assert.equal((await rootfs(['--config', config, 'customize', '../x', '--', 'true'], env)).code, 2);

    // dev status lists the worker; dev down stops it gracefully.
    const devStatus = await rootfs(['dev', 'status'], env);
    const pid = Number(/^worker cli-test: up \(pid (\d+)\)/m.exec(devStatus.stdout)?.[1]);
    assert.ok(pid > 0, devStatus.stdout);
    const down = await rootfs(['dev', 'down'], env);
    assert.match(down.stdout, new RegExp(`stopped: worker cli-test \\(pid ${pid}\\)`));
    assert.equal(running(pid), false, 'the worker is gone');
  });
});

/**
 * Runs the CLI on a pseudo-terminal (script(1)) and types Ctrl-C once `ready(output)` holds.
 * The ^C byte goes through the terminal's line discipline, as a person's key press does.
 */
function onTerminal(
  args: string[],
  env: NodeJS.ProcessEnv,
  ready: (output: string) => boolean,
): Promise<{ code: number | null; output: string }> {
  const command = [process.execPath, CLI, ...args].map(shellQuote).join(' ');
  return new Promise((resolve, reject) => {
    const child = spawn('script', ['--quiet', '--return', '--command', command, '/dev/null'], {
      env: { ...process.env, ...env },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let output = '';
    let sent = false;
    const timer = setTimeout(
      () => (child.kill('SIGKILL'), reject(new Error(`never ready; output so far:\n${output}`))),
      5 * 60 * 1000,
    );
    const onData = (c: Buffer) => {
      output += c.toString();
      if (!sent && ready(output)) {
        sent = true;
        child.stdin.write('\x03');
      }
    };
    child.stdout.on('data', onData);
    child.stderr.on('data', onData);
    child.once('exit', (code) => (clearTimeout(timer), resolve({ code, output })));
  });
}

/** Alive and not a zombie (an orphan waits for a reaper that a container may not have). */
function running(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(fs.readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

const shellQuote = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;
