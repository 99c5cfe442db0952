#!/usr/bin/env node
/**
 * The worker entry for a build host's service manager: `node dist/worker/main.js [--config FILE]
 * [--grace SECONDS]`, the same as `rootfs worker`. Temporal's address and namespace come from the
 * config (`temporal:`) or TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE. SIGTERM and SIGINT shut it down
 * gracefully: running steps get the grace period, then are cancelled, and the next worker resumes
 * them without repeating finished steps.
 */
import { runCli } from '../src/cli/main';

runCli([process.argv[0]!, 'rootfs', 'worker', ...process.argv.slice(2)]);
