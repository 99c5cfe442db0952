import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';

let cachedRoot: string | undefined;

/** The directory holding this project's package.json, found by walking up from the compiled file. */
export function projectRoot(): string {
  if (cachedRoot) return cachedRoot;
  let dir = __dirname;
  for (;;) {
    const pkg = path.join(dir, 'package.json');
    if (fs.existsSync(pkg)) {
      const name = (JSON.parse(fs.readFileSync(pkg, 'utf8')) as { name?: string }).name;
      if (name === 'rootfs-pipeline') return (cachedRoot = dir);
    }
    const parent = path.dirname(dir);
    if (parent === dir) throw new Error(`cannot find the rootfs-pipeline package above ${__dirname}`);
    dir = parent;
  }
}

/**
 * The CLI's local state: the embedded stack's data and the background workers' PID files and
 * logs. `<project>/.rootfs` unless ROOTFS_STATE_DIR says otherwise (tests use a temp dir).
 */
export function stateDir(): string {
  const dir = process.env.ROOTFS_STATE_DIR;
  if (dir && !path.isAbsolute(dir)) throw new Error(`ROOTFS_STATE_DIR must be an absolute path, not ${dir}`);
  return dir || path.join(projectRoot(), '.rootfs');
}

/** Where `npm run setup` puts the tools it installs; ignored by git. */
export function toolsDir(): string {
  return path.join(projectRoot(), '.tools');
}

/** This user's cache for the project (`$XDG_CACHE_HOME/rootfs-pipeline`): pinned files, staging copies. */
export function userCacheDir(): string {
  return path.join(process.env.XDG_CACHE_HOME || path.join(os.homedir(), '.cache'), 'rootfs-pipeline');
}
