import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { stringify } from 'yaml';
import type { BuildSettings } from '../../src/pipeline/build-spec';
import { KeyRecord } from '../../src/pipeline/step-keys';
import { explainImage, formatExplanation } from '../../src/cli/explain';
import { LocalHost, SshHost } from '../../src/host';
import { tempDir } from '../support/process';
import { testSshd } from '../support/sshd';
import { FIRST, KEYRING_CONTENT, OPERATOR_CONTENT, PINNED } from './key-fixtures';
import { buildPython, fakePipeline } from './fake-pipeline';

/**
 * The pipeline's real steps on a real artifact store (LocalHost, a temp workspace), with only the
 * heavy part of each step (mmdebstrap, installs, mkfs) replaced by a build that writes a few
 * files: the keys the pipeline computes, the records it keeps beside the artifacts, and what
 * `rootfs explain` reads back from them, locally, over SSH and from the command line.
 */

const CLI = path.join(__dirname, '../../src/cli/main.js');

/** The explanation with its times taken out (they are the build's). */
const timeless = (text: string) => text.replace(/built \d{4}-\d\d-\d\dT[\d:.]+Z/g, 'built T');

describe('rootfs explain, on artifacts the pipeline kept @real', function () {
  this.timeout(120_000);
  let dir: string;
  let workspace: string;
  let first: Awaited<ReturnType<typeof buildPython>>;
  let second: Awaited<ReturnType<typeof buildPython>>;
  let secondBuilt: string[];

  before(async () => {
    dir = tempDir('explain');
    workspace = path.join(dir, 'ws');
    fs.writeFileSync(path.join(dir, 'keyring.gpg'), KEYRING_CONTENT);
    fs.writeFileSync(path.join(dir, 'operator'), OPERATOR_CONTENT);
    // What Pipeline.prepare makes (it also checks the operator is an x86-64 executable, which this one is not).
    fs.mkdirSync(path.join(workspace, 'images'), { recursive: true });
    const settings = (packages: string[]): BuildSettings => ({
      base: FIRST.base,
      image: FIRST.image,
      workspace,
      languages: { python: { ...FIRST.languages.python!, packages } },
    });
    first = await buildPython(fakePipeline(dir, settings([])).pipeline);
    const again = fakePipeline(dir, settings(['python3-venv']));
    second = await buildPython(again.pipeline);
    secondBuilt = again.built;
  });

  it('the pipeline computes the pinned keys, keeps a record beside each artifact, and re-runs only what changed', () => {
    const { runtime, operator, verify, image } = PINNED.first.python;
    assert.deepEqual(second, { base: PINNED.first.base, runtime, operator, verify, image });
    assert.deepEqual(secondBuilt, ['runtime', 'operator', 'verify', 'image'], 'the base was reused');
    for (const key of Object.values(second)) {
      const record = KeyRecord.parse(
        JSON.parse(fs.readFileSync(path.join(workspace, 'artifacts', key, 'key-input.json'), 'utf8')),
      );
      assert.equal(record.key, key);
      assert.equal(record.language, record.step === 'base' ? null : 'python');
    }
    assert.deepEqual(fs.readdirSync(path.join(workspace, 'artifacts', '.tmp')), [], 'nothing left in the work area');
  });

  it('says why each step ran: what differs from the closest earlier artifact of that step', async () => {
    const text = timeless(formatExplanation(await explainImage(new LocalHost(), workspace, 'python')));
    assert.equal(
      text,
      [
        `python: ${workspace}/images/rootfs-python.ext4 is ${second.image}, made from the tree ${second.operator}`,
        `base      ${second.base}  built T: no earlier base artifact to compare with`,
        `runtime   ${second.runtime}  built T, since ${first.runtime} (built T):`,
        '  runtime: packages: [] → ["python3-venv"]',
        `operator  ${second.operator}  built T, since ${first.operator} (built T):`,
        `  operator: previous: ${first.runtime} → ${second.runtime}`,
        `verify    ${second.verify}  built T, since ${first.verify} (built T):`,
        `  verify: previous: ${first.operator} → ${second.operator}`,
        `image     ${second.image}  built T, since ${first.image} (built T):`,
        `  image: previous: ${first.verify} → ${second.verify}`,
        `  image: operatorKey: "${first.operator}" → "${second.operator}"`,
        '',
      ].join('\n'),
    );
  });

  it('reads the same over SSH', async () => {
    const sshd = await testSshd();
    const { host: address, port, user, clientKeyPath: keyPath, hostKeySha256 } = sshd;
    const host = await SshHost.connect({ host: address, port, user, keyPath, hostKeySha256 });
    try {
      const local = formatExplanation(await explainImage(new LocalHost(), workspace, 'python'));
      assert.equal(formatExplanation(await explainImage(host, workspace, 'python')), local);
    } finally {
      await host.close();
    }
  });

  it('from the command line; an artifact built before records were kept is "no record", and the walk goes on from the tree', () => {
    const config = path.join(dir, 'rootfs.yaml');
    const verify = [{ argv: ['true'], expect: '' }];
    fs.writeFileSync(config, stringify({ workspace, languages: { python: { verify }, go: { verify } } }));
    const env = { ...process.env, ROOTFS_CONFIG: '' };
    const rootfs = (...args: string[]) =>
      spawnSync(process.execPath, [CLI, '--config', config, ...args], { encoding: 'utf8', env });

    const record = path.join(workspace, 'artifacts', second.verify, 'key-input.json');
    const kept = fs.readFileSync(record);
    fs.rmSync(record);
    try {
      const out = rootfs('explain', 'python');
      assert.equal(out.status, 0, out.stderr);
      const lines = timeless(out.stdout).split('\n');
      const noRecord = `verify    ${second.verify}  built T: no record (built before artifacts kept their key input)`;
      assert.ok(lines.includes(noRecord), out.stdout);
      assert.ok(lines.includes('  runtime: packages: [] → ["python3-venv"]'), out.stdout);
      const json = JSON.parse(rootfs('explain', 'python', '--json').stdout) as {
        steps: Array<{ step: string; state: string }>;
      };
      const states = json.steps.map((s) => `${s.step} ${s.state}`);
      assert.deepEqual(states, [
        'base first',
        'runtime changed',
        'operator changed',
        'verify no-record',
        'image changed',
      ]);
    } finally {
      fs.writeFileSync(record, kept);
    }

    fs.writeFileSync(record, kept.toString('utf8').replace('"recipe": 1', '"recipe": 7'));
    const tampered = rootfs('explain', 'python');
    assert.equal(tampered.status, 1);
    assert.match(tampered.stderr, new RegExp(`key-input\\.json does not hash to ${second.verify}: it was changed`));
    fs.writeFileSync(record, kept);

    const none = rootfs('explain', 'go');
    assert.equal(none.status, 1);
    assert.match(none.stderr, /^go: go has no image in .*\/images: build it first \(rootfs create go\)$/m);
    assert.equal(rootfs('explain', 'cobol').status, 2);
  });

  it('follows a customized image through its customize step', async () => {
    const settings = {
      base: FIRST.base,
      image: FIRST.image,
      workspace,
      languages: { python: FIRST.languages.python! },
    };
    const { pipeline, built } = fakePipeline(dir, settings);
    const changed = await pipeline.customize('python', ['sh', '-c', 'echo hi']);
    assert.equal(changed.key, PINNED.first.customize);
    const verify = await pipeline.verify('python', changed.key);
    const image = await pipeline.image('python', verify.key, changed.key, changed.customizations);
    assert.deepEqual(built, ['customize', 'verify', 'image']);
    const explained = await explainImage(new LocalHost(), workspace, 'python');
    assert.equal(explained.treeKey, changed.key);
    assert.deepEqual(
      explained.steps.map((s) => `${s.step} ${s.state}`),
      ['base first', 'runtime changed', 'operator changed', 'customize first', 'verify changed', 'image changed'],
    );
    const text = timeless(formatExplanation(explained));
    assert.ok(text.includes(`  verify: previous: ${second.operator} → ${changed.key}\n`), text);
    assert.ok(text.includes(`image     ${image.key}  built T, since ${second.image} (built T):\n`), text);
  });
});
