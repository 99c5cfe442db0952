/**
 * `npm run faults`: drives the real stack through every fault of the suite and prints one
 * markdown table row per case on stdout (progress on stderr). Exits 1 when a row misses the goal.
 */
import * as os from 'node:os';
import { runCleanups } from '../support/process';
import { FaultSuite, formatTable, runScenarios } from './scenarios';

async function main(): Promise<number> {
  const started = Date.now();
  try {
    const suite = await FaultSuite.start((line) => console.error(line));
    const rows = await runScenarios(suite);
    const cpus = os.cpus();
    process.stdout.write(
      `Fault suite, ${new Date().toISOString().slice(0, 16).replace('T', ' ')} UTC, ${os.hostname()}: ${cpus.length} × ${cpus[0]?.model.trim() ?? 'CPU'}, ` +
        `${Math.round(os.totalmem() / 2 ** 30)} GiB RAM, load ${os.loadavg()[0]!.toFixed(1)}; ${((Date.now() - started) / 1000).toFixed(0)} s in all.\n\n` +
        formatTable(rows),
    );
    return rows.every((r) => !r.problems.length) ? 0 : 1;
  } finally {
    await runCleanups();
  }
}

main().then(
  (code) => process.exit(code),
  (err: unknown) => {
    console.error(err);
    void runCleanups().finally(() => process.exit(2));
  },
);
