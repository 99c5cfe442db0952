import * as fs from 'node:fs';
import * as path from 'node:path';
import { isMap, LineCounter, parseDocument, type Document } from 'yaml';
import { z } from 'zod';
import { PROFILES } from './profiles';
import { Config } from './schema';

/** Bad configuration: every problem, each with its path in the file (and line when known). */
export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

export interface LoadedConfig {
  config: Config;
  /** The YAML file read, if any. */
  file?: string;
  /** Relative paths in the config (operator binary, keys) resolve against this directory. */
  baseDir: string;
}

export interface LoadOptions {
  /** Config file; default `$ROOTFS_CONFIG`, else `rootfs.yaml` in `cwd` when it exists. */
  file?: string;
  env?: NodeJS.ProcessEnv;
  cwd?: string;
  /** Build on the SSH host of this name in `sshHosts` instead of `buildHost` (`--ssh NAME`). */
  sshHost?: string;
}

type Raw = Record<string, unknown>;

const isPlainObject = (v: unknown): v is Raw => typeof v === 'object' && v !== null && !Array.isArray(v);

/**
 * Environment overrides. `S3_*` and `TEMPORAL_ADDRESS`/`TEMPORAL_NAMESPACE` win over the file; the AWS SDK's own `AWS_REGION` and endpoint
 * variables fill in only what the file leaves unset. Credentials are never read here: the SDK
 * takes them from its usual chain, so they never enter a config object.
 */
function applyEnv(raw: Raw, env: NodeJS.ProcessEnv): void {
  const s3: Raw = isPlainObject(raw.s3) ? { ...raw.s3 } : {};
  if (env.S3_BUCKET) s3.bucket = env.S3_BUCKET;
  if (env.S3_REGION) s3.region = env.S3_REGION;
  else if (s3.region === undefined && (env.AWS_REGION || env.AWS_DEFAULT_REGION))
    s3.region = env.AWS_REGION || env.AWS_DEFAULT_REGION;
  if (env.S3_ENDPOINT) s3.endpoint = env.S3_ENDPOINT;
  else if (s3.endpoint === undefined && (env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL)) {
    s3.endpoint = env.AWS_ENDPOINT_URL_S3 || env.AWS_ENDPOINT_URL;
  }
  if (Object.keys(s3).length) raw.s3 = s3;
  // TEMPORAL_ADDRESS / TEMPORAL_NAMESPACE, as the Temporal CLI reads them.
  const temporal: Raw = isPlainObject(raw.temporal) ? { ...raw.temporal } : {};
  if (env.TEMPORAL_ADDRESS) temporal.address = env.TEMPORAL_ADDRESS;
  if (env.TEMPORAL_NAMESPACE) temporal.namespace = env.TEMPORAL_NAMESPACE;
  if (Object.keys(temporal).length) raw.temporal = temporal;
}

/** Lays the file's `languages:` over the profile's: an entry's fields replace the profile's, `null` drops it. */
function mergeLanguages(raw: Raw): void {
  const profile = raw.profile === undefined ? 'default' : raw.profile;
  if (profile !== 'default' && profile !== 'upstream') return; // the schema reports it
  const merged: Raw = { ...PROFILES[profile] };
  if (raw.languages !== undefined && !isPlainObject(raw.languages)) return; // the schema reports it
  for (const [name, entry] of Object.entries((raw.languages as Raw | undefined) ?? {})) {
    if (entry === null) delete merged[name];
    else if (isPlainObject(entry) && isPlainObject(merged[name])) merged[name] = { ...(merged[name] as Raw), ...entry };
    else merged[name] = entry;
  }
  raw.languages = merged;
}

function lineOf(doc: Document | undefined, lines: LineCounter, at: PropertyKey[]): number | undefined {
  if (!doc) return undefined;
  // Walk up from the exact path until a node the user wrote is found.
  for (let n = at.length; n > 0; n--) {
    const node = doc.getIn(at.slice(0, n) as unknown[], true) as { range?: [number, number, number] } | undefined;
    if (node && typeof node === 'object' && node.range) return lines.linePos(node.range[0]).line;
  }
  return undefined;
}

/** `languages.go.runtime.0` for plain keys; a hostile key is shown quoted so it reads unambiguously. */
function pathText(at: PropertyKey[]): string {
  if (!at.length) return '(top level)';
  return at
    .map((k, i) => {
      const s = String(k);
      if (/^[A-Za-z0-9_-]+$/.test(s)) return i ? `.${s}` : s;
      return `[${JSON.stringify(s)}]`;
    })
    .join('');
}

function formatIssues(
  issues: z.core.$ZodIssue[],
  file: string | undefined,
  doc: Document | undefined,
  lines: LineCounter,
): string[] {
  return issues
    .map((issue) => {
      // A bad record key carries the key's own problem one level down.
      const message = issue.code === 'invalid_key' ? (issue.issues[0]?.message ?? issue.message) : issue.message;
      const line = lineOf(doc, lines, issue.path);
      const where = file ? `${path.basename(file)}${line ? `:${line}` : ''}: ` : '';
      return { line: line ?? 0, text: `${where}${pathText(issue.path)}: ${message}` };
    })
    .sort((a, b) => a.line - b.line) // in file order, as a person reads the file
    .map((p) => p.text);
}

export function loadConfig(opts: LoadOptions = {}): LoadedConfig {
  const env = opts.env ?? process.env;
  const cwd = opts.cwd ?? process.cwd();
  let file = opts.file ?? env.ROOTFS_CONFIG;
  if (!file && fs.existsSync(path.join(cwd, 'rootfs.yaml'))) file = 'rootfs.yaml';
  if (file) file = path.resolve(cwd, file);

  const lines = new LineCounter();
  let doc: Document | undefined;
  let raw: Raw = {};
  if (file) {
    let text: string;
    try {
      text = fs.readFileSync(file, 'utf8');
    } catch (err) {
      throw new ConfigError([
        `${file}: cannot read the config file (${(err as NodeJS.ErrnoException).code ?? String(err)})`,
      ]);
    }
    doc = parseDocument(text, { lineCounter: lines, prettyErrors: true, uniqueKeys: true });
    if (doc.errors.length) {
      throw new ConfigError(
        doc.errors.map((e) => `${path.basename(file!)}:${e.linePos?.[0]?.line ?? '?'}: ${e.message.split('\n')[0]}`),
      );
    }
    if (doc.contents !== null && !isMap(doc.contents))
      throw new ConfigError([`${path.basename(file)}: the top level must be a mapping`]);
    try {
      raw = (doc.toJS() as Raw | null) ?? {};
    } catch (err) {
      // e.g. an alias bomb: the yaml library refuses to expand excessive aliases.
      throw new ConfigError([`${path.basename(file)}: ${(err as Error).message.split('\n')[0]}`]);
    }
  }
  applyEnv(raw, env);
  mergeLanguages(raw);
  const parsed = Config.safeParse(raw);
  if (!parsed.success) throw new ConfigError(formatIssues(parsed.error.issues, file, doc, lines));
  const config = parsed.data;
  if (opts.sshHost !== undefined) {
    const target = config.sshHosts[opts.sshHost];
    if (!target) {
      const named = Object.keys(config.sshHosts);
      throw new ConfigError([
        `--ssh ${JSON.stringify(opts.sshHost).slice(0, 40)}: no such SSH host in sshHosts (${named.length ? `configured: ${named.join(', ')}` : 'none configured'})`,
      ]);
    }
    config.buildHost = { kind: 'ssh', alias: opts.sshHost, ...target };
  }
  return { config, file, baseDir: file ? path.dirname(file) : cwd };
}

/** Resolves a path from the config (operator binary, SSH key) against the config's directory. */
export function resolveConfigPath(loaded: LoadedConfig, p: string): string {
  return path.resolve(loaded.baseDir, p);
}
