import { strict as assert } from 'node:assert';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { WorkflowFailedError } from '@temporalio/client';
import { createClient, readManifest, statObject } from '../../src/store';
import { hostTaskQueue, ORCHESTRATOR_TASK_QUEUE } from '../../worker';
import { stagingDir } from '../../src/store/build-upload';
import { createRootfs } from '../../workflows';
import { abortUpdate, progressQuery } from '../../workflows/messages';
import { childWorkflowId, type BuildOptions, type LanguageProgress } from '../../workflows/types';
import { createBuildEnv, type BuildEnv } from '../support/build-env';
import { activityRuns, waitFor } from '../support/history';
import { catInImage, e2fsckStatus, statInImage } from '../support/image';
import { tempDir } from '../support/process';
import { fingerprintOfPublicKeyFile, testSshd, type TestSshd } from '../support/sshd';
import { testTemporal } from '../support/temporal';

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

/**
 * What the test sshd logged (LogLevel VERBOSE) from byte `from` on: the connections our client key
 * opened, each with the command sessions and SFTP subsystems it carried. sshd logs
 * `Accepted publickey for USER from 127.0.0.1 port P ssh2: ED25519 SHA256:…` once per connection,
 * `Starting session: command for USER from 127.0.0.1 port P id N` once per command (exec channel),
 * and `Starting session: subsystem 'sftp' for USER from 127.0.0.1 port P id N` for each SFTP channel.
 */
function sshdConnections(sshd: TestSshd, from: number): Array<{ port: number; commands: number; sftp: number }> {
  const log = fs.readFileSync(path.join(sshd.dir, 'sshd.log')).subarray(from).toString('utf8');
  const clientKey = fingerprintOfPublicKeyFile(`${sshd.clientKeyPath}.pub`);
  const accepted = new RegExp(
    `Accepted publickey for ${escape(sshd.user)} from 127\\.0\\.0\\.1 port (\\d+) ssh2: ED25519 ${escape(clientKey)}\\r?$`,
    'gm',
  );
  return [...log.matchAll(accepted)].map((m) => {
    const port = Number(m[1]);
    const session = (kind: string) =>
      log.match(
        new RegExp(
          `Starting session: ${kind} for ${escape(sshd.user)} from 127\\.0\\.0\\.1 port ${port} id \\d+\\r?$`,
          'gm',
        ),
      )?.length ?? 0;
    return { port, commands: session('command'), sftp: session("subsystem 'sftp'") };
  });
}

const sshdLogSize = (sshd: TestSshd) => fs.statSync(path.join(sshd.dir, 'sshd.log')).size;

describe('build host over SSH @real @heavy', function () {
  this.timeout(40 * 60 * 1000);
  let sshd: TestSshd;
  let env: BuildEnv;
  let buildHost: Record<string, unknown>;
  let options: BuildOptions;
  let staged: string;
  let alias: string;

  before(async () => {
    sshd = await testSshd();
    // root: mmdebstrap --mode=root, unshare, chroot and mkfs need it on the build host.
    assert.equal(sshd.user, 'root');
    alias = `ssh-${crypto.randomBytes(3).toString('hex')}`;
    buildHost = {
      kind: 'ssh',
      alias,
      host: '127.0.0.1',
      port: sshd.port,
      user: sshd.user,
      keyPath: sshd.clientKeyPath,
      hostKeySha256: sshd.hostKeySha256,
    };
    // A fresh workspace: the base is really built over SSH, nothing is reused from other tests.
    // Named in sshHosts and chosen with --ssh (here the worker's configOptions), as `rootfs worker --ssh NAME` does.
    const { kind: _kind, alias: _alias, ...target } = buildHost;
    env = await createBuildEnv('ssh', { sshHosts: { [alias]: target } });
    // The worker serves the queue of the configured build host's alias. The upload step copies
    // the image from the build host into a staging cache first: a temp one for this test.
    options = { ...env.options, hostTaskQueue: hostTaskQueue(alias) };
    process.env.XDG_CACHE_HOME = tempDir('ssh-cache');
    await env.startWorker({ configOptions: { file: env.configFile, sshHost: alias } });
  });

  it('builds the bash image with every command and file going over SSH to the pinned host', async () => {
    const { client } = (await testTemporal()).env;
    const logFrom = sshdLogSize(sshd);
    const runTag = `ssh-${crypto.randomBytes(3).toString('hex')}`;
    const started = Date.now();
    const result = await client.workflow.execute(createRootfs, {
      taskQueue: ORCHESTRATOR_TASK_QUEUE,
      workflowId: childWorkflowId(runTag, 'bash'),
      args: [{ language: 'bash', runTag, options, spec: env.spec(['bash'], alias) }],
    });
    const seconds = ((Date.now() - started) / 1000).toFixed(0);
    // The staging copy is kept per artifact, so two builds of bash at once cannot swap images.
    staged = path.join(stagingDir(alias), 'bash', `${result.imageKey}.ext4`);

    assert.equal(result.state, 'done');
    assert.deepEqual(result.steps, {
      base: 'ran',
      boot: 'ran',
      runtime: 'ran',
      operator: 'ran',
      verify: 'ran',
      image: 'ran',
      upload: 'ran',
    });
    assert.equal(result.s3Key, 'rootfs-bash.ext4');
    assert.match(result.versions.join(' | '), /^GNU bash, version 5\.1\./);

    // The build host is this machine: the image is where the result says, complete and clean.
    const file = result.path!;
    assert.equal(file, path.join(env.workspace, 'images', 'rootfs-bash.ext4'));
    assert.ok(fs.existsSync(file), `${file} exists`);
    assert.equal(e2fsckStatus(file), 0, `e2fsck -fn ${file}`);
    assert.equal(fs.statSync(file).size, result.sizeBytes);
    assert.equal(crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex'), result.sha256);
    const operator = statInImage(file, '/usr/local/bin/infra.operator');
    assert.equal(operator?.type, 'regular');
    assert.equal(operator!.mode & 0o7777, 0o755);
    assert.match(
      catInImage(file, '/etc/systemd/system/infra.operator.service'),
      /^ExecStart=\/usr\/local\/bin\/infra.operator guest --port 5000$/m,
    );
    const wants = statInImage(file, '/etc/systemd/system/multi-user.target.wants/infra.operator.service');
    assert.equal(wants?.type, 'symlink');
    assert.equal(wants?.linkTarget, '/etc/systemd/system/infra.operator.service');
    assert.equal(statInImage(file, '/sbin/init')?.linkTarget, '/lib/systemd/systemd');
    // The keyring went over SFTP into the workspace's cache.
    assert.equal(
      fs.readdirSync(path.join(env.workspace, 'cache', 'keyrings')).filter((f) => f.endsWith('.gpg')).length,
      1,
    );

    // It all went through sshd: the worker authenticated with the test's client key (one
    // connection it keeps) and ran every command as a session on it, files through SFTP.
    const connections = sshdConnections(sshd, logFrom);
    const commands = connections.reduce((n, c) => n + c.commands, 0);
    const sftp = connections.reduce((n, c) => n + c.sftp, 0);
    console.log(
      `      bash over SSH: ${seconds} s (ms per step ${JSON.stringify(result.durationsMs)}), ${commands} commands and ${sftp} SFTP channels on ${connections.length} connection(s)`,
    );
    assert.ok(connections.length >= 1, 'the worker connected to the test sshd');
    assert.ok(commands >= 50, `${commands} commands ran through sshd (${JSON.stringify(connections)})`);
    assert.ok(sftp >= 1, `SFTP was used (${JSON.stringify(connections)})`);
  });

  it('uploads from the SSH build host: the bucket holds the very image built there, and an unchanged one is not copied again', async () => {
    const { client } = (await testTemporal()).env;
    const image = path.join(env.workspace, 'images', 'rootfs-bash.ext4');
    const sha256 = crypto.createHash('sha256').update(fs.readFileSync(image)).digest('hex');
    const s3 = createClient({ config: env.s3 });
    try {
      const object = await statObject({ client: s3, config: env.s3 }, 'rootfs-bash.ext4');
      assert.equal(object?.sha256, sha256, 'the object is the image the build host made');
      assert.equal(object?.sizeBytes, fs.statSync(image).size);
      const { manifest } = await readManifest({ client: s3, config: env.s3 }, 'rootfs-bash.ext4');
      assert.equal(manifest?.sha256, sha256);
      assert.match(manifest?.versions[0] ?? '', /^GNU bash, version 5\.1\./);
    } finally {
      s3.destroy();
    }
    // The staging copy: verified, and sparse again (holes punched after SFTP read them as zeros).
    const st = fs.statSync(staged);
    assert.ok(st.blocks * 512 < st.size / 2, `staged copy takes ${st.blocks * 512} of ${st.size} bytes`);

    const runTag = `ssh-again-${crypto.randomBytes(3).toString('hex')}`;
    const again = await client.workflow.execute(createRootfs, {
      taskQueue: ORCHESTRATOR_TASK_QUEUE,
      workflowId: childWorkflowId(runTag, 'bash'),
      args: [{ language: 'bash', runTag, options, spec: env.spec(['bash'], alias) }],
    });
    assert.deepEqual(again.steps, {
      base: 'reused',
      boot: 'reused',
      runtime: 'reused',
      operator: 'reused',
      verify: 'reused',
      image: 'reused',
      upload: 'reused',
    });
    const after = fs.statSync(staged);
    assert.deepEqual([after.ino, after.mtimeMs], [st.ino, st.mtimeMs], 'the unchanged image was not copied again');
  });

  it('a host key that does not match the pinned fingerprint fails allocate at once with a plain message', async () => {
    const { client } = (await testTemporal()).env;
    const wrong = `SHA256:${crypto.randomBytes(32).toString('base64').replace(/=+$/, '')}`;
    assert.notEqual(wrong, sshd.hostKeySha256);
    // The same sshd named a second time, with a fingerprint that is not its key's, and a worker
    // for that name: the build is for that host, so the worker connects and must refuse.
    const { kind: _kind, alias: _alias, ...target } = buildHost;
    const wrongAlias = `${alias}-wrong`;
    env.writeConfig({ sshHosts: { [alias]: target, [wrongAlias]: { ...target, hostKeySha256: wrong } } });
    const worker = await env.startWorker({ configOptions: { file: env.configFile, sshHost: wrongAlias } });
    const logFrom = sshdLogSize(sshd);
    const runTag = `ssh-wrong-key-${crypto.randomBytes(3).toString('hex')}`;
    const handle = await client.workflow.start(createRootfs, {
      taskQueue: ORCHESTRATOR_TASK_QUEUE,
      workflowId: childWorkflowId(runTag, 'bash'),
      args: [
        {
          language: 'bash',
          runTag,
          options: { ...options, hostTaskQueue: hostTaskQueue(wrongAlias) },
          spec: env.spec(['bash'], wrongAlias),
        },
      ],
    });
    const waiting = await waitFor(
      'the build to await a retry',
      async () => {
        const [p]: LanguageProgress[] = await handle.query(progressQuery);
        return p?.state === 'awaiting-retry' ? p : undefined;
      },
      60_000,
    );
    const failed = waiting.steps.find((s) => s.state === 'awaiting-retry')!;
    assert.equal(failed.name, 'allocate');
    assert.equal(
      failed.error,
      `host key mismatch for ${sshd.user}@127.0.0.1:${sshd.port}: expected ${wrong}, got ${sshd.hostKeySha256} (refusing to connect)`,
    );
    assert.ok(waiting.steps.filter((s) => s.name !== 'allocate').every((s) => s.state === 'pending'));
    // Non-retryable: one attempt, no retries against a host that is not the pinned one.
    assert.deepEqual(await activityRuns(handle, 'allocate'), [1]);
    // The key was refused before authenticating: sshd never accepted our key on that connection.
    assert.deepEqual(sshdConnections(sshd, logFrom), []);

    assert.deepEqual(await handle.executeUpdate(abortUpdate), { language: 'bash', aborted: true });
    await assert.rejects(handle.result(), (err: unknown) => {
      assert.ok(err instanceof WorkflowFailedError);
      assert.match(
        String(err.cause?.message),
        /^bash: aborted by the operator at step allocate: host key mismatch for /,
      );
      return true;
    });
    const [after]: LanguageProgress[] = await handle.query(progressQuery);
    assert.equal(after?.state, 'aborted');
    await worker.stop();
  });
});
