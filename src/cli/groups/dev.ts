import { loadConfig } from '../../config';
import { listBackgroundWorkers, stopBackgroundWorkers } from '../background-worker';
import { devStack } from '../runtime';
import { EXIT, type CommandContext } from './context';

/** dev …: the embedded local stack and the background workers. */
export function registerDevCommands(ctx: CommandContext): void {
  const { cli } = ctx;
  const dev = cli
    .command('dev')
    .description(
      'the embedded local stack (Temporal dev server, S3 server) and the background workers, under .rootfs/',
    );
  dev
    .command('up')
    .description('start it (or find it running)')
    .addHelpText('after', '\nExample:\n  rootfs dev up')
    .action(
      ctx.run(async () => {
        const stack = devStack();
        const { config } = loadConfig({ file: ctx.configFile() });
        const t = await stack.temporal();
        const s = await stack.s3(config.s3.bucket);
        console.log(
          `Temporal ${t.address} (Web UI ${t.uiUrl})${t.started ? ' started' : ''}\nS3 ${s.endpoint}${s.started ? ' started' : ''}`,
        );
        return EXIT.ok;
      }),
    );
  dev
    .command('down')
    .description('stop the background workers (gracefully), then the stack')
    .addHelpText('after', '\nExample:\n  rootfs dev down')
    .action(
      ctx.run(async () => {
        const note = (line: string) => console.error(line);
        const workers = (await stopBackgroundWorkers(undefined, undefined, note)).map(
          (w) => `worker ${w.alias} (pid ${w.pid})`,
        );
        console.log(`stopped: ${[...workers, ...(await devStack().down(note))].join(', ') || 'nothing'}`);
        return EXIT.ok;
      }),
    );
  dev
    .command('status')
    .description('is it running, and which background workers run')
    .addHelpText('after', '\nExample:\n  rootfs dev status')
    .action(
      ctx.run(async () => {
        const s = devStack().status();
        console.log(`temporal: ${s.temporal}\ns3: ${s.s3}`);
        for (const w of listBackgroundWorkers())
          console.log(
            `worker ${w.alias}: ${w.running ? `up (pid ${w.pid})` : 'down'}  ${w.address} ${w.namespace}  log ${w.log}`,
          );
        return EXIT.ok;
      }),
    );
}
