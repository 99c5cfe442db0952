#!/usr/bin/env node
/**
 * A worker process for this build host: `node dist/worker/main.js [--config FILE]`.
 * Temporal's address and namespace come from the config (`temporal:`), or TEMPORAL_ADDRESS /
 * TEMPORAL_NAMESPACE. SIGTERM and SIGINT shut it down gracefully: running steps get the grace
 * period, then are cancelled, and a later worker resumes them without repeating finished steps.
 */
import { NativeConnection } from '@temporalio/worker';
import { ConfigError, loadConfig } from '../src/config';
import { runWorkers } from './index';

async function main(): Promise<number> {
  const args = process.argv.slice(2);
  const i = args.indexOf('--config');
  const configOptions = i >= 0 ? { file: args[i + 1] } : {};
  const { config } = loadConfig(configOptions);
  const address = process.env.TEMPORAL_ADDRESS ?? config.temporal.address;
  const namespace = process.env.TEMPORAL_NAMESPACE ?? config.temporal.namespace;
  const apiKey = config.temporal.apiKeyEnv ? process.env[config.temporal.apiKeyEnv] : undefined;
  const connection = await NativeConnection.connect({ address, tls: config.temporal.tls || undefined, apiKey });
  const controller = new AbortController();
  for (const sig of ['SIGTERM', 'SIGINT'] as const) {
    process.once(sig, () => {
      console.error(`worker: ${sig}, finishing running steps (then cancelling them)…`);
      controller.abort();
    });
  }
  console.error(`worker: connected to ${address} (namespace ${namespace}), build host ${config.buildHost.alias}`);
  try {
    await runWorkers({ connection, namespace, configOptions }, controller.signal);
  } finally {
    await connection.close();
  }
  return 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err instanceof ConfigError ? err.message : `worker: ${(err as Error).stack ?? err}`);
    process.exit(err instanceof ConfigError ? 2 : 1);
  },
);
