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
 * changed; base and runtime keys did not.
 */
export const PINNED = {
  first: {
    base: 'base-3a1147f0dae1e102b0903aee986d0624',
    python: {
      runtime: 'runtime-59b22850ef4c82341af2a14080e17120',
      operator: 'operator-2a4e4a1776ac5103b65a518bdded4048',
      verify: 'verify-bf8276e7b646fcf73731c40da8e3f15e',
      image: 'image-6497a48302e2e2812ec3c33402f35c90',
      upload: 'upload-bc7b5313ad7ad99a6f1ceb2a2418c811',
    },
    go: {
      runtime: 'runtime-2442aa7d7b47b36607a592b7941ad65e',
      operator: 'operator-cd40ceec360d1ac4a78d4489d8ae3ec7',
      verify: 'verify-4ac8fe59ca3269a71d1f0034d5ef9cad',
      image: 'image-02add27630f9fcca6a51a101a3c84e68',
      upload: 'upload-0a06767e973973d5ce88dc31e7dd1837',
    },
    /** `customize python -- sh -c 'echo hi'` on the python tree (operator-2a4e…). */
    customize: 'customize-282e201b7f39ec208000b8dfb21703c2',
  },
  second: {
    base: 'base-68b520f219bff1d0b1c8a74795d76b90',
    bash: {
      runtime: 'runtime-a36d7bf0816a6681003c38d87b33e750',
      operator: 'operator-6d6535059bf3f0fce3fecdca9d1c6f53',
      verify: 'verify-c35a2bd722c088ad983e0f3a08f1595c',
      image: 'image-74522454a1d12791adcb53945a0864d5',
      upload: 'upload-d0575d00df8992a7f328d05fced9faed',
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
