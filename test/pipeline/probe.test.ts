import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { BuildSettings } from '../../src/pipeline/build-spec';
import { StepRunner, WouldBuild } from '../../src/pipeline/context';
import { LocalHost } from '../../src/host';
import { tempDir } from '../support/process';
import { FIRST, KEYRING_CONTENT, OPERATOR_CONTENT } from './key-fixtures';
import { buildPython, fakePipeline } from './fake-pipeline';

/**
 * A probing runner (what the `probe` activity runs the steps with) on a real artifact store:
 * finished steps come back as reused, the first step that would build throws WouldBuild, and a
 * probe leaves nothing behind (no lock, no work directory, no artifact).
 */
describe('probing the steps of an image @real', function () {
  this.timeout(60_000);
  let dir: string;
  let workspace: string;
  const settings = (packages: string[]): BuildSettings => ({
    base: FIRST.base,
    image: FIRST.image,
    workspace,
    languages: { python: { ...FIRST.languages.python!, packages } },
  });
  const probing = () => new StepRunner(new LocalHost()).probing();
  const listing = () =>
    ['', '.tmp', '.locks'].map((sub) => {
      const at = path.join(workspace, 'artifacts', sub);
      return fs.existsSync(at) ? fs.readdirSync(at).sort() : [];
    });

  before(async () => {
    dir = tempDir('probe');
    workspace = path.join(dir, 'ws');
    fs.writeFileSync(path.join(dir, 'keyring.gpg'), KEYRING_CONTENT);
    fs.writeFileSync(path.join(dir, 'operator'), OPERATOR_CONTENT);
    fs.mkdirSync(path.join(workspace, 'images'), { recursive: true });
    await buildPython(fakePipeline(dir, settings([])).pipeline);
  });

  it('finds every finished step of an unchanged build, and builds nothing', async () => {
    const built = await buildPython(fakePipeline(dir, settings([])).pipeline);
    const before = listing();
    const probe = fakePipeline(dir, settings([]), probing());
    assert.deepEqual(await buildPython(probe.pipeline), built);
    assert.deepEqual(probe.built, []);
    assert.deepEqual(listing(), before);
  });

  it('stops at the first step that would build, and leaves no trace of it', async () => {
    const before = listing();
    const probe = fakePipeline(dir, settings(['python3-venv']), probing());
    const base = await probe.pipeline.base(FIRST.archive);
    assert.equal(base.reused, true);
    await assert.rejects(probe.pipeline.runtime('python', base.key, FIRST.archive), (err: unknown) => {
      assert.ok(err instanceof WouldBuild);
      assert.equal(err.step, 'runtime');
      assert.match(err.key, /^runtime-/);
      return true;
    });
    assert.deepEqual(probe.built, []);
    assert.deepEqual(listing(), before, 'no lock, work directory or artifact');
  });
});
