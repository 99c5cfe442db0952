import { strict as assert } from 'node:assert';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { BuildError, StepRunner } from '../../src/pipeline/context';
import { installSource, sha256OnHost, type SourceContext } from '../../src/pipeline/sources';
import { CommandError, LocalHost } from '../../src/host';
import { startFixtureServer, type FixtureServer } from '../support/fixture-server';
import { tempDir } from '../support/process';
import { busyboxTree, tarball } from '../support/trees';

const sha256 = (b: Buffer) => crypto.createHash('sha256').update(b).digest('hex');

describe('runtime sources @real', function () {
  this.timeout(300_000);
  let fixture: FixtureServer;
  let ctx: SourceContext;
  const phases: string[] = [];

  beforeEach(async () => {
    fixture ??= await startFixtureServer();
    const runner = new StepRunner(new LocalHost(), (p) => phases.push(p.phase));
    ctx = { runner, tree: busyboxTree(), cacheDir: tempDir('cache'), clientEnv: {} };
  });

  it("sha256OnHost gives a file's sha256 on the build host, and refuses a relative path", async () => {
    const file = path.join(tempDir('sha'), 'data');
    const data = crypto.randomBytes(3 * 1024 * 1024 + 7);
    fs.writeFileSync(file, data);
    assert.equal(await sha256OnHost(ctx.runner, file), sha256(data));
    fs.writeFileSync(file, '');
    assert.equal(await sha256OnHost(ctx.runner, file), sha256(Buffer.alloc(0)));
    await assert.rejects(sha256OnHost(ctx.runner, 'data'), /not an absolute path: data/);
  });

  it('archive: downloads once, checks the sum, unpacks and links', async () => {
    const body = tarball({ 'go/bin/tool': '#!/bin/sh\necho tool 1.0\n', 'go/VERSION': '1.0\n' });
    fixture.serve('/tool.tgz', body);
    const source = {
      kind: 'archive' as const,
      url: `${fixture.url}/tool.tgz`,
      sha256: sha256(body),
      dest: '/opt/tool',
      stripComponents: 2,
      links: [{ path: '/usr/bin/tool', target: '/opt/tool/bin/tool' }],
    };
    const record = await installSource(ctx, source);
    assert.match(record.archive!, /tool\.tgz sha256:/);
    assert.equal(fs.readFileSync(path.join(ctx.tree, 'opt/tool/VERSION'), 'utf8'), '1.0\n');
    assert.equal(fs.readlinkSync(path.join(ctx.tree, 'usr/bin/tool')), '/opt/tool/bin/tool');
    assert.equal(fixture.hits('/tool.tgz'), 1);
    await installSource(ctx, source);
    assert.equal(fixture.hits('/tool.tgz'), 1, 'the second install comes from the cache');
  });

  it('a checksum mismatch is final and names the artifact, the expected and the actual sum', async () => {
    const good = tarball({ 'x/a': 'a' });
    const evil = tarball({ 'x/a': 'tampered' });
    fixture.serve('/evil.tgz', evil);
    const source = {
      kind: 'archive' as const,
      url: `${fixture.url}/evil.tgz`,
      sha256: sha256(good),
      dest: '/opt/x',
      stripComponents: 1,
      links: [],
    };
    await assert.rejects(installSource(ctx, source), (err: unknown) => {
      assert.ok(err instanceof BuildError);
      assert.equal(err.type, 'ChecksumMismatch');
      assert.equal(
        err.message,
        `checksum mismatch for ${source.url}: expected sha256 ${sha256(good)}, got ${sha256(evil)}`,
      );
      return true;
    });
    assert.deepEqual(fs.readdirSync(path.join(ctx.cacheDir, 'downloads')), [], 'nothing unverified is kept');
    assert.equal(fs.existsSync(path.join(ctx.tree, 'opt/x')), false);
  });

  it('a vendor answering 503 is a retryable failure, not a checksum error', async () => {
    fixture.serve('/down.tgz', 'x');
    fixture.fail('/down.tgz', 503);
    const source = {
      kind: 'archive' as const,
      url: `${fixture.url}/down.tgz`,
      sha256: sha256(Buffer.from('x')),
      dest: '/opt/d',
      stripComponents: 0,
      links: [],
    };
    await assert.rejects(
      installSource(ctx, source),
      (err: unknown) => err instanceof CommandError && /503/.test(err.message),
    );
  });

  it('script: runs the verified installer inside the tree with its arguments and environment', async () => {
    const script = '#!/bin/sh\nmkdir -p "$PREFIX/bin"\necho "args:$1:$2" > "$PREFIX/installed"\n';
    fixture.serve('/install.sh', script);
    const record = await installSource(ctx, {
      kind: 'script',
      url: `${fixture.url}/install.sh`,
      sha256: sha256(Buffer.from(script)),
      args: ['-y', 'two words'],
      env: { PREFIX: '/opt/thing' },
      links: [{ path: '/usr/bin/thing', target: '/opt/thing/bin/thing' }],
    });
    assert.match(record.script!, /install\.sh sha256:/);
    assert.equal(fs.readFileSync(path.join(ctx.tree, 'opt/thing/installed'), 'utf8'), 'args:-y:two words\n');
    assert.deepEqual(fs.readdirSync(path.join(ctx.tree, 'tmp')), [], 'the installer is removed afterwards');
  });

  it('npm: packs a package at an exact version through the registry client and unpacks it', async () => {
    const record = await installSource(ctx, {
      kind: 'npm',
      package: 'is-number',
      version: '7.0.0',
      dest: '/usr/local/lib/node_modules/is-number',
      links: [],
    });
    assert.match(record['npm:is-number']!, /^7\.0\.0 sha512-/);
    const pkg = JSON.parse(
      fs.readFileSync(path.join(ctx.tree, 'usr/local/lib/node_modules/is-number/package.json'), 'utf8'),
    );
    assert.equal(pkg.version, '7.0.0');
  });

  it('gomodule: downloads a module version through the Go proxy (checked against the sum database)', async () => {
    const record = await installSource(ctx, {
      kind: 'gomodule',
      module: 'github.com/google/uuid',
      version: 'v1.6.0',
      dest: '/opt/uuid',
      executable: [],
      links: [],
    });
    assert.match(record['go:github.com/google/uuid']!, /^v1\.6\.0 h1:/);
    assert.ok(fs.existsSync(path.join(ctx.tree, 'opt/uuid/uuid.go')));
    assert.equal(fs.statSync(path.join(ctx.tree, 'opt/uuid/uuid.go')).mode & 0o777, 0o644);
  });
});
