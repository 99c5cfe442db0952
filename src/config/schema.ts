import { z } from 'zod';

/**
 * The single source of the configuration's types. Every name that can reach a path, a command
 * or an S3 key is constrained here, so code past `loadConfig()` can trust it.
 */

/** The PATH of an Ubuntu system: what commands inside an image find when nothing else is said. */
export const SYSTEM_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export const NAME_PATTERN = /^[a-z][a-z0-9-]{0,31}$/;

/** Language names, host aliases, run tags: safe in paths, argv, S3 keys and Temporal IDs. */
export const Name = z.string().regex(NAME_PATTERN, { error: `expected a name matching ${NAME_PATTERN.source}` });

export const Sha256Hex = z.string().regex(/^[0-9a-f]{64}$/, { error: 'expected 64 hex characters' });

/** An absolute path inside an image or on the build host: no `.`/`..` segments, no odd characters. */
export const AbsolutePath = z
  .string()
  .regex(/^(\/[A-Za-z0-9._+@-]+)+\/?$|^\/$/, { error: 'expected an absolute path of plain characters' })
  .refine((p) => !p.split('/').some((s) => s === '.' || s === '..'), { error: 'must not contain . or .. segments' });

/** A path below some folder: plain segments, never `.` or `..`. */
export const RelativePath = z
  .string()
  .regex(/^[A-Za-z0-9._+@-]+(\/[A-Za-z0-9._+@-]+)*$/, { error: 'expected a relative path of plain characters' })
  .refine((p) => !p.split('/').some((s) => s === '.' || s === '..'), { error: 'must not contain . or .. segments' });

export const HttpUrl = z
  .string()
  .regex(/^https?:\/\/[^\s"'<>\\]+$/, { error: 'expected an http(s) URL' })
  .refine((u) => URL.canParse(u), { error: 'expected a valid URL' })
  // URLs end up in workflow histories and logs: a password in one would be published with them.
  .refine((u) => !URL.canParse(u) || (!new URL(u).username && !new URL(u).password), {
    error: 'must not carry credentials (user:password@); give them to the tool through its environment',
  });

export const EnvName = z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, { error: 'expected an environment variable name' });

/**
 * Values that end up in systemd `Environment=` lines and shell profiles: no quotes, backslashes,
 * `%` (a systemd specifier) or `$` (expanded by shells), so rendering never needs escaping.
 */
export const EnvValue = z.string().regex(/^[A-Za-z0-9_.,:/@+=-]*$/, {
  error: 'expected letters, digits and _ . , : / @ + = - only',
});

/** A Debian package name, optionally pinned with `=version`. */
export const DebPackage = z
  .string()
  .regex(/^[a-z0-9][a-z0-9+.-]+(=[A-Za-z0-9.+~:-]+)?$/, { error: 'expected a Debian package name' });

export const NpmPackage = z
  .string()
  .regex(/^(@[a-z0-9][a-z0-9._~-]*\/)?[a-z0-9][a-z0-9._~-]*$/, { error: 'expected an npm package name' });

export const ExactSemver = z
  .string()
  .regex(/^\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/, { error: 'expected an exact version like 1.2.3' });

export const Link = z.strictObject({ path: AbsolutePath, target: AbsolutePath });

const AptSource = z.strictObject({
  kind: z.literal('apt'),
  packages: z.array(DebPackage).min(1),
  /** An extra repository (e.g. a vendor's), added with its signing key for the install only. */
  repository: z
    .strictObject({
      name: Name,
      url: HttpUrl,
      suite: z.string().regex(/^[a-z0-9][a-z0-9.-]*$/, { error: 'expected a suite name' }),
      components: z.array(Name).min(1),
      key: z.strictObject({ url: HttpUrl, sha256: Sha256Hex }),
    })
    .optional(),
  links: z.array(Link).default([]),
});

const ArchiveSource = z.strictObject({
  kind: z.literal('archive'),
  url: HttpUrl,
  sha256: Sha256Hex,
  dest: AbsolutePath,
  stripComponents: z.int().min(0).max(8).default(1),
  links: z.array(Link).default([]),
});

const ScriptSource = z.strictObject({
  kind: z.literal('script'),
  url: HttpUrl,
  sha256: Sha256Hex,
  args: z.array(z.string().regex(/^[^\0\n]*$/, { error: 'no NUL or newline' })).default([]),
  env: z.record(EnvName, EnvValue).default({}),
  links: z.array(Link).default([]),
});

const NpmSource = z.strictObject({
  kind: z.literal('npm'),
  package: NpmPackage,
  version: ExactSemver,
  dest: AbsolutePath,
  links: z.array(Link).default([]),
});

const GoModuleSource = z.strictObject({
  kind: z.literal('gomodule'),
  module: z.string().regex(/^[a-z0-9.-]+(\/[A-Za-z0-9._~-]+)+$/, { error: 'expected a Go module path' }),
  version: z.string().regex(/^v\d+\.\d+\.\d+(-[0-9A-Za-z.-]+)?$/, { error: 'expected a Go module version' }),
  dest: AbsolutePath,
  /** Folders (relative to dest) whose files are made executable: module zips carry no modes. */
  executable: z.array(RelativePath).default([]),
  links: z.array(Link).default([]),
});

export const RuntimeSource = z.discriminatedUnion('kind', [
  AptSource,
  ArchiveSource,
  ScriptSource,
  NpmSource,
  GoModuleSource,
]);

export const VersionCheck = z.strictObject({
  argv: z.array(z.string().regex(/^[^\0]*$/)).min(1),
  /** A regular expression the command's first output line must match, e.g. `^Python 3\.10\.`. */
  expect: z.string().refine(
    (s) => {
      try {
        new RegExp(s);
        return true;
      } catch {
        return false;
      }
    },
    { error: 'expected a valid regular expression' },
  ),
});

export const ExtraFile = z.strictObject({
  path: AbsolutePath,
  content: z.string(),
  mode: z.int().min(0).max(0o7777).default(0o644),
});

export const Language = z.strictObject({
  runtime: z.array(RuntimeSource).default([]),
  /** Extra apt packages: the durable place for customization, survives rebuilds. */
  packages: z.array(DebPackage).default([]),
  files: z.array(ExtraFile).default([]),
  /** `Environment=` lines of infra.operator.service. */
  environment: z.record(EnvName, EnvValue).default({}),
  /** Directories prepended to PATH by /etc/profile.d/<lang>.sh. */
  path: z.array(AbsolutePath).default([]),
  verify: z.array(VersionCheck).min(1),
});

export const Base = z.strictObject({
  suite: Name.default('jammy'),
  variant: z.enum(['minbase']).default('minbase'),
  components: z.array(Name).min(1).default(['main', 'universe']),
  /** Extra pockets of the suite, e.g. `updates` for jammy-updates. */
  pockets: z.array(z.enum(['updates', 'security', 'backports'])).default(['updates']),
  /** Archive mirror; when absent, debootstrap's own default for the suite. */
  mirror: HttpUrl.optional(),
  /** Keyring that signs the archive; when absent, the one `npm run setup` installed. */
  keyring: z.string().min(1).optional(),
  /** Packages every image gets. systemd-sysv is always added: without an init the image cannot boot. */
  packages: z.array(DebPackage).default([]),
});

/** How to reach an SSH build host; the private key stays on the machine running the worker. */
const SshTarget = {
  host: z.string().regex(/^[A-Za-z0-9.-]+$|^\[[0-9a-fA-F:]+\]$/, { error: 'expected a host name or address' }),
  port: z.int().min(1).max(65535).default(22),
  user: z.string().regex(/^[a-z_][a-z0-9_-]{0,31}$/, { error: 'expected a user name' }),
  /** Path of the private key on the machine running the worker; the key itself never leaves it. */
  keyPath: z.string().min(1),
  /** The host key's pinned fingerprint, as `ssh-keygen -lf` prints it. */
  hostKeySha256: z.string().regex(/^SHA256:[A-Za-z0-9+/]{43}$/, { error: 'expected SHA256:<43 base64 characters>' }),
};

export const BuildHost = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('local'), alias: Name.default('local') }),
  z.strictObject({ kind: z.literal('ssh'), alias: Name, ...SshTarget }),
]);

/** Named SSH build hosts: `rootfs worker --ssh <name>` (and create/resume/customize --ssh) build there. */
export const SshHosts = z.record(Name, z.strictObject(SshTarget));

export const S3 = z
  .strictObject({
    bucket: z
      .string()
      .regex(/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/, { error: 'expected an S3 bucket name' })
      .default('llm-infra-operator-rootfs'),
    region: z
      .string()
      .regex(/^[a-z0-9-]{2,32}$/, { error: 'expected a region like us-east-1' })
      .default('us-east-1'),
    /** For S3-compatible servers; absent means AWS. */
    endpoint: HttpUrl.optional(),
    forcePathStyle: z.boolean().default(false),
    /**
     * Also write the plain objects of the seed's layout (`rootfs-<lang>.ext4`, `vmlinux`, their
     * manifests) beside the block store, for `aws s3 cp`/`sync` and older hosts (default true).
     */
    plainObjects: z.boolean().optional(),
    /** Publish to and sync from the block store (docs/block-store.md); default true. */
    blockStore: z.boolean().optional(),
    /** Versions the block store keeps per image, the current one included (default 5). */
    keepVersions: z.int().min(1).max(100).optional(),
    /** Earlier versions a host keeps beside each image, so a rollback to them fetches nothing (default 1). */
    keepLocalVersions: z.int().min(0).max(10).optional(),
  })
  .refine((s) => s.plainObjects !== false || s.blockStore !== false, {
    error: 's3.plainObjects and s3.blockStore cannot both be false: nothing would be published',
  });

export const Image = z.strictObject({
  /** Fixed image size in MiB (the seed's images were fixed-size); absent means sized from content. */
  sizeMiB: z.int().min(64).max(65536).optional(),
  /** Free space left in a content-sized image. */
  headroomMiB: z.int().min(0).max(65536).default(512),
});

/**
 * The guest kernel: Debian's kernel source package (as the build host's apt knows it, so its
 * signature is checked) at an exact version, configured from `allnoconfig` plus a fragment.
 */
export const Kernel = z.strictObject({
  package: z.string().regex(/^linux-source-\d+\.\d+$/, { error: 'expected a package like linux-source-6.1' }),
  version: z.string().regex(/^[0-9][A-Za-z0-9.+~:-]{0,63}$/, { error: 'expected a Debian version like 6.1.192-2' }),
  /** Kconfig fragment file; absent means the microVM fragment kept in this repository. */
  fragment: z.string().min(1).optional(),
});

/** The microVM every image boots in before it is published (the boot step, `rootfs boot`). */
export const Boot = z.strictObject({
  /** `auto`: KVM when /dev/kvm answers, else TCG (emulation: slower, but it boots anywhere). */
  accelerator: z.enum(['auto', 'kvm', 'tcg']).default('auto'),
  memoryMiB: z.int().min(128).max(65536).default(1024),
  vcpus: z.int().min(1).max(32).default(2),
  /** How long the guest may take to answer GET /health. */
  timeoutSeconds: z.int().min(10).max(3600).default(180),
});

export const DEFAULT_KERNEL = { package: 'linux-source-6.1', version: '6.1.192-2' } as const;

export const Temporal = z.strictObject({
  address: z
    .string()
    .regex(/^[A-Za-z0-9.-]+:\d{1,5}$/, { error: 'expected host:port' })
    .default('127.0.0.1:7233'),
  namespace: z
    .string()
    .regex(/^[A-Za-z0-9._-]{1,255}$/, { error: 'expected a namespace name' })
    .default('default'),
  /** Name of the environment variable that holds an API key; the key itself is never in config. */
  apiKeyEnv: EnvName.optional(),
  tls: z.boolean().default(false),
});

export const DEFAULT_OPERATOR_PATH = './infra.operator-linux';

export const Config = z.strictObject({
  profile: z.enum(['default', 'upstream']).default('default'),
  base: Base.default(Base.parse({})),
  languages: z.record(
    Name.refine((n) => n !== 'kernel', {
      error: "kernel is the guest kernel's name in a build: give the language another",
    }),
    Language,
  ),
  buildHost: BuildHost.default({ kind: 'local', alias: 'local' }),
  sshHosts: SshHosts.default({}),
  workspace: AbsolutePath.default('/srv/firecracker'),
  s3: S3.default(S3.parse({})),
  image: Image.default(Image.parse({})),
  kernel: Kernel.default(Kernel.parse(DEFAULT_KERNEL)),
  boot: Boot.default(Boot.parse({})),
  /** The guest operator binary; the default falls back to the reference operator when absent. */
  operator: z
    .strictObject({ path: z.string().min(1).default(DEFAULT_OPERATOR_PATH) })
    .default({ path: DEFAULT_OPERATOR_PATH }),
  temporal: Temporal.default(Temporal.parse({})),
});

export type Config = z.infer<typeof Config>;
export type ConfigInput = z.input<typeof Config>;
export type LanguageSpec = z.infer<typeof Language>;
export type LanguageInput = z.input<typeof Language>;
export type RuntimeSource = z.infer<typeof RuntimeSource>;
export type BaseSpec = z.infer<typeof Base>;
export type BuildHostConfig = z.infer<typeof BuildHost>;
export type S3Config = z.infer<typeof S3>;
export type KernelConfig = z.infer<typeof Kernel>;
export type BootConfig = z.infer<typeof Boot>;
export type TemporalConfig = z.infer<typeof Temporal>;
