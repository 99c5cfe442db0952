import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { StepRunner } from '../../src/pipeline/context';
import { Pipeline } from '../../src/pipeline/pipeline';
import { keyRecord } from '../../src/pipeline/step-keys';
import { LocalHost } from '../../src/host';
import { tempDir } from '../support/process';
import { FIRST } from './key-fixtures';

/**
 * The operator step links the runtime's tree instead of copying it: its files are the runtime
 * artifact's own inodes. This runs the real step on a small runtime artifact whose tree holds
 * what the step replaces (a profile script of the same name, /etc/shadow with a day after the
 * epoch, a machine ID) and checks the runtime artifact did not change by one byte, mode or time.
 */
describe('the operator step links the runtime tree and never changes it @real', function () {
  this.timeout(60_000);
  const EPOCH = 1_700_000_000;
  const day = Math.floor(EPOCH / 86400);

  /** Every entry of a tree: type, mode, owner, size, mtime, and the content's sha256 for files. */
  const snapshot = (tree: string) =>
    spawnSync('find', [tree, '-printf', '%P %y %m %U:%G %s %T@ %l\\n'], { encoding: 'utf8' })
      .stdout.split('\n')
      .sort()
      .map((line) => {
        const file = path.join(tree, line.split(' ')[0]!);
        const isFile = line.split(' ')[1] === 'f';
        return isFile ? `${line} ${crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex')}` : line;
      });

  it('replaces what it writes, clamps only its own files, and leaves the runtime artifact as it was', async () => {
    const dir = tempDir('operator-link');
    const workspace = path.join(dir, 'ws');
    const operator = path.join(dir, 'infra.operator');
    fs.writeFileSync(operator, '#!/bin/sh\necho operator\n');
    const runner = new StepRunner(new LocalHost());
    const pipeline = new Pipeline(runner, {
      config: { base: FIRST.base, image: FIRST.image, workspace, languages: { python: FIRST.languages.python! } },
      operatorPath: operator,
      keyringPath: path.join(dir, 'keyring.gpg'),
    });

    // The archive snapshot the base names, kept as the pipeline keeps it: its Date is the epoch.
    const inRelease = `Origin: Ubuntu\nDate: ${new Date(EPOCH * 1000).toUTCString()}\n`;
    const sha = crypto.createHash('sha256').update(inRelease).digest('hex');
    fs.mkdirSync(path.join(workspace, 'cache', 'inrelease'), { recursive: true });
    fs.writeFileSync(path.join(workspace, 'cache', 'inrelease', `${sha}.InRelease`), inRelease);
    const base = keyRecord('base', null, { test: 'operator-link' }, null);
    await pipeline.store.ensure(base, async () => ({ archive: { jammy: sha } }));
    const runtime = keyRecord('runtime', base.key, { test: 'operator-link' }, 'python');
    await pipeline.store.ensure(runtime, async (work) => {
      const tree = path.join(work, 'tree');
      for (const d of ['etc/profile.d', 'usr/bin', 'var/log']) fs.mkdirSync(path.join(tree, d), { recursive: true });
      fs.writeFileSync(path.join(tree, 'etc/profile.d/python.sh'), 'export FROM_RUNTIME=1\n', { mode: 0o600 });
      fs.writeFileSync(path.join(tree, 'etc/shadow'), `root:*:${day + 30}:0:99999:7:::\n`, { mode: 0o640 });
      fs.writeFileSync(path.join(tree, 'etc/machine-id'), '0123456789abcdef0123456789abcdef\n', { mode: 0o444 });
      fs.writeFileSync(path.join(tree, 'usr/bin/python3'), 'not really python\n', { mode: 0o755 });
      fs.writeFileSync(path.join(tree, 'var/log/dpkg.log'), 'installed\n');
      // As the runtime step leaves it: nothing after the epoch.
      spawnSync('find', [tree, '-exec', 'touch', '--no-dereference', `--date=@${EPOCH - 3600}`, '{}', '+']);
      return {};
    });
    const runtimeTree = pipeline.store.tree(runtime.key);
    const before = snapshot(runtimeTree);

    const sha256 = crypto.createHash('sha256').update(fs.readFileSync(operator)).digest('hex');
    const result = await pipeline.operator('python', runtime.key, sha256);
    assert.equal(result.reused, false);
    assert.deepEqual(snapshot(runtimeTree), before, 'the runtime artifact is unchanged');

    const tree = pipeline.store.tree(result.key);
    const ino = (p: string) => fs.statSync(p).ino;
    assert.equal(ino(path.join(tree, 'usr/bin/python3')), ino(path.join(runtimeTree, 'usr/bin/python3')), 'linked');
    assert.notEqual(ino(path.join(tree, 'etc/shadow')), ino(path.join(runtimeTree, 'etc/shadow')));
    assert.equal(fs.readFileSync(path.join(tree, 'etc/shadow'), 'utf8'), `root:*:${day}:0:99999:7:::\n`);
    assert.equal(fs.statSync(path.join(tree, 'etc/shadow')).mode & 0o777, 0o640, 'shadow keeps its mode');
    assert.equal(fs.readFileSync(path.join(tree, 'etc/machine-id'), 'utf8'), '');
    assert.equal(fs.statSync(path.join(tree, 'etc/machine-id')).mode & 0o777, 0o444, 'machine-id keeps its mode');
    assert.match(fs.readFileSync(path.join(tree, 'etc/profile.d/python.sh'), 'utf8'), /written by rootfs-pipeline/);
    assert.ok(!fs.existsSync(path.join(tree, 'var/log/dpkg.log')), 'logs removed from the new tree only');
    const newer = spawnSync('find', [tree, '-newermt', `@${EPOCH}`], { encoding: 'utf8' }).stdout.trim();
    assert.equal(newer, '', 'every time in the new tree is clamped');
  });
});
