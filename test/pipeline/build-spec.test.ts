import { strict as assert } from 'node:assert';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { stringify } from 'yaml';
import {
  BuildSpec,
  buildSpecOf,
  checkBuildHost,
  languageSpec,
  localInputs,
  pinnedFilesDir,
  PinnedFileMissing,
  specChanges,
  WrongBuildHost,
} from '../../src/pipeline/build-spec';
import { loadConfig } from '../../src/config';
import { requireTool } from '../../src/setup/tools';
import { tempDir } from '../support/process';

describe('build spec', () => {
  let dir: string;
  let previousCache: string | undefined;
  const configFile = (name: string, doc: Record<string, unknown>) => {
    const file = path.join(dir, name);
    fs.writeFileSync(file, stringify({ operator: { path: requireTool('referenceOperator') }, ...doc }));
    return loadConfig({ file });
  };

  beforeEach(() => {
    dir = tempDir('spec');
    previousCache = process.env.XDG_CACHE_HOME;
    process.env.XDG_CACHE_HOME = path.join(dir, 'cache');
  });
  afterEach(() => {
    if (previousCache === undefined) delete process.env.XDG_CACHE_HOME;
    else process.env.XDG_CACHE_HOME = previousCache;
  });

  it('holds what the build builds and pins local files by sha256, never credentials or key paths', () => {
    const loaded = configFile('a.yaml', {
      languages: { python: { packages: ['python3-venv'] } },
      s3: { bucket: 'other-bucket', endpoint: 'http://127.0.0.1:9' },
      temporal: { apiKeyEnv: 'SECRET_KEY_VAR' },
    });
    const spec = buildSpecOf(loaded, ['python']);
    assert.deepEqual(Object.keys(spec.languages), ['python']);
    assert.deepEqual(spec.languages.python?.packages, ['python3-venv']);
    assert.equal(spec.s3.bucket, 'other-bucket');
    assert.equal(
      spec.operatorSha256,
      crypto
        .createHash('sha256')
        .update(fs.readFileSync(requireTool('referenceOperator')))
        .digest('hex'),
    );
    assert.equal(spec.source, path.join(dir, 'a.yaml'));
    const text = JSON.stringify(spec);
    assert.doesNotMatch(text, /SECRET_KEY_VAR|temporal|keyPath|apiKey/);
    // The pinned files are kept by digest for workers of other configs on this machine.
    assert.ok(fs.existsSync(path.join(pinnedFilesDir(), spec.operatorSha256)));
    assert.ok(fs.existsSync(path.join(pinnedFilesDir(), spec.keyringSha256)));
    // It round-trips through its own schema (what every activity parses).
    assert.deepEqual(BuildSpec.parse(JSON.parse(text)), spec);
  });

  it('refuses a language the config does not have', () => {
    assert.throws(() => buildSpecOf(configFile('b.yaml', {}), ['cobol']), /cobol is not a configured language/);
  });

  it("a child's spec holds its own language only", () => {
    const spec = buildSpecOf(configFile('c.yaml', {}));
    assert.deepEqual(Object.keys(languageSpec(spec, 'go').languages), ['go']);
    assert.throws(() => languageSpec(languageSpec(spec, 'go'), 'rust'), /rust is not part of this build/);
  });

  it("a worker finds the build's operator by digest, even when its own config names another binary", () => {
    const mine = configFile('d.yaml', {});
    const spec = buildSpecOf(mine);
    const other = path.join(dir, 'other-operator');
    fs.copyFileSync(requireTool('referenceOperator'), other);
    fs.appendFileSync(other, Buffer.from('different'));
    const worker = configFile('e.yaml', { operator: { path: other } });
    assert.equal(localInputs(spec, worker).operatorPath, requireTool('referenceOperator'));
    // A binary this machine has never seen is refused, with the digest and where it looked.
    const foreign = { ...spec, operatorSha256: 'f'.repeat(64) };
    assert.throws(
      () => localInputs(foreign, worker),
      (err: unknown) => {
        assert.ok(err instanceof PinnedFileMissing);
        assert.match(
          err.message,
          /started with the operator binary sha256 f{64}, and this worker has no file with that digest/,
        );
        return true;
      },
    );
    // The pinned copy is found when the original file is gone.
    const moved = path.join(dir, 'moved-operator');
    fs.copyFileSync(other, moved);
    const fromOther = buildSpecOf(configFile('f.yaml', { operator: { path: moved } }));
    fs.rmSync(moved);
    assert.equal(localInputs(fromOther, mine).operatorPath, path.join(pinnedFilesDir(), fromOther.operatorSha256));
  });

  it('a worker refuses the steps of a build started for another build host', () => {
    const spec = buildSpecOf(configFile('g.yaml', { buildHost: { kind: 'local', alias: 'builder-a' } }));
    checkBuildHost(spec, configFile('h.yaml', { buildHost: { kind: 'local', alias: 'builder-a' } }));
    assert.throws(
      () => checkBuildHost(spec, configFile('i.yaml', { buildHost: { kind: 'local', alias: 'builder-b' } })),
      (err: unknown) =>
        err instanceof WrongBuildHost &&
        /started for build host builder-a .* this worker drives builder-b/.test(err.message),
    );
  });

  it('lists what changed between two specs, leaf by leaf', () => {
    const before = buildSpecOf(configFile('j.yaml', {}), ['python', 'rust']);
    const after = buildSpecOf(
      configFile('k.yaml', { languages: { python: { packages: ['python3-venv'] } }, image: { headroomMiB: 64 } }),
      ['python', 'rust'],
    );
    assert.deepEqual(specChanges(before, before), []);
    assert.deepEqual(
      specChanges(before, after).filter((c) => !c.startsWith('source')),
      ['image.headroomMiB: 512 → 64', 'languages.python.packages: [] → ["python3-venv"]'],
    );
  });
});
