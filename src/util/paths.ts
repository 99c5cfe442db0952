import * as fs from 'node:fs';
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

/** Where `npm run setup` puts the tools it installs; ignored by git. */
export function toolsDir(): string {
  return path.join(projectRoot(), '.tools');
}
