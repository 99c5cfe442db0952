import * as crypto from 'node:crypto';
import { Base, Image, Language, S3, type LanguageSpec, type S3Config } from '../../src/config/schema';
import { stepKey } from '../../src/pipeline/keys';
import {
  baseKeyInput,
  imageKeyInput,
  operatorKeyInput,
  runtimeKeyInput,
  runtimeUsesArchive,
  uploadKeyInput,
  verifyKeyInput,
  type ArchiveSnapshot,
  type BaseSettings,
} from '../../src/pipeline/step-keys';

/** Inputs whose keys are pinned (step-keys.test.ts) and which the pipeline test builds (explain.test.ts). */

export const KEYRING_CONTENT = 'test keyring\n';
export const OPERATOR_CONTENT = 'test operator\n';
export const sha256 = (data: string | Buffer): string => crypto.createHash('sha256').update(data).digest('hex');

const hex = (c: string) => c.repeat(64);

export const FIRST = {
  base: Base.parse({ mirror: 'http://archive.example.internal/ubuntu/' }),
  /** The mirror as the pipeline uses it: without the trailing slash. */
  mirror: 'http://archive.example.internal/ubuntu',
  archive: { jammy: hex('1'), 'jammy-updates': hex('2') } as ArchiveSnapshot,
  image: Image.parse({}),
  s3: S3.parse({}),
  languages: {
    python: Language.parse({
      runtime: [
        { kind: 'apt', packages: ['python3'], links: [{ path: '/usr/local/bin/python', target: '/usr/bin/python3' }] },
      ],
      packages: ['python3-venv'],
      files: [{ path: '/etc/pip.conf', content: '[global]\nno-cache-dir = true\n' }],
      environment: { PYTHONDONTWRITEBYTECODE: '1' },
      verify: [{ argv: ['python3', '--version'], expect: '^Python 3\\.' }],
    }),
    go: Language.parse({
      runtime: [
        {
          kind: 'archive',
          url: 'https://dl.example.internal/go1.22.5.linux-amd64.tar.gz',
          sha256: hex('3'),
          dest: '/usr/local/go',
        },
      ],
      environment: { GOPATH: '/root/go' },
      path: ['/usr/local/go/bin'],
      verify: [{ argv: ['go', 'version'], expect: '^go version go1\\.22' }],
    }),
  } as Record<string, LanguageSpec>,
};

export const SECOND = {
  base: Base.parse({
    mirror: 'http://archive.example.internal/ubuntu',
    packages: ['ca-certificates'],
    pockets: ['updates', 'security'],
  }),
  mirror: 'http://archive.example.internal/ubuntu',
  archive: { jammy: hex('1'), 'jammy-updates': hex('2'), 'jammy-security': hex('4') } as ArchiveSnapshot,
  image: Image.parse({ sizeMiB: 2048 }),
  s3: S3.parse({ bucket: 'images-test', region: 'eu-west-1', endpoint: 'http://127.0.0.1:9999' }),
  languages: { bash: Language.parse({ verify: [{ argv: ['bash', '--version'], expect: '^GNU bash' }] }) } as Record<
    string,
    LanguageSpec
  >,
};

/**
 * Keys computed by the code before the key inputs moved to src/pipeline/step-keys.ts (main at
 * 36476d3: Pipeline.base/runtime/operator/verify/image/customize run on these inputs with a store
 * whose `ensure` recorded the key, and the upload key as activities/index.ts made it). Computed
 * once and written here by hand: artifacts already built must keep their keys, so these change only
 * with a RECIPE bump. Changed on purpose once since: RECIPE.operator, .customize and .image went to 2
 * (trees settled and images made reproducibly, issue 11 §3), so the operator keys and all after them
 * changed; base and runtime keys did not. Then RECIPE.runtime went to 3 (the runtime step clamps its
 * tree's times, so that the operator step can link it instead of copying it, issue 12): the runtime
 * keys and all after them changed; base keys did not.
 */
export const PINNED = {
  first: {
    base: 'base-3a1147f0dae1e102b0903aee986d0624',
    python: {
      runtime: 'runtime-af66e0ef0be02115633c4ffe24ebf3b5',
      operator: 'operator-1da9af0e9acdd4097ccf8f1eaff5b444',
      verify: 'verify-9f82c1321ab94725f71c8e765401c56a',
      image: 'image-8d9cfacd736486a2f58ec4a51931d1cb',
      upload: 'upload-0a5681d0bf1d8fc70ebf3c1f776c88b0',
    },
    go: {
      runtime: 'runtime-3e65d2dc88b2146425191170c1121ada',
      operator: 'operator-8633671cf742ef028f89d7b41c77b89e',
      verify: 'verify-01d1ec237229127e4b5f24f6ddb6f0f3',
      image: 'image-71ffd6d246a9fd23a88f8560867a1b95',
      upload: 'upload-ef1fa2fa57bf606e860eec9681ce15a4',
    },
    /** `customize python -- sh -c 'echo hi'` on the python tree (operator-1da9…). */
    customize: 'customize-f74d2c7c2d261846021351f92312d2c3',
  },
  second: {
    base: 'base-68b520f219bff1d0b1c8a74795d76b90',
    bash: {
      runtime: 'runtime-e6bedb0c74811c9ae208a6060299b1be',
      operator: 'operator-b5945cfed5e47efe31441ece94f055fc',
      verify: 'verify-60cb3d2c8f36619917876e4281f6d63d',
      image: 'image-b995be6e8de09db69ea54a75c37d92bf',
      upload: 'upload-cc041228f59d5fade8ded41800c38fbe',
    },
  },
};

/** Everything one language's keys depend on. */
export interface KeyFacts {
  base: BaseSettings;
  mirror: string;
  archive: ArchiveSnapshot;
  keyringSha256: string;
  language: string;
  spec: LanguageSpec;
  operatorSha256: string;
  image: { sizeMiB?: number; headroomMiB: number };
  s3: S3Config;
}

export type ChainKeys = Record<'base' | 'runtime' | 'operator' | 'verify' | 'image' | 'upload', string>;

/** The keys of one language's build, chained as the workflow chains its steps. */
export function chainKeys(f: KeyFacts): ChainKeys {
  const base = stepKey('base', null, baseKeyInput(f));
  const runtime = stepKey(
    'runtime',
    base,
    runtimeKeyInput({ spec: f.spec, archive: runtimeUsesArchive(f.spec) ? f.archive : null }),
  );
  const operator = stepKey('operator', runtime, operatorKeyInput(f));
  const verify = stepKey('verify', operator, verifyKeyInput(f));
  const image = stepKey(
    'image',
    verify,
    imageKeyInput({ language: f.language, image: f.image, operatorKey: operator }),
  );
  const upload = stepKey('upload', image, uploadKeyInput(f));
  return { base, runtime, operator, verify, image, upload };
}

export function factsOf(settings: typeof FIRST | typeof SECOND, language: string): KeyFacts {
  return {
    base: settings.base,
    mirror: settings.mirror,
    archive: settings.archive,
    keyringSha256: sha256(KEYRING_CONTENT),
    language,
    spec: settings.languages[language]!,
    operatorSha256: sha256(OPERATOR_CONTENT),
    image: settings.image,
    s3: settings.s3,
  };
}
