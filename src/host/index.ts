import { resolveConfigPath, type LoadedConfig } from '../config/load';
import type { BuildHostConfig } from '../config/schema';
import { LocalHost } from './local';
import { SshHost } from './ssh';
import type { Host } from './types';

export * from './types';
export { check, commandError, commandName, output, CommandError, OutputTail, tellingLine } from './commands';
export { chrootArgv, runInChroot, CHROOT_PATH } from './chroot';
export { inheritedEnv, LocalHost } from './local';
export {
  runInImage,
  runInSandbox,
  sandboxArgv,
  SANDBOX_UID,
  type ImageCommand,
  type ImageCommandResult,
  type ImageRun,
} from './sandbox';
export { HostKeyMismatchError, SshHost, shellQuote, sshFingerprint, type SshHostOptions } from './ssh';

/** Connects to a loaded config's build host (an SSH key path is taken relative to the config file). */
export function connectBuildHost(loaded: LoadedConfig): Promise<Host> {
  const target = loaded.config.buildHost;
  return connectHost(
    target.kind === 'ssh' ? { ...target, keyPath: resolveConfigPath(loaded, target.keyPath) } : target,
  );
}

/** The build host a config names: this machine, or one reached over SSH with a pinned host key. */
export async function connectHost(target: BuildHostConfig): Promise<Host> {
  if (target.kind === 'local') return new LocalHost();
  return SshHost.connect({
    host: target.host,
    port: target.port,
    user: target.user,
    keyPath: target.keyPath,
    hostKeySha256: target.hostKeySha256,
  });
}
