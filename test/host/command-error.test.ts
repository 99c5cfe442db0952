import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { StepRunner } from '../../src/pipeline/context';
import { check, chrootArgv, CommandError, commandName, LocalHost, tellingLine, type Host } from '../../src/host';
import { onCleanup, tempDir } from '../support/process';
import { busyboxTree } from '../support/trees';
import { TEST_HOSTS } from '../support/hosts';

/**
 * `status`, the live view and Temporal Web show an error's first line only. A failed command's
 * first line must therefore say which program failed and why, not `unshare … exited with 25:`.
 */

const firstLine = (err: unknown) => (err as Error).message.split('\n')[0];

describe('a failed command says why on its first line', () => {
  it('names the program behind the wrappers the pipeline puts around it', () => {
    const unshare = ['unshare', '--mount', '--propagation', 'private', '--fork', '--kill-child'];
    assert.equal(commandName([...unshare, 'mmdebstrap', '--variant=minbase', 'jammy', '/x']), 'mmdebstrap');
    assert.equal(
      commandName(chrootArgv('/tree', ['env', '-i', 'PATH=/bin', 'LC_ALL=C', 'apt-get', 'install', '-y', 'x'])),
      'apt-get',
    );
    assert.equal(commandName(['env', '-u', 'HOME', 'A=1', 'sh', '/tmp/install.sh']), 'sh');
    assert.equal(commandName(['chroot', '/tree', 'dpkg-query', '-W']), 'dpkg-query');
    assert.equal(commandName(['/usr/bin/curl', '--fail', 'http://x']), 'curl');
    assert.equal(commandName(['env']), 'env');
  });

  it('picks the line that names the cause, not the last one', () => {
    const enospc = [
      'I: extracting archives...',
      'tar: ./usr/lib/x: Cannot write: No space left on device',
      'E: extracting failed',
      'E: mmdebstrap failed',
    ];
    assert.equal(tellingLine(enospc.join('\n')), 'tar: ./usr/lib/x: Cannot write: No space left on device');
    assert.equal(
      tellingLine('Reading package lists...\nE: Unable to locate package nope\n'),
      'E: Unable to locate package nope',
    );
    const unsigned = 'W: GPG error: NO_PUBKEY 1234\nE: The repository is not signed.\nN: Updating is disabled';
    assert.equal(tellingLine(unsigned), 'E: The repository is not signed.');
    // GNU tar on a full disk does not name the errno.
    const tar = 'tar: big.bin: Wrote only 4608 of 10240 bytes\ntar: Exiting with failure status due to previous errors';
    assert.equal(tellingLine(tar), 'tar: big.bin: Wrote only 4608 of 10240 bytes');
    assert.equal(tellingLine('some output\nthe last words\n\n'), 'the last words');
    assert.equal(tellingLine(''), '');
    // A long line keeps its end, where tools name the cause.
    const long = `cp: error copying '/${'a'.repeat(200)}' to '/${'b'.repeat(200)}': No space left on device`;
    assert.match(tellingLine(long), /^cp: error copying '\/a+…b+': No space left on device$/);
    assert.ok(tellingLine(long).length <= 241);
  });
});

for (const [name, connect] of TEST_HOSTS) {
  describe(`a full disk is named on the first line, on ${name} @real`, function () {
    this.timeout(60_000);
    let host: Host;
    before(async () => {
      host = await connect();
    });
    after(async () => host?.close());

    it('dd to /dev/full', async () => {
      await assert.rejects(check(host, ['dd', 'if=/dev/zero', 'of=/dev/full', 'bs=1k', 'count=1']), (err: unknown) => {
        assert.ok(err instanceof CommandError);
        assert.equal(firstLine(err), "dd exited with 1: dd: error writing '/dev/full': No space left on device");
        assert.equal(err.reason, "dd: error writing '/dev/full': No space left on device");
        assert.match(err.message, /\ncommand: dd if=\/dev\/zero of=\/dev\/full bs=1k count=1$/);
        return true;
      });
    });
  });
}

describe('a full workspace is named on the first line @real', function () {
  this.timeout(60_000);

  it('copying onto a 1 MiB tmpfs, behind unshare as the base step runs mmdebstrap', async () => {
    const dir = tempDir('full');
    const mnt = path.join(dir, 'mnt');
    fs.mkdirSync(mnt);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', mnt]);
    onCleanup(() => {
      execFileSync('umount', [mnt]);
    });
    const src = path.join(dir, 'src');
    fs.mkdirSync(src);
    fs.writeFileSync(path.join(src, 'big.bin'), crypto.randomBytes(3 << 20));
    fs.writeFileSync(path.join(src, 'small.txt'), 'small');
    const argv = [
      'unshare',
      '--mount',
      '--propagation',
      'private',
      '--fork',
      '--kill-child',
      'cp',
      '-v',
      '-r',
      `${src}/.`,
      mnt,
    ];
    await assert.rejects(check(new LocalHost(), argv), (err: unknown) => {
      assert.ok(err instanceof CommandError);
      const enospc = /^cp: error writing '.*\/mnt\/\.\/(big\.bin|small\.txt)': No space left on device$/;
      assert.match(firstLine(err)!, /^cp exited with 1: /);
      assert.match(firstLine(err)!.slice('cp exited with 1: '.length), enospc);
      const lines = err.message.split('\n');
      assert.match(lines[1]!, enospc, 'the stderr tail follows');
      assert.equal(lines.at(-1), `command: ${argv.join(' ')}`);
      return true;
    });
  });

  it('a command in the image tree (StepRunner.chroot)', async () => {
    const tree = busyboxTree();
    const script = 'echo "reading things" >&2; echo x > /dev/full; echo "E: giving up" >&2; exit 25';
    await assert.rejects(new StepRunner(new LocalHost()).chroot(tree, ['sh', '-c', script]), (err: unknown) => {
      assert.ok(err instanceof CommandError);
      assert.match(firstLine(err)!, /^sh exited with 25: .*No space left on device$/);
      assert.match(err.message, /\nE: giving up\n/);
      assert.ok(err.message.endsWith(`command (in ${tree}): sh -c ${JSON.stringify(script)}`));
      return true;
    });
  });
});
