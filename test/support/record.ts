import * as fs from 'node:fs';
import * as path from 'node:path';
import type { WorkflowHandle } from '@temporalio/client';
import { historyToJSON } from '@temporalio/common/lib/proto-utils';
import { projectRoot } from '../../src/util/paths';

/**
 * Saves a finished workflow's history under test-artifacts/histories/. Copying one into
 * test/fixtures/histories/ makes the replay test guard every later change of workflow code
 * against it.
 */
export async function recordHistory(handle: WorkflowHandle, name: string): Promise<string> {
  const dir = path.join(projectRoot(), 'test-artifacts', 'histories');
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, `${name}.json`);
  fs.writeFileSync(file, historyToJSON(await handle.fetchHistory()));
  return file;
}
