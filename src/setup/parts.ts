import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { debootstrapDefaultMirror } from '../pipeline/mirror';
import { capture, passthrough } from '../util/exec';
import { projectRoot, toolsDir } from '../util/paths';
import { PINNED, toolPaths } from './tools';

/** What a part did, for the summary line. */
export type Outcome = { done: string };

export interface SetupContext {
  /** Archive mirror for the keyring download: the config's `base.mirror`, else debootstrap's default. */
  mirror?: string;
  suite: string;
  log(line: string): void;
}

/** Debian packages the pipeline and its tests use. */
export const APT_PACKAGES = [
  'debootstrap', // the base tree of every image
  'mmdebstrap',
  'e2fsprogs', // mkfs.ext4 -d, e2fsck, debugfs
  'bubblewrap', // the sandbox that runs an image's programs (rootfs verify)
  'openssh-server', // the test bed's sshd
  'openssh-client', // ssh-keygen for the test bed
  'qemu-system-x86', // the boot step: every image boots in a microVM before it is published
  // The guest kernel's build (linux-source comes by `apt-get download` in the kernel step itself).
  'make',
  'gcc',
  'flex',
  'bison',
  'bc',
  'libelf-dev',
  'xz-utils',
  'zstd', // the block store's packs and indexes; the kernel build
  'curl', // the new-host bootstrap script
  'ca-certificates',
  'util-linux', // unshare for private mount namespaces
  'gpgv', // debootstrap's signature check
  'busybox-static', // a tiny chroot for the executor tests
  'file',
  'gnupg', // the tests' signed apt repository fixture
  'dpkg-dev',
  'chromium', // the Temporal Web UI browser test (driven by playwright-core)
  'awscli', // bench/transfer's and bench/seed-recipe's reference S3 client (/usr/bin/aws)
];

async function dpkgInstalled(pkg: string): Promise<boolean> {
  try {
    const { stdout } = await capture('dpkg-query', ['-W', '-f', '${Status}', pkg]);
    return stdout.trim() === 'install ok installed';
  } catch {
    return false;
  }
}

export async function aptPackages(ctx: SetupContext): Promise<Outcome> {
  const missing: string[] = [];
  for (const pkg of APT_PACKAGES) if (!(await dpkgInstalled(pkg))) missing.push(pkg);
  if (!missing.length) return { done: `all ${APT_PACKAGES.length} present` };
  if (process.getuid?.() !== 0)
    throw new Error(`missing packages ${missing.join(' ')}: run setup as root, or install them with apt-get`);
  ctx.log(`installing ${missing.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  await passthrough('apt-get', ['update', '-qq'], { env });
  await passthrough('apt-get', ['install', '-y', '-qq', '--no-install-recommends', ...missing], { env });
  return { done: `installed ${missing.join(' ')}` };
}

/** The module version a Go binary was built from (`go version -m`), or undefined. */
async function goModuleVersion(binary: string): Promise<string | undefined> {
  try {
    const { stdout } = await capture('go', ['version', '-m', binary]);
    return /^\s+mod\s+\S+\s+(\S+)/m.exec(stdout)?.[1];
  } catch {
    return undefined;
  }
}

async function goInstall(module: string, version: string, bin: string, ctx: SetupContext): Promise<void> {
  ctx.log(`go install ${module}@${version} (a few minutes the first time; cached afterwards)`);
  const gobin = path.dirname(bin);
  fs.mkdirSync(gobin, { recursive: true });
  try {
    await capture('go', ['install', `${module}@${version}`], {
      env: { ...process.env, GOBIN: gobin, CGO_ENABLED: '0' },
    });
  } catch (err) {
    throw new Error(`cannot build ${module}@${version}: ${(err as Error).message}`);
  }
}

async function whichOnPath(name: string): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? '').split(':')) {
    const p = path.join(dir, name);
    if (dir && fs.existsSync(p) && !p.startsWith(toolsDir())) return p;
  }
  return undefined;
}

async function temporalVersionMatches(binary: string): Promise<boolean> {
  const { version, reports } = PINNED.temporalCli;
  if ((await goModuleVersion(binary)) === version) return true; // a go-installed binary reports 0.0.0-DEV itself
  try {
    const { stdout } = await capture(binary, ['--version']);
    return stdout.includes(`version ${reports} `);
  } catch {
    return false;
  }
}

export async function temporalCli(ctx: SetupContext): Promise<Outcome> {
  const target = toolPaths().temporal;
  if (fs.existsSync(target) && (await temporalVersionMatches(target)))
    return { done: `${PINNED.temporalCli.version} present` };
  const onPath = await whichOnPath('temporal');
  if (onPath && (await temporalVersionMatches(onPath))) {
    fs.mkdirSync(path.dirname(target), { recursive: true });
    fs.rmSync(target, { force: true });
    fs.symlinkSync(onPath, target);
    return { done: `reusing ${onPath}` };
  }
  await goInstall(PINNED.temporalCli.module, PINNED.temporalCli.version, target, ctx);
  if (!(await temporalVersionMatches(target)))
    throw new Error(`${target} does not report ${PINNED.temporalCli.version}`);
  return { done: `built ${PINNED.temporalCli.version}` };
}

export async function minio(ctx: SetupContext): Promise<Outcome> {
  const target = toolPaths().minio;
  const { module, version } = PINNED.minio;
  if (fs.existsSync(target) && (await goModuleVersion(target)) === version) return { done: `${version} present` };
  await goInstall(module, version, target, ctx);
  return { done: `built ${version}` };
}

/**
 * s5cmd, bench/transfer's reference S3 client. `go install …@version` is refused here: it asks the
 * module proxy for the module's version list (to look for a deprecation), which the proxy denies.
 * `go mod download` fetches the pinned version alone (checked against the sum database) and it is
 * built from there, stamped with its version as its own Makefile does, so `s5cmd version` proves it.
 */
export async function s5cmd(ctx: SetupContext): Promise<Outcome> {
  const target = toolPaths().s5cmd;
  const { module, version, commit } = PINNED.s5cmd;
  const reports = `${version}-${commit}`;
  const present = async () => {
    try {
      return (await capture(target, ['version'])).stdout.trim() === reports;
    } catch {
      return false;
    }
  };
  if (fs.existsSync(target) && (await present())) return { done: `${version} present` };
  ctx.log(`go mod download ${module}@${version}, then go build (a minute the first time)`);
  const env = { ...process.env, CGO_ENABLED: '0', GOFLAGS: '-buildvcs=false' };
  try {
    const { stdout } = await capture('go', ['mod', 'download', '-json', `${module}@${version}`], { env });
    const dir = (JSON.parse(stdout) as { Dir?: string }).Dir;
    if (!dir) throw new Error(`go mod download printed no module directory: ${stdout.slice(0, 200)}`);
    fs.mkdirSync(path.dirname(target), { recursive: true });
    const stamp = `-X=${module}/version.Version=${version} -X=${module}/version.GitCommit=${commit}`;
    // The module zip carries no vendor/ tree, so its dependencies come by go.sum (-mod=mod).
    await capture('go', ['build', '-mod=mod', '-trimpath', '-ldflags', stamp, '-o', `${target}.tmp`, '.'], {
      cwd: dir,
      env,
    });
    fs.renameSync(`${target}.tmp`, target);
  } catch (err) {
    fs.rmSync(`${target}.tmp`, { force: true });
    throw new Error(`cannot build ${module}@${version}: ${(err as Error).message}`);
  }
  if (!(await present())) throw new Error(`${target} does not report ${reports}`);
  return { done: `built ${version}` };
}

export function sha256File(file: string): string {
  return crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');
}

/** Downloads `url` into the per-user cache as `name`, unless a copy with the expected sha256 is there. */
async function cachedDownload(url: string, name: string, sha256: string): Promise<string> {
  const dir = path.join(
    process.env.XDG_CACHE_HOME ?? path.join(os.homedir(), '.cache'),
    'rootfs-pipeline',
    'downloads',
  );
  fs.mkdirSync(dir, { recursive: true });
  const file = path.join(dir, name);
  if (fs.existsSync(file) && sha256File(file) === sha256) return file;
  const res = await fetch(url, { signal: AbortSignal.timeout(120_000) });
  if (!res.ok) throw new Error(`GET ${url} answered ${res.status} ${res.statusText}`);
  const body = Buffer.from(await res.arrayBuffer());
  const actual = crypto.createHash('sha256').update(body).digest('hex');
  if (actual !== sha256) throw new Error(`checksum mismatch for ${url}: expected sha256 ${sha256}, got ${actual}`);
  const tmp = `${file}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, body);
  fs.renameSync(tmp, file);
  return file;
}

export async function ubuntuKeyring(ctx: SetupContext): Promise<Outcome> {
  const target = toolPaths().ubuntuKeyring;
  const { poolPath, sha256, member } = PINNED.ubuntuKeyring;
  const readLocally = async (argv: string[], env: Record<string, string>) =>
    (await capture(argv[0]!, argv.slice(1), { env: { PATH: process.env.PATH, ...env } })).stdout;
  const mirror = ctx.mirror ?? (await debootstrapDefaultMirror(readLocally, ctx.suite));
  const deb = await cachedDownload(`${mirror.replace(/\/+$/, '')}/${poolPath}`, path.basename(poolPath), sha256);
  const extract = fs.mkdtempSync(path.join(os.tmpdir(), 'rootfs-keyring-'));
  try {
    await capture('dpkg-deb', ['-x', deb, extract]);
    fs.mkdirSync(path.dirname(target), { recursive: true });
    fs.copyFileSync(path.join(extract, member), `${target}.tmp`);
    fs.renameSync(`${target}.tmp`, target);
  } finally {
    fs.rmSync(extract, { recursive: true, force: true });
  }
  return { done: `verified sha256 ${sha256.slice(0, 12)}… and installed ${path.relative(projectRoot(), target)}` };
}

/** Builds the block store's static fetcher (fetcher/), which bootstrap scripts run on new hosts. */
export async function blockFetcher(): Promise<Outcome> {
  const target = toolPaths().blockFetcher;
  const dir = path.join(projectRoot(), 'fetcher');
  const env = { ...process.env, CGO_ENABLED: '0', GOOS: 'linux', GOARCH: 'amd64', GOFLAGS: '-buildvcs=false' };
  fs.mkdirSync(path.dirname(target), { recursive: true });
  // Its one module (zstd) from the module proxy the first time; go.sum pins its hash.
  await capture('go', ['mod', 'download'], { cwd: dir, env });
  await capture('go', ['build', '-trimpath', '-ldflags', '-s -w', '-o', `${target}.tmp`, '.'], { cwd: dir, env });
  fs.renameSync(`${target}.tmp`, target);
  return { done: `built ${path.relative(projectRoot(), target)}` };
}

/** Builds the reference guest operator (guest/) into a static x86-64 binary. */
export async function referenceOperator(): Promise<Outcome> {
  const target = toolPaths().referenceOperator;
  const guest = path.join(projectRoot(), 'guest');
  const { version } = JSON.parse(fs.readFileSync(path.join(projectRoot(), 'package.json'), 'utf8')) as {
    version: string;
  };
  fs.mkdirSync(path.dirname(target), { recursive: true });
  await capture(
    'go',
    ['build', '-trimpath', '-ldflags', `-s -w -X main.version=${version}`, '-o', `${target}.tmp`, '.'],
    {
      cwd: guest,
      env: { ...process.env, CGO_ENABLED: '0', GOOS: 'linux', GOARCH: 'amd64', GOFLAGS: '-buildvcs=false' },
    },
  );
  fs.renameSync(`${target}.tmp`, target);
  return { done: `built ${path.relative(projectRoot(), target)} (${version})` };
}
