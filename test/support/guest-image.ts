import { execFile } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { promisify } from 'node:util';
import { stringify } from 'yaml';
import { loadConfig } from '../../src/config';
import type { BootCheck } from '../../src/vm';
import { LocalHost } from '../../src/host';
import { StepRunner } from '../../src/pipeline/context';
import { Pipeline, verifyEnvironment } from '../../src/pipeline/pipeline';
import { requireTool } from '../../src/setup/tools';
import { projectRoot } from '../../src/util/paths';
import { sharedTempDir } from './process';

/** A language's image as the pipeline built it, with what its verify step ran and recorded. */
export interface GuestImage {
  language: string;
  /** The published image in the build's workspace. */
  image: string;
  sha256: string;
  checks: BootCheck[];
  /** The checks' whole environment, as the verify step passes it. */
  env: string[];
  /** The first lines the verify step recorded in the chroot. */
  versions: string[];
}

let operator: Promise<string> | undefined;

/**
 * The reference operator built from guest/ as `npm run setup` builds it, into a temp dir, once per
 * test run: the images the boot tests build carry the operator of this checkout (its /exec),
 * whatever the installed tool is.
 */
export function checkoutOperator(): Promise<string> {
  operator ??= (async () => {
    const out = path.join(sharedTempDir('operator'), 'infra.operator');
    await promisify(execFile)('go', ['build', '-trimpath', '-ldflags', '-s -w -X main.version=test', '-o', out, '.'], {
      cwd: path.join(projectRoot(), 'guest'),
      env: { ...process.env, CGO_ENABLED: '0', GOOS: 'linux', GOARCH: 'amd64', GOFLAGS: '-buildvcs=false' },
    });
    return out;
  })();
  return operator;
}

let fetcher: Promise<string> | undefined;

/** The block store's static fetcher built from fetcher/ as setup builds it, once per test run. */
export function checkoutFetcher(): Promise<string> {
  fetcher ??= (async () => {
    const out = path.join(sharedTempDir('fetcher'), 'rootfs-fetch');
    await promisify(execFile)('go', ['build', '-trimpath', '-ldflags', '-s -w', '-o', out, '.'], {
      cwd: path.join(projectRoot(), 'fetcher'),
      env: { ...process.env, CGO_ENABLED: '0', GOFLAGS: '-buildvcs=false' },
    });
    return out;
  })();
  return fetcher;
}

/** Runs the pipeline's steps for `language` in order, as a build does (without Temporal). */
export async function buildImage(pipeline: Pipeline, language: string) {
  const { operatorSha256 } = await pipeline.prepare(language);
  const base = await pipeline.base();
  const runtime = await pipeline.runtime(language, base.key);
  const op = await pipeline.operator(language, runtime.key, operatorSha256);
  const verify = await pipeline.verify(language, op.key);
  const image = await pipeline.image(language, verify.key, op.key);
  return { image, verify };
}

let bash: Promise<GuestImage> | undefined;

/** The bash image, built once per test run by the pipeline's steps from an empty workspace (1–2 min). */
export function bashGuestImage(): Promise<GuestImage> {
  bash ??= (async () => {
    const dir = sharedTempDir('guest-image');
    const file = path.join(dir, 'rootfs.yaml');
    fs.writeFileSync(file, stringify({ workspace: path.join(dir, 'workspace') }));
    const { config } = loadConfig({ file, env: {} });
    const operatorPath = await checkoutOperator();
    const pipeline = new Pipeline(new StepRunner(new LocalHost()), {
      config,
      operatorPath,
      keyringPath: requireTool('ubuntuKeyring'),
    });
    const language = 'bash';
    const { image, verify } = await buildImage(pipeline, language);
    const spec = config.languages[language]!;
    return {
      language,
      image: image.data.path,
      sha256: image.data.sha256,
      checks: spec.verify,
      env: verifyEnvironment(spec),
      versions: verify.data.versions,
    };
  })();
  return bash;
}
