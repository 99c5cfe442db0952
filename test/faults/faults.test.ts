import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { projectRoot } from '../../src/util/paths';
import { FaultSuite, formatTable, rememberBashImage, SCENARIOS, type Row } from './scenarios';

/**
 * The fault suite as a CI test: one test per scenario, each asserting the goal (success after
 * resume or a clear error, 0 finished steps redone, 0 corrupt or partial objects, nothing left
 * behind). The table of the run is printed at the end and kept in test-artifacts/faults.md.
 */
describe('fault suite @real @heavy', function () {
  this.timeout(15 * 60 * 1000);
  let suite: FaultSuite;
  const rows: Row[] = [];

  before(async () => {
    suite = await FaultSuite.start((line) => console.log(`      ${line}`));
  });

  after(() => {
    if (!rows.length) return;
    const table = formatTable(rows);
    const dir = path.join(projectRoot(), 'test-artifacts');
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, 'faults.md'), table);
    console.log(`\n${table}`);
  });

  for (const scenario of SCENARIOS) {
    it(scenario.name, async () => {
      const row = await suite.run(scenario);
      if (!suite.bashImage) await rememberBashImage(suite);
      rows.push(row);
      assert.deepEqual(row.problems, [], `${scenario.name}: ${row.outcome}`);
    });
  }
});
