import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { ConfigError, loadConfig } from '../../src/config';
import { tempDir } from '../support/process';

function withFile(text: string): string {
  const dir = tempDir('config');
  const file = path.join(dir, 'rootfs.yaml');
  fs.writeFileSync(file, text);
  return file;
}

function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
    return err.problems;
  }
  assert.fail('expected the config to be refused');
}

describe('config', () => {
  const emptyEnv = {};

  it('defaults to the five languages of the default profile and the documented settings', () => {
    const { config, file } = loadConfig({ env: emptyEnv, cwd: os.tmpdir() });
    assert.equal(file, undefined);
    assert.deepEqual(Object.keys(config.languages), ['bash', 'python', 'nodejs', 'go', 'rust']);
    assert.equal(config.workspace, '/srv/firecracker');
    assert.equal(config.s3.bucket, 'llm-infra-operator-rootfs');
    assert.equal(config.s3.region, 'us-east-1');
    assert.equal(config.operator.path, './infra.operator-linux');
    assert.deepEqual(config.buildHost, { kind: 'local', alias: 'local' });
    assert.equal(config.base.suite, 'jammy');
    assert.deepEqual(config.base.components, ['main', 'universe']);
    assert.equal(config.languages.go!.environment.GOROOT, '/usr/local/go');
  });

  it('lets S3_* override the file and AWS_REGION fill only what the file leaves unset', () => {
    const file = withFile('s3:\n  bucket: from-file\n  region: eu-west-1\n');
    const a = loadConfig({ file, env: { S3_BUCKET: 'from-env', AWS_REGION: 'ap-south-1' } }).config;
    assert.equal(a.s3.bucket, 'from-env');
    assert.equal(a.s3.region, 'eu-west-1');
    const b = loadConfig({
      env: { AWS_REGION: 'ap-south-1', S3_ENDPOINT: 'http://127.0.0.1:9000' },
      cwd: os.tmpdir(),
    }).config;
    assert.equal(b.s3.region, 'ap-south-1');
    assert.equal(b.s3.endpoint, 'http://127.0.0.1:9000');
  });

  it('lets TEMPORAL_ADDRESS and TEMPORAL_NAMESPACE override the file', () => {
    const file = withFile('temporal:\n  address: temporal.example.internal:7233\n  namespace: builds\n');
    assert.deepEqual(loadConfig({ file, env: emptyEnv }).config.temporal.address, 'temporal.example.internal:7233');
    const { temporal } = loadConfig({
      file,
      env: { TEMPORAL_ADDRESS: '127.0.0.1:7300', TEMPORAL_NAMESPACE: 'dev' },
    }).config;
    assert.equal(temporal.address, '127.0.0.1:7300');
    assert.equal(temporal.namespace, 'dev');
  });

  it('--ssh NAME builds on a named SSH host of sshHosts; an unknown name is refused', () => {
    const pin = `SHA256:${'A'.repeat(43)}`;
    const file = withFile(
      `sshHosts:\n  builder-2:\n    host: 10.0.0.6\n    user: root\n    keyPath: keys/builder\n    hostKeySha256: "${pin}"\n`,
    );
    assert.deepEqual(loadConfig({ file, env: emptyEnv }).config.buildHost, { kind: 'local', alias: 'local' });
    const { buildHost } = loadConfig({ file, env: emptyEnv, sshHost: 'builder-2' }).config;
    assert.deepEqual(buildHost, {
      kind: 'ssh',
      alias: 'builder-2',
      host: '10.0.0.6',
      port: 22,
      user: 'root',
      keyPath: 'keys/builder',
      hostKeySha256: pin,
    });
    assert.deepEqual(
      problemsOf(() => loadConfig({ file, env: emptyEnv, sshHost: 'builder-3' })),
      ['--ssh "builder-3": no such SSH host in sshHosts (configured: builder-2)'],
    );
    assert.match(
      problemsOf(() => loadConfig({ file: withFile('sshHosts:\n  Bad_Name: {}\n'), env: emptyEnv })).join('\n'),
      /sshHosts/,
    );
  });

  it('lays language entries over the profile and drops a language set to null', () => {
    const file = withFile('languages:\n  python:\n    packages: [python3-venv]\n  rust: null\n');
    const { config } = loadConfig({ file, env: emptyEnv });
    assert.deepEqual(Object.keys(config.languages), ['bash', 'python', 'nodejs', 'go']);
    assert.deepEqual(config.languages.python!.packages, ['python3-venv']);
    assert.equal(config.languages.python!.verify[0]!.expect, '^Python 3\\.10\\.');
  });

  it('reports every problem with its path and line, and nothing else', () => {
    const file = withFile(
      [
        'workspace: relative/dir',
        'languages:',
        '  go:',
        '    runtime:',
        '      - kind: archive',
        '        url: https://example.invalid/go.tgz',
        '        sha256: abc',
        '        dest: /usr/local/go',
        's3:',
        '  bucket: Bad_Bucket',
        '',
      ].join('\n'),
    );
    const problems = problemsOf(() => loadConfig({ file, env: emptyEnv }));
    assert.deepEqual(problems, [
      'rootfs.yaml:1: workspace: expected an absolute path of plain characters',
      'rootfs.yaml:7: languages.go.runtime.0.sha256: expected 64 hex characters',
      'rootfs.yaml:10: s3.bucket: expected an S3 bucket name',
    ]);
  });

  for (const hostile of ['python;rm -rf /', '../x', 'Python', '', 'a'.repeat(33)]) {
    it(`refuses the language name ${JSON.stringify(hostile).slice(0, 40)}`, () => {
      const file = withFile(`languages:\n  ${JSON.stringify(hostile)}:\n    verify: [{ argv: [true], expect: "" }]\n`);
      const problems = problemsOf(() => loadConfig({ file, env: emptyEnv }));
      assert.equal(problems.length, 1);
      assert.match(problems[0]!, /languages.*expected a name matching/);
    });
  }

  it('refuses unknown keys, so a typo is not silently ignored', () => {
    const file = withFile('s3:\n  buckett: x\n');
    const problems = problemsOf(() => loadConfig({ file, env: emptyEnv }));
    assert.match(problems[0]!, /^rootfs.yaml:2: s3: Unrecognized key: "buckett"/);
  });

  it('refuses the upstream profile until its unverifiable checksums are pinned', () => {
    const file = withFile('profile: upstream\n');
    const problems = problemsOf(() => loadConfig({ file, env: emptyEnv }));
    assert.deepEqual(
      problems.map((p) => p.replace(/^rootfs.yaml(:\d+)?: /, '')),
      [
        'languages.nodejs.runtime.0.repository.key.sha256: expected 64 hex characters',
        'languages.rust.runtime.0.sha256: expected 64 hex characters',
      ],
    );
  });

  it('reports YAML syntax errors with their line', () => {
    const file = withFile('s3:\n  bucket: [unclosed\n');
    const problems = problemsOf(() => loadConfig({ file, env: emptyEnv }));
    assert.match(problems[0]!, /^rootfs.yaml:\d+: /);
  });

  it('refuses a YAML alias bomb as a config error that names the file', () => {
    const levels = ['a: &a ["x","x","x","x","x","x","x","x","x"]'];
    for (let i = 1; i < 9; i++)
      levels.push(
        `${'abcdefghi'[i]}: &${'abcdefghi'[i]} [${Array(9)
          .fill(`*${'abcdefghi'[i - 1]}`)
          .join(',')}]`,
      );
    const file = withFile(`${levels.join('\n')}\n`);
    const problems = problemsOf(() => loadConfig({ file, env: emptyEnv }));
    assert.match(problems[0]!, /^rootfs\.yaml: .*alias/i);
  });

  it('refuses URLs that carry credentials: they would end up in histories and logs', () => {
    const file = withFile('base:\n  mirror: "https://user:secret@mirror.example/ubuntu"\n');
    const problems = problemsOf(() => loadConfig({ file, env: emptyEnv }));
    assert.match(problems[0]!, /base\.mirror: must not carry credentials/);
    assert.doesNotMatch(problems.join('\n'), /secret/);
  });

  it('refuses values that could escape a systemd unit or a shell profile', () => {
    const file = withFile('languages:\n  go:\n    environment:\n      PATH: "/bin:$(id)"\n');
    const problems = problemsOf(() => loadConfig({ file, env: emptyEnv }));
    assert.match(problems[0]!, /languages\.go\.environment\.PATH: expected letters/);
  });
});
