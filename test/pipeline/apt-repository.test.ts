import { strict as assert } from 'node:assert';
import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { stringify } from 'yaml';
import { BuildError, StepRunner } from '../../src/pipeline/context';
import { Pipeline } from '../../src/pipeline/pipeline';
import { loadConfig } from '../../src/config';
import { LocalHost } from '../../src/host';
import { requireTool } from '../../src/setup/tools';
import { startFixtureServer, type FixtureServer } from '../support/fixture-server';
import { tempDir } from '../support/process';

const sha256 = (b: Buffer | string) => crypto.createHash('sha256').update(b).digest('hex');

/**
 * A vendor's apt repository, as NodeSource publishes one: a package in a pool, a Packages index,
 * and an InRelease signed with the vendor's key. Returns the files to serve and the public key.
 */
function signedRepository(): { files: Record<string, Buffer>; key: Buffer; strangerKey: Buffer } {
  const dir = tempDir('aptrepo');
  const gnupg = path.join(dir, 'gnupg');
  fs.mkdirSync(gnupg, { mode: 0o700 });
  const gpg = (...args: string[]) =>
    execFileSync('gpg', ['--batch', '--quiet', '--homedir', gnupg, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
  gpg(
    '--passphrase',
    '',
    '--quick-gen-key',
    'rootfs fixture vendor <vendor@example.invalid>',
    'ed25519',
    'sign',
    'never',
  );
  const key = gpg('--export');
  const other = path.join(dir, 'other');
  fs.mkdirSync(other, { mode: 0o700 });
  execFileSync('gpg', [
    '--batch',
    '--quiet',
    '--homedir',
    other,
    '--passphrase',
    '',
    '--quick-gen-key',
    'someone else',
    'ed25519',
    'sign',
    'never',
  ]);
  const strangerKey = execFileSync('gpg', ['--batch', '--quiet', '--homedir', other, '--export']);

  const pkg = path.join(dir, 'pkg');
  fs.mkdirSync(path.join(pkg, 'DEBIAN'), { recursive: true });
  fs.mkdirSync(path.join(pkg, 'usr/bin'), { recursive: true });
  fs.writeFileSync(
    path.join(pkg, 'DEBIAN/control'),
    'Package: rootfs-fixture-tool\nVersion: 1.2.3\nArchitecture: all\nMaintainer: fixture <vendor@example.invalid>\nDescription: a vendor tool for the tests\n',
  );
  fs.writeFileSync(path.join(pkg, 'usr/bin/rootfs-fixture-tool'), '#!/bin/sh\necho "fixture tool 1.2.3"\n', {
    mode: 0o755,
  });
  const repo = path.join(dir, 'repo');
  fs.mkdirSync(path.join(repo, 'pool'), { recursive: true });
  execFileSync(
    'dpkg-deb',
    ['--build', '--root-owner-group', pkg, path.join(repo, 'pool/rootfs-fixture-tool_1.2.3_all.deb')],
    { stdio: 'ignore' },
  );
  const packages = execFileSync('dpkg-scanpackages', ['pool', '/dev/null'], {
    cwd: repo,
    stdio: ['ignore', 'pipe', 'ignore'],
  });
  const release = [
    'Origin: rootfs fixture',
    'Suite: stable',
    'Codename: stable',
    'Architectures: amd64',
    'Components: main',
    `Date: ${new Date().toUTCString()}`,
    'SHA256:',
    ` ${sha256(packages)} ${packages.length} main/binary-amd64/Packages`,
    '',
  ].join('\n');
  fs.writeFileSync(path.join(dir, 'Release'), release);
  gpg('--clearsign', '--output', path.join(dir, 'InRelease'), path.join(dir, 'Release'));
  return {
    key,
    strangerKey,
    files: {
      '/repo/dists/stable/InRelease': fs.readFileSync(path.join(dir, 'InRelease')),
      '/repo/dists/stable/main/binary-amd64/Packages': packages,
      '/repo/pool/rootfs-fixture-tool_1.2.3_all.deb': fs.readFileSync(
        path.join(repo, 'pool/rootfs-fixture-tool_1.2.3_all.deb'),
      ),
    },
  };
}

describe('apt source with a vendor repository @real @heavy', function () {
  this.timeout(15 * 60 * 1000);
  let fixture: FixtureServer;
  let repo: ReturnType<typeof signedRepository>;
  let workspace: string;
  let baseKey: string;

  const pipelineWith = (key: { url: string; sha256: string }) => {
    const dir = tempDir('aptcfg');
    fs.writeFileSync(
      path.join(dir, 'rootfs.yaml'),
      stringify({
        workspace,
        languages: {
          vendor: {
            runtime: [
              {
                kind: 'apt',
                packages: ['rootfs-fixture-tool'],
                repository: { name: 'fixture', url: `${fixture.url}/repo`, suite: 'stable', components: ['main'], key },
              },
            ],
            verify: [{ argv: ['rootfs-fixture-tool'], expect: '^fixture tool 1\\.2\\.3$' }],
          },
        },
      }),
    );
    const { config } = loadConfig({ file: path.join(dir, 'rootfs.yaml'), env: {} });
    return new Pipeline(new StepRunner(new LocalHost()), {
      config,
      operatorPath: requireTool('referenceOperator'),
      keyringPath: requireTool('ubuntuKeyring'),
    });
  };

  before(async () => {
    fixture = await startFixtureServer();
    repo = signedRepository();
    for (const [p, body] of Object.entries(repo.files)) fixture.serve(p, body);
    fixture.serve('/vendor.gpg', repo.key);
    fixture.serve('/stranger.gpg', repo.strangerKey);
    workspace = path.join(tempDir('aptws'), 'workspace');
    const pipeline = pipelineWith({ url: `${fixture.url}/vendor.gpg`, sha256: sha256(repo.key) });
    await pipeline.prepare('vendor');
    baseKey = (await pipeline.base()).key;
  });

  it('installs a package from a signed vendor repository, trusting only its pinned key, for the install only', async () => {
    const pipeline = pipelineWith({ url: `${fixture.url}/vendor.gpg`, sha256: sha256(repo.key) });
    const runtime = await pipeline.runtime('vendor', baseKey);
    assert.match(String((runtime.data.installed as Record<string, string>).apt), /^rootfs-fixture-tool=1\.2\.3$/);
    const tree = pipeline.store.tree(runtime.key);
    assert.equal(
      fs.readFileSync(path.join(tree, 'usr/bin/rootfs-fixture-tool'), 'utf8'),
      '#!/bin/sh\necho "fixture tool 1.2.3"\n',
    );
    // The schema says "for the install only": the image neither lists the repository nor trusts its key.
    assert.deepEqual(fs.readdirSync(path.join(tree, 'etc/apt/sources.list.d')), []);
    assert.deepEqual(fs.readdirSync(path.join(tree, 'etc/apt/keyrings')), []);
    assert.ok(!fs.readFileSync(path.join(tree, 'etc/apt/sources.list'), 'utf8').includes(fixture.url));
    assert.deepEqual(
      fs.readdirSync(path.join(tree, 'var/lib/apt/lists')).filter((n) => n !== 'lock' && n !== 'partial'),
      [],
    );
  });

  it('refuses a key whose checksum is not the pinned one', async () => {
    // (Downloads are cached by their sum, so the pin must be one not fetched before.)
    const pipeline = pipelineWith({ url: `${fixture.url}/vendor.gpg`, sha256: sha256(repo.strangerKey) });
    await assert.rejects(
      pipeline.runtime('vendor', baseKey),
      (err: unknown) => err instanceof BuildError && err.type === 'ChecksumMismatch',
    );
  });

  it('refuses a repository that the pinned key did not sign', async () => {
    const pipeline = pipelineWith({ url: `${fixture.url}/stranger.gpg`, sha256: sha256(repo.strangerKey) });
    await assert.rejects(
      pipeline.runtime('vendor', baseKey),
      /NO_PUBKEY|not signed|signatures couldn't be verified|is not signed/,
    );
  });
});
