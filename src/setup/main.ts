#!/usr/bin/env node
/**
 * `npm run setup`: installs what the pipeline and its tests need on this machine. Idempotent:
 * a part whose result is already in place is skipped. Prints each part's outcome and time;
 * exits 1 when any part failed, after trying the others.
 */
import { ConfigError, loadConfig } from '../config';
import {
  aptPackages,
  minio,
  referenceOperator,
  blockFetcher,
  s5cmd,
  temporalCli,
  ubuntuKeyring,
  type Outcome,
  type SetupContext,
} from './parts';

async function main(): Promise<number> {
  let ctx: SetupContext;
  try {
    const { config } = loadConfig();
    ctx = { mirror: config.base.mirror, suite: config.base.suite, log: (line) => console.log(`    ${line}`) };
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      return 2;
    }
    throw err;
  }
  const parts: Array<[string, () => Promise<Outcome>]> = [
    ['apt packages', () => aptPackages(ctx)],
    ['Temporal CLI', () => temporalCli(ctx)],
    ['MinIO (S3 server)', () => minio(ctx)],
    ['s5cmd (bench/transfer)', () => s5cmd(ctx)],
    ['Ubuntu archive keyring', () => ubuntuKeyring(ctx)],
    ['reference guest operator', () => referenceOperator()],
    ['block store fetcher', () => blockFetcher()],
  ];
  let failed = 0;
  const started = Date.now();
  for (const [name, run] of parts) {
    const t0 = Date.now();
    console.log(`• ${name}`);
    try {
      const { done } = await run();
      console.log(`  ok   ${name}: ${done} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    } catch (err) {
      failed++;
      console.log(`  FAIL ${name}: ${(err as Error).message} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
    }
  }
  const total = ((Date.now() - started) / 1000).toFixed(1);
  console.log(failed ? `setup: ${failed} part(s) failed after ${total} s` : `setup: done in ${total} s`);
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err);
    process.exit(1);
  },
);
