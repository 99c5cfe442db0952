import { strict as assert } from 'node:assert';
import { keyInputChanges } from '../../src/pipeline/key-diff';
import { stepKey } from '../../src/pipeline/keys';
import {
  customizeKeyInput,
  keyRecord,
  KeyRecord,
  operatorKeyInput,
  runtimeKeyInput,
  verifyKeyInput,
} from '../../src/pipeline/step-keys';
import { chainKeys, factsOf, FIRST, PINNED, SECOND, sha256, type ChainKeys, type KeyFacts } from './key-fixtures';

const STEPS = ['base', 'runtime', 'operator', 'verify', 'image', 'upload'] as const;

describe('step key inputs', () => {
  it('give the keys the pipeline computed before they were pure functions', () => {
    assert.deepEqual(chainKeys(factsOf(FIRST, 'python')), { base: PINNED.first.base, ...PINNED.first.python });
    assert.deepEqual(chainKeys(factsOf(FIRST, 'go')), { base: PINNED.first.base, ...PINNED.first.go });
    assert.deepEqual(chainKeys(factsOf(SECOND, 'bash')), { base: PINNED.second.base, ...PINNED.second.bash });
    const customize = customizeKeyInput({ argv: ['sh', '-c', 'echo hi'] });
    assert.equal(stepKey('customize', PINNED.first.python.operator, customize), PINNED.first.customize);
  });

  const FROM_RUNTIME: Array<(typeof STEPS)[number]> = ['runtime', 'operator', 'verify', 'image', 'upload'];
  const FROM_OPERATOR: Array<(typeof STEPS)[number]> = ['operator', 'verify', 'image', 'upload'];

  /** Each row: a change, and the steps whose keys it changes (the steps a build runs again); no other. */
  const rows: Array<{ change: string; apply: (f: KeyFacts) => void; reruns: Array<(typeof STEPS)[number]> }> = [
    { change: "a language's packages", apply: (f) => f.spec.packages.push('python3-pip'), reruns: FROM_RUNTIME },
    { change: "a language's files", apply: (f) => (f.spec.files[0]!.content = 'x\n'), reruns: FROM_RUNTIME },
    {
      change: "a language's runtime source",
      apply: (f) =>
        f.spec.runtime.push({ kind: 'npm', package: 'left-pad', version: '1.3.0', dest: '/opt/left-pad', links: [] }),
      reruns: FROM_RUNTIME,
    },
    { change: 'base.packages', apply: (f) => f.base.packages.push('curl'), reruns: [...STEPS] },
    { change: 'base.components', apply: (f) => (f.base.components = ['main']), reruns: [...STEPS] },
    { change: 'the mirror', apply: (f) => (f.mirror = 'http://other.example.internal/ubuntu'), reruns: [...STEPS] },
    {
      change: 'the archive state (a new jammy-updates)',
      apply: (f) => (f.archive['jammy-updates'] = '5'.repeat(64)),
      reruns: [...STEPS],
    },
    { change: 'the archive keyring', apply: (f) => (f.keyringSha256 = sha256('another keyring')), reruns: [...STEPS] },
    { change: "a language's environment", apply: (f) => (f.spec.environment.LANG = 'C.UTF-8'), reruns: FROM_OPERATOR },
    { change: "a language's path", apply: (f) => f.spec.path.push('/opt/bin'), reruns: FROM_OPERATOR },
    { change: 'the language name (same spec)', apply: (f) => (f.language = 'python3'), reruns: FROM_OPERATOR },
    {
      change: "the operator binary's sha256",
      apply: (f) => (f.operatorSha256 = sha256('another operator')),
      reruns: FROM_OPERATOR,
    },
    {
      change: "a language's verify",
      apply: (f) => (f.spec.verify[0]!.expect = '^Python 3\\.10'),
      reruns: ['verify', 'image', 'upload'],
    },
    { change: 'image.headroomMiB', apply: (f) => (f.image.headroomMiB = 1024), reruns: ['image', 'upload'] },
    { change: 'image.sizeMiB', apply: (f) => (f.image.sizeMiB = 4096), reruns: ['image', 'upload'] },
    { change: 's3.bucket', apply: (f) => (f.s3.bucket = 'another-bucket'), reruns: ['upload'] },
    { change: 's3.region', apply: (f) => (f.s3.region = 'eu-central-1'), reruns: ['upload'] },
    { change: 's3.endpoint', apply: (f) => (f.s3.endpoint = 'http://127.0.0.1:9000'), reruns: ['upload'] },
    { change: 's3.forcePathStyle', apply: (f) => (f.s3.forcePathStyle = true), reruns: [] },
    {
      change: "the order of an object's keys",
      apply: (f) => (f.archive = Object.fromEntries(Object.entries(f.archive).reverse())),
      reruns: [],
    },
  ];

  const changed = (before: ChainKeys, after: ChainKeys) => STEPS.filter((s) => before[s] !== after[s]);

  for (const { change, apply, reruns } of rows) {
    const what =
      reruns.length === 0 ? 'nothing' : `${reruns.join(', ')} and only ${reruns.length === 1 ? 'that' : 'those'}`;
    it(`changing ${change} re-runs ${what}`, () => {
      const facts = factsOf(FIRST, 'python');
      const before = chainKeys(facts);
      const edited = structuredClone(facts);
      apply(edited);
      assert.deepEqual(changed(before, chainKeys(edited)), reruns);
    });
  }

  it('another language of the build changes nothing in this one', () => {
    const facts = factsOf(FIRST, 'python');
    const other = structuredClone(FIRST);
    other.languages.go!.packages.push('git');
    assert.deepEqual(chainKeys(factsOf(other, 'python')), chainKeys(facts));
  });

  it("the archive's state is part of a runtime's input only when it installs from the archive", () => {
    const go = FIRST.languages.go!;
    const python = FIRST.languages.python!;
    assert.deepEqual(
      runtimeKeyInput({ spec: go, archive: FIRST.archive }),
      runtimeKeyInput({ spec: go, archive: null }),
    );
    const withArchive = (archive: typeof FIRST.archive) => runtimeKeyInput({ spec: python, archive });
    assert.notDeepEqual(withArchive(FIRST.archive), withArchive(SECOND.archive));
    assert.throws(() => runtimeKeyInput({ spec: python, archive: null }), /needs the archive state/);
  });

  it("the operator's input holds the files it writes", () => {
    const input = operatorKeyInput({ language: 'go', spec: FIRST.languages.go!, operatorSha256: sha256('x') });
    assert.match(input.unit, /^Environment=GOPATH=\/root\/go$/m);
    assert.match(input.profile, /^export PATH=\/usr\/local\/go\/bin:\$PATH$/m);
  });
});

describe('key records and what changed between two', () => {
  const python = FIRST.languages.python!;
  const record = (
    previous: string | null,
    input: Record<string, unknown>,
    step: 'runtime' | 'operator' | 'verify' = 'runtime',
  ) => keyRecord(step, previous, input, 'python');

  it('hash to their key, and survive JSON', () => {
    const r = record(PINNED.first.base, runtimeKeyInput({ spec: python, archive: FIRST.archive }));
    assert.equal(r.key, PINNED.first.python.runtime);
    const parsed = KeyRecord.parse(JSON.parse(JSON.stringify(r)));
    assert.equal(stepKey(parsed.step, parsed.previous, parsed.input), r.key);
  });

  it('name the field that changed, with both values', () => {
    const before = record(
      PINNED.first.base,
      runtimeKeyInput({ spec: { ...python, packages: [] }, archive: FIRST.archive }),
    );
    const after = record(PINNED.first.base, runtimeKeyInput({ spec: python, archive: FIRST.archive }));
    assert.deepEqual(keyInputChanges(before, after), ['runtime: packages: [] → ["python3-venv"]']);
    assert.deepEqual(keyInputChanges(after, after), []);
  });

  it('go into objects and lists of records, and say when only the step before changed', () => {
    const before = record(PINNED.first.base, runtimeKeyInput({ spec: python, archive: FIRST.archive }));
    const spec = structuredClone(python);
    spec.runtime[0] = { ...spec.runtime[0]!, links: [] };
    const after = record(
      PINNED.second.base,
      runtimeKeyInput({ spec, archive: { ...FIRST.archive, 'jammy-security': '4'.repeat(64) } }),
    );
    assert.deepEqual(keyInputChanges(before, after), [
      `runtime: previous: ${PINNED.first.base} → ${PINNED.second.base}`,
      `runtime: archive.jammy-security: (none) → "${'4'.repeat(64)}"`,
      'runtime: runtime.0.links: [{"path":"/usr/local/bin/python","target":"/usr/bin/python3"}] → []',
    ]);
  });

  it('show the lines of a rendered file that changed, not the whole file', () => {
    const op = (environment: Record<string, string>) => {
      const input = operatorKeyInput({
        language: 'python',
        spec: { ...python, environment },
        operatorSha256: sha256('x'),
      });
      return record(PINNED.first.python.runtime, input, 'operator');
    };
    const changes = keyInputChanges(op({ A: '1' }), op({ A: '2' }));
    assert.deepEqual(changes, [
      'operator: profile: removed "export A=1"; added "export A=2"',
      'operator: unit: removed "Environment=A=1"; added "Environment=A=2"',
    ]);
    const verify = (expect: string) => {
      const spec = { ...python, verify: [{ argv: ['python3', '-V'], expect }] };
      return record(PINNED.first.python.operator, verifyKeyInput({ spec }), 'verify');
    };
    assert.deepEqual(keyInputChanges(verify('^Python'), verify('^Python 3')), [
      'verify: verify.0.expect: "^Python" → "^Python 3"',
    ]);
  });
});
