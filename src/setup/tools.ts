import * as fs from 'node:fs';
import * as path from 'node:path';
import { toolsDir } from '../util/paths';

/** Pinned versions of what `npm run setup` installs. Changing one here is the whole upgrade. */
export const PINNED = {
  temporalCli: { module: 'github.com/temporalio/cli/cmd/temporal', version: 'v1.5.1', reports: '1.5.1' },
  // MinIO publishes no module tags; this pseudo-version is the newest the module proxy serves.
  minio: { module: 'github.com/minio/minio', version: 'v0.0.0-20260212201848-7aac2a2c5b7c' },
  // bench/transfer's reference client; the commit is the tag's, stamped into `s5cmd version`.
  s5cmd: { module: 'github.com/peak/s5cmd/v2', version: 'v2.3.0', commit: '991c9fb' },
  ubuntuKeyring: {
    poolPath: 'pool/main/u/ubuntu-keyring/ubuntu-keyring_2021.03.26_all.deb',
    sha256: '0d0e7ed6b112f5d03eabf3c7eb01ebdacf9c57714b279e90495cfc58c8c4520f',
    member: 'usr/share/keyrings/ubuntu-archive-keyring.gpg',
  },
} as const;

export interface ToolPaths {
  temporal: string;
  minio: string;
  s5cmd: string;
  ubuntuKeyring: string;
  referenceOperator: string;
  /** The static block store fetcher (fetcher/) that bootstrap scripts run on new hosts. */
  blockFetcher: string;
}

/** Paths of the installed tools. A Temporal CLI on PATH is used when setup found it to be the pinned version. */
export function toolPaths(): ToolPaths {
  const dir = toolsDir();
  const temporalLink = path.join(dir, 'bin', 'temporal');
  return {
    temporal: temporalLink,
    minio: path.join(dir, 'bin', 'minio'),
    s5cmd: path.join(dir, 'bin', 's5cmd'),
    ubuntuKeyring: path.join(dir, 'share', 'ubuntu-archive-keyring.gpg'),
    referenceOperator: path.join(dir, 'bin', 'infra.operator'),
    blockFetcher: path.join(dir, 'bin', 'rootfs-fetch'),
  };
}

/** Throws a plain message naming the missing tool and the command that installs it. */
export function requireTool(name: keyof ToolPaths): string {
  const p = toolPaths()[name];
  if (!fs.existsSync(p)) throw new Error(`${name} is not installed (${p} is missing): run \`npm run setup\` first`);
  return p;
}
