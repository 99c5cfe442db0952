import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { historyFromJSON } from '@temporalio/common/lib/proto-utils';
import { Worker } from '@temporalio/worker';
import { projectRoot } from '../../src/util/paths';
import { workflowBundle } from '../support/temporal';

/**
 * Recorded histories of real builds (test/fixtures/histories) must replay against the current
 * workflow code without non-determinism: a workflow change that would break builds already
 * running fails here first.
 */
describe('workflow replay', function () {
  this.timeout(180_000);
  const dir = path.join(projectRoot(), 'test', 'fixtures', 'histories');
  const files = fs
    .readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort();

  it('has recorded histories of every workflow, including a resumed step', () => {
    assert.ok(
      files.some((f) => f.startsWith('createAllRootfs')),
      'a createAllRootfs history',
    );
    assert.ok(
      files.some((f) => f.startsWith('createRootfs')),
      'a createRootfs history',
    );
    assert.ok(
      files.some((f) => f.startsWith('createKernel')),
      'a createKernel history',
    );
  });

  for (const file of files) {
    it(`replays ${file}`, async () => {
      const history = historyFromJSON(JSON.parse(fs.readFileSync(path.join(dir, file), 'utf8')));
      await Worker.runReplayHistory({ workflowBundle: await workflowBundle() }, history, file);
    });
  }
});
