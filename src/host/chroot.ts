import { SYSTEM_PATH } from '../config/schema';
import { checkEnv, type Host, type RunOptions, type RunResult } from './types';

/**
 * Runs a command inside a tree with /proc, /sys, /dev and /dev/pts mounted. Everything happens in
 * new mount and PID namespaces: the kernel drops the mounts and kills every process of the build
 * when it ends, even when it is killed (no leftover mounts, no orphaned dpkg).
 *
 * The script is constant; the tree and the command arrive as positional parameters.
 */
const CHROOT_SCRIPT = [
  'set -e',
  'root=$1; shift',
  'mount -t proc proc "$root/proc"',
  'mount -t sysfs -o ro sysfs "$root/sys"',
  'mount --rbind /dev "$root/dev"',
  'mount --make-rslave "$root/dev"',
  'exec chroot "$root" "$@"',
].join('\n');

export const CHROOT_PATH = SYSTEM_PATH;

export function chrootArgv(root: string, argv: string[]): string[] {
  if (!root.startsWith('/') || root === '/')
    throw new Error(`chroot needs an absolute tree, not ${JSON.stringify(root)}`);
  // prettier-ignore
  return [
    'unshare', '--mount', '--propagation', 'private', '--pid', '--fork', '--kill-child',
    'sh', '-c', CHROOT_SCRIPT, 'rootfs-chroot', root, ...argv,
  ];
}

/**
 * The command sees only the environment given here (`env -i` inside the tree): nothing of the
 * worker's own environment, credentials included, reaches the image build.
 */
export function runInChroot(host: Host, root: string, argv: string[], opts: RunOptions = {}): Promise<RunResult> {
  const env = {
    PATH: CHROOT_PATH,
    DEBIAN_FRONTEND: 'noninteractive',
    LC_ALL: 'C',
    LANG: 'C',
    HOME: '/root',
    ...opts.env,
  };
  checkEnv(env);
  const inner = ['env', '-i', ...Object.entries(env).map(([k, v]) => `${k}=${v}`), ...argv];
  return host.run(chrootArgv(root, inner), { ...opts, env: undefined });
}
