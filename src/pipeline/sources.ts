import * as crypto from 'node:crypto';
import * as path from 'node:path';
import { Sha256Hex, type RuntimeSource } from '../config/schema';
import { BuildError, type StepRunner } from './context';
import { fillDirInTree, installInTree, linkInTree, writeInTree } from './tree-path';

/**
 * Installs runtime sources into a tree on the build host. Every download is checked before use:
 * `archive` and `script` against their pinned sha256, `npm` and `gomodule` by their own clients
 * (the registry's integrity field, the Go checksum database). Every write into the tree goes
 * through tree-path.ts, so links in the tree cannot lead it onto the build host.
 */

export interface SourceContext {
  runner: StepRunner;
  /** Root of the tree being built. */
  tree: string;
  /** Persistent download cache on the build host (downloads are keyed by their sha256). */
  cacheDir: string;
  /** Proxy, registry and similar settings for the download clients, from the worker's environment. */
  clientEnv: Record<string, string>;
}

/** What a source installed, for the step's record: versions and checksums, never contents. */
export type SourceRecord = Record<string, string>;

export async function sha256OnHost(runner: StepRunner, file: string): Promise<string> {
  if (!file.startsWith('/')) throw new Error(`not an absolute path: ${file}`);
  // OpenSSL uses the CPU's SHA extensions: 1.6 s for a 1.9 GiB image here, where coreutils'
  // sha256sum takes 7.3 s. sha256sum where there is no openssl. (An absolute path: no option.)
  const out = await runner
    .read(['openssl', 'dgst', '-sha256', '-r', file])
    .catch(() => runner.read(['sha256sum', '--', file]));
  const sum = out.split(/\s/)[0] ?? '';
  if (!Sha256Hex.safeParse(sum).success) throw new Error(`unexpected sha256 output for ${file}: ${out.slice(0, 100)}`);
  return sum;
}

/**
 * Downloads `url` into the cache unless a copy with the pinned sum is there. A mismatch is
 * final (non-retryable) and names the artifact, the expected and the actual sum.
 */
export async function fetchVerified(ctx: SourceContext, url: string, sha256: string): Promise<string> {
  const { runner } = ctx;
  const cached = path.posix.join(ctx.cacheDir, 'downloads', sha256);
  if (await runner.host.stat(cached)) {
    if ((await sha256OnHost(runner, cached)) === sha256) return cached;
    await runner.run(['rm', '-f', cached]);
  }
  await runner.run(['mkdir', '-p', path.posix.dirname(cached)]);
  const tmp = `${cached}.${crypto.randomBytes(4).toString('hex')}.part`;
  runner.phase(`downloading ${url}`);
  try {
    await runner.run(
      [
        'curl',
        '--fail',
        '--silent',
        '--show-error',
        '--location',
        '--retry',
        '3',
        '--connect-timeout',
        '20',
        '--output',
        tmp,
        '--',
        url,
      ],
      {
        env: ctx.clientEnv,
      },
    );
    const actual = await sha256OnHost(runner, tmp);
    if (actual !== sha256) {
      throw new BuildError(
        `checksum mismatch for ${url}: expected sha256 ${sha256}, got ${actual}`,
        'ChecksumMismatch',
      );
    }
    await runner.run(['mv', '-f', tmp, cached]);
    return cached;
  } finally {
    await runner.run(['rm', '-f', tmp]).catch(() => {});
  }
}

async function makeLinks(ctx: SourceContext, links: Array<{ path: string; target: string }>): Promise<void> {
  for (const link of links) await linkInTree(ctx.runner, ctx.tree, link.path, link.target);
}

/**
 * Packages to install with apt inside the tree, plus an optional extra signed repository. The
 * repository and its key are there for this install only: the image must not trust the vendor's
 * key or fetch from its repository later, so both are removed after it (their package lists go
 * with the step's apt cleaning).
 */
async function installApt(ctx: SourceContext, source: Extract<RuntimeSource, { kind: 'apt' }>): Promise<SourceRecord> {
  const { runner, tree } = ctx;
  const added: string[] = [];
  try {
    if (source.repository) {
      const repo = source.repository;
      const key = await fetchVerified(ctx, repo.key.url, repo.key.sha256);
      const armored = (await runner.host.readFile(key)).subarray(0, 64).toString('latin1').includes('-----BEGIN');
      const keyPath = `/etc/apt/keyrings/${repo.name}.${armored ? 'asc' : 'gpg'}`;
      added.push(await installInTree(runner, tree, keyPath, key, 0o644));
      const line = `deb [signed-by=${keyPath}] ${repo.url} ${repo.suite} ${repo.components.join(' ')}\n`;
      added.push(await writeInTree(runner, tree, `/etc/apt/sources.list.d/${repo.name}.list`, line));
    }
    runner.phase('apt-get update');
    await runner.chroot(tree, ['apt-get', 'update', '-q']);
    runner.phase(`apt-get install ${source.packages.join(' ')}`);
    await runner.chroot(tree, ['apt-get', 'install', '-y', '-q', '--no-install-recommends', ...source.packages]);
  } finally {
    if (added.length) await runner.run(['rm', '-f', '--', ...added]);
  }
  await makeLinks(ctx, source.links);
  const versions = await runner.read([
    'chroot',
    tree,
    'dpkg-query',
    '-W',
    '-f',
    '${Package}=${Version}\\n',
    ...source.packages.map((p) => p.split('=')[0]!),
  ]);
  return { apt: versions.trim().split('\n').join(' ') };
}

async function installArchive(
  ctx: SourceContext,
  source: Extract<RuntimeSource, { kind: 'archive' }>,
): Promise<SourceRecord> {
  const file = await fetchVerified(ctx, source.url, source.sha256);
  ctx.runner.phase(`unpacking into ${source.dest}`);
  await fillDirInTree(ctx.runner, ctx.tree, source.dest, (staging) =>
    ctx.runner.run([
      'tar',
      '-xf',
      file,
      '-C',
      staging,
      `--strip-components=${source.stripComponents}`,
      '--no-same-owner',
    ]),
  );
  await makeLinks(ctx, source.links);
  return { archive: `${source.url} sha256:${source.sha256}` };
}

async function installScript(
  ctx: SourceContext,
  source: Extract<RuntimeSource, { kind: 'script' }>,
): Promise<SourceRecord> {
  const file = await fetchVerified(ctx, source.url, source.sha256);
  const inside = `/tmp/rootfs-install-${source.sha256.slice(0, 16)}.sh`;
  const at = await installInTree(ctx.runner, ctx.tree, inside, file, 0o755);
  ctx.runner.phase(`running ${source.url}`);
  try {
    const env = Object.entries(source.env).map(([k, v]) => `${k}=${v}`);
    await ctx.runner.chroot(ctx.tree, ['env', ...env, 'sh', inside, ...source.args]);
  } finally {
    await ctx.runner.run(['rm', '-f', '--', at]);
  }
  await makeLinks(ctx, source.links);
  return { script: `${source.url} sha256:${source.sha256}` };
}

async function installNpm(ctx: SourceContext, source: Extract<RuntimeSource, { kind: 'npm' }>): Promise<SourceRecord> {
  const { runner } = ctx;
  const dir = path.posix.join(ctx.cacheDir, 'npm', crypto.randomBytes(4).toString('hex'));
  await runner.run(['mkdir', '-p', dir]);
  try {
    runner.phase(`npm pack ${source.package}@${source.version}`);
    // npm checks the tarball against the registry's integrity field before writing it.
    const out = await runner.read(
      ['npm', 'pack', '--json', '--pack-destination', dir, `${source.package}@${source.version}`],
      {
        env: {
          ...ctx.clientEnv,
          npm_config_cache: path.posix.join(ctx.cacheDir, 'npm-cache'),
          npm_config_update_notifier: 'false',
        },
      },
    );
    const packed = (JSON.parse(out) as Array<{ filename: string; integrity: string; version: string }>)[0];
    if (!packed || packed.version !== source.version)
      throw new Error(`npm pack ${source.package}@${source.version} returned ${out.slice(0, 200)}`);
    const tarball = path.posix.join(dir, path.posix.basename(packed.filename));
    await fillDirInTree(runner, ctx.tree, source.dest, (staging) =>
      runner.run(['tar', '-xzf', tarball, '-C', staging, '--strip-components=1', '--no-same-owner']),
    );
    await makeLinks(ctx, source.links);
    return { [`npm:${source.package}`]: `${packed.version} ${packed.integrity}` };
  } finally {
    await runner.run(['rm', '-rf', dir]);
  }
}

async function installGoModule(
  ctx: SourceContext,
  source: Extract<RuntimeSource, { kind: 'gomodule' }>,
): Promise<SourceRecord> {
  const { runner } = ctx;
  runner.phase(`go mod download ${source.module}@${source.version}`);
  // The go command verifies the module against the checksum database before extracting it.
  const out = await runner.read(['go', 'mod', 'download', '-json', `${source.module}@${source.version}`], {
    env: {
      ...ctx.clientEnv,
      GOMODCACHE: path.posix.join(ctx.cacheDir, 'gomod'),
      GOFLAGS: '-modcacherw',
      GO111MODULE: 'on',
    },
  });
  const info = JSON.parse(out) as { Dir?: string; Sum?: string; Error?: string };
  if (info.Error || !info.Dir || !info.Sum)
    throw new Error(`go mod download ${source.module}@${source.version}: ${info.Error ?? 'no Dir in output'}`);
  runner.phase(`copying ${source.module} into ${source.dest}`);
  await fillDirInTree(runner, ctx.tree, source.dest, async (staging) => {
    await runner.run(['cp', '-R', '--no-preserve=mode,ownership', `${info.Dir}/.`, staging]);
    await runner.run(['chmod', '-R', 'u=rwX,go=rX', staging]);
    for (const rel of source.executable) {
      await runner.run([
        'find',
        path.posix.join(staging, rel),
        '-maxdepth',
        '1',
        '-type',
        'f',
        '-exec',
        'chmod',
        '0755',
        '{}',
        '+',
      ]);
    }
  });
  await makeLinks(ctx, source.links);
  return { [`go:${source.module}`]: `${source.version} ${info.Sum}` };
}

export async function installSource(ctx: SourceContext, source: RuntimeSource): Promise<SourceRecord> {
  switch (source.kind) {
    case 'apt':
      return installApt(ctx, source);
    case 'archive':
      return installArchive(ctx, source);
    case 'script':
      return installScript(ctx, source);
    case 'npm':
      return installNpm(ctx, source);
    case 'gomodule':
      return installGoModule(ctx, source);
  }
}
