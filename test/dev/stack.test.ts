import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as path from 'node:path';
import { Connection } from '@temporalio/client';
import { HeadBucketCommand, S3Client } from '@aws-sdk/client-s3';
import { DevStack, type DevPorts } from '../../src/dev/stack';
import {
  describeListeners,
  isRecordedProcess,
  listensOn,
  loopbackListeners,
  readPidFile,
  recordProcess,
  startTimeOf,
} from '../../src/dev/process-identity';
import {
  ensureBackgroundWorker,
  listBackgroundWorkers,
  stopBackgroundWorkers,
  waitForPoller,
} from '../../src/cli/background-worker';
import { resolveRuntime } from '../../src/cli/runtime';
import { requireTool, toolPaths } from '../../src/setup/tools';
import { hostTaskQueue } from '../../worker';
import { projectRoot } from '../../src/util/paths';
import { freePort, onCleanup, tempDir } from '../support/process';
import { testTemporal } from '../support/temporal';
import { rootfs } from '../support/cli';

/** A process that is not ours in any way, killed at cleanup. */
function sleeper(): ChildProcess {
  const child = spawn('sleep', ['60'], { stdio: 'ignore' });
  onCleanup(() => void child.kill('SIGKILL'));
  return child;
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
const alive = (child: ChildProcess) =>
  child.exitCode === null && child.signalCode === null && fs.existsSync(`/proc/${child.pid}`);

/**
 * A plain node TCP server in its own process on 127.0.0.1:`port`, standing in for whatever holds
 * the stack's port. It prints `ready`, then `connection` for every connection it gets.
 */
async function foreignListener(port: number): Promise<{ child: ChildProcess; output: () => string }> {
  const script = `require('net').createServer((s) => { console.log('connection'); s.destroy(); })
    .listen(Number(process.argv[1]), '127.0.0.1', () => console.log('ready'));`;
  const child = spawn(process.execPath, ['-e', script, String(port)], { stdio: ['ignore', 'pipe', 'inherit'] });
  onCleanup(() => void child.kill('SIGKILL'));
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  const deadline = Date.now() + 10_000;
  while (!out.includes('ready')) {
    if (Date.now() > deadline || child.exitCode !== null) throw new Error(`the foreign listener did not start: ${out}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  return { child, output: () => out };
}

/** A config file that leaves Temporal at the embedded stack's address (here on a test port). */
function configAt(dir: string, port: number): string {
  const file = path.join(dir, 'rootfs.yaml');
  fs.writeFileSync(file, `temporal:\n  address: 127.0.0.1:${port}\n`);
  return file;
}

async function freePorts(): Promise<DevPorts> {
  return {
    temporal: await freePort(),
    temporalUi: await freePort(),
    s3: await freePort(),
    s3Console: await freePort(),
  };
}

describe('process identity', () => {
  it('knows a recorded process by its start time and command line, and a listener by its socket', async () => {
    const sleep = sleeper();
    const rec = recordProcess(sleep.pid!, ['sleep', '60']);
    assert.match(rec.startTime, /^\d+$/);
    assert.equal(
      isRecordedProcess(rec, () => true),
      true,
    );
    assert.equal(
      isRecordedProcess(rec, (argv) => argv[0] === 'temporal'),
      false,
      "the caller's command-line test applies",
    );
    assert.equal(
      isRecordedProcess({ ...rec, startTime: String(Number(rec.startTime) + 1) }, () => true),
      false,
      'another start time: a recycled pid',
    );
    assert.equal(
      isRecordedProcess({ ...rec, argv: ['sleep', '61'] }, () => true),
      false,
      'another command line',
    );
    assert.equal(
      isRecordedProcess({ pid: rec.pid }, (argv) => argv[0] === 'sleep'),
      true,
      'a bare pid from older code: the command line decides',
    );

    const server = net.createServer();
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    try {
      const { port } = server.address() as net.AddressInfo;
      assert.equal(loopbackListeners(port).length, 1);
      assert.equal(listensOn(process.pid, port), true);
      assert.equal(listensOn(sleep.pid!, port), false);
      assert.match(describeListeners(port), new RegExp(`^pid ${process.pid} \\(.*node.* on 127\\.0\\.0\\.1:${port}$`));
    } finally {
      server.close();
    }
    sleep.kill('SIGKILL');
    await new Promise((r) => sleep.once('exit', r));
    assert.equal(
      isRecordedProcess(rec, () => true),
      false,
      'gone',
    );
  });
});

describe('embedded dev stack', function () {
  this.timeout(180_000);

  it('refuses a port held by another process, naming it, and sends it nothing', async () => {
    const ports = await freePorts();
    const dir = tempDir('stack-foreign');
    const stack = new DevStack(dir, { ports });
    onCleanup(() => stack.down().then(() => undefined));
    const temporal = await foreignListener(ports.temporal);
    const s3 = await foreignListener(ports.s3);
    // A pid file left from an earlier server, its pid now an unrelated process.
    const unrelated = sleeper();
    fs.writeFileSync(
      path.join(dir, 'temporal.pid'),
      JSON.stringify(recordProcess(unrelated.pid!, [toolPaths().temporal, 'server', 'start-dev'])),
    );

    await assert.rejects(stack.temporal(), (err: Error) => {
      assert.match(
        err.message,
        new RegExp(
          `^127\\.0\\.0\\.1:${ports.temporal} is held by pid ${temporal.child.pid} \\(${escape(process.execPath)} -e `,
        ),
      );
      assert.match(
        err.message,
        /not by the local Temporal dev server that rootfs started under .*: refusing to send it builds/,
      );
      return true;
    });
    await assert.rejects(stack.s3('rootfs-test'), (err: Error) => {
      assert.match(err.message, new RegExp(`^127\\.0\\.0\\.1:${ports.s3} is held by pid ${s3.child.pid} `));
      assert.match(err.message, /refusing to send it the local S3 credentials and images/);
      return true;
    });
    // A command finds Temporal through the same check.
    await assert.rejects(
      resolveRuntime(configAt(dir, ports.temporal), { needS3: false, log: () => {}, stack }),
      /is held by pid \d+ .*refusing to send it builds/,
    );
    assert.equal(
      temporal.output().includes('connection') || s3.output().includes('connection'),
      false,
      'nothing connected to them',
    );
    assert.equal(alive(unrelated), true, 'the unrelated process is untouched');
    assert.equal(fs.existsSync(path.join(dir, 'temporal.pid')), false, 'the stale pid file is gone');
    assert.match(
      stack.status().temporal,
      new RegExp(`^not ours: 127\\.0\\.0\\.1:${ports.temporal} is held by pid ${temporal.child.pid} `),
    );
  });

  it('@real starts its servers, reuses them (also from a bare pid file of older code), and stops them', async () => {
    const ports = await freePorts();
    const dir = tempDir('stack-ours');
    const stack = new DevStack(dir, { ports });
    onCleanup(() => stack.down().then(() => undefined));

    const first = await stack.temporal();
    assert.equal(first.started, true);
    const again = await new DevStack(dir, { ports }).temporal();
    assert.deepEqual(again, { ...first, started: false });
    const conn = await Connection.connect({ address: again.address, connectTimeout: 5000 });
    await conn.workflowService.getSystemInfo({});
    await conn.close();
    const log: string[] = [];
    const rt = await resolveRuntime(configAt(dir, ports.temporal), { needS3: false, log: (l) => log.push(l), stack });
    assert.deepEqual(
      [rt.address, rt.uiUrl, rt.embedded.temporal, log],
      [first.address, first.uiUrl, true, ['using the local Temporal dev server']],
    );
    const rec = readPidFile(path.join(dir, 'temporal.pid'));
    assert.ok(rec && rec !== 'invalid' && rec.startTime === startTimeOf(rec.pid));
    assert.equal(stack.status().temporal, `up (pid ${rec.pid})`);
    // Older code wrote the bare pid: still recognised by its command line and socket, then recorded in full.
    fs.writeFileSync(path.join(dir, 'temporal.pid'), String(rec.pid));
    assert.equal((await stack.temporal()).started, false);
    assert.deepEqual(readPidFile(path.join(dir, 'temporal.pid')), rec);

    const s3 = await stack.s3('rootfs-test');
    assert.equal(s3.started, true);
    const s3Again = await new DevStack(dir, { ports }).s3('rootfs-test');
    assert.deepEqual(s3Again, { ...s3, started: false });
    const client = new S3Client({ endpoint: s3.endpoint, region: 'us-east-1', forcePathStyle: true, credentials: s3 });
    await client.send(new HeadBucketCommand({ Bucket: 'rootfs-test' }));
    client.destroy();

    const notes: string[] = [];
    assert.deepEqual(await stack.down((l) => notes.push(l)), ['temporal', 's3']);
    assert.deepEqual(notes, []);
    // Gone (or a zombie until this test process, its parent here, reaps it).
    assert.equal(
      isRecordedProcess(rec, () => true),
      false,
      'the Temporal server is gone',
    );
    assert.deepEqual([loopbackListeners(ports.temporal), loopbackListeners(ports.s3)], [[], []]);
    assert.deepEqual(stack.status(), { temporal: 'down', s3: 'down' });
  });

  it('dev down signals no pid that is not ours any more, and says which pid files it removed', async () => {
    const state = tempDir('stack-down');
    const [a, b, c] = [sleeper(), sleeper(), sleeper()];
    // A recycled pid: the record's start time is the new process's, the command line is not.
    fs.writeFileSync(
      path.join(state, 'temporal.pid'),
      JSON.stringify({ ...recordProcess(a.pid!, ['x']), argv: [toolPaths().temporal, 'server', 'start-dev'] }),
    );
    fs.mkdirSync(path.join(state, 's3'));
    fs.writeFileSync(path.join(state, 's3', 'minio.pid'), String(b.pid)); // older code's bare pid
    const worker = path.join(state, 'workers', 'cli-test-12345678');
    fs.mkdirSync(worker, { recursive: true });
    fs.writeFileSync(
      path.join(worker, 'worker.json'),
      JSON.stringify({
        pid: c.pid,
        stamp: 'x',
        address: '127.0.0.1:1',
        namespace: 'default',
        alias: 'cli-test',
        startedAt: '',
      }),
    );
    fs.writeFileSync(path.join(worker, 'worker.log'), 'kept\n');

    const down = await rootfs(['dev', 'down'], { ROOTFS_STATE_DIR: state });
    assert.equal(down.code, 0, down.stderr);
    assert.equal(down.stdout.trim(), 'stopped: nothing');
    assert.match(
      down.stderr,
      new RegExp(
        `local Temporal dev server: removed the stale pid file .*temporal\\.pid \\(pid ${a.pid} is now another process \\(sleep 60\\)\\); signalled nothing`,
      ),
    );
    assert.match(
      down.stderr,
      new RegExp(
        `local S3 server: removed the stale pid file .*minio\\.pid \\(pid ${b.pid} is now another process \\(sleep 60\\)\\)`,
      ),
    );
    assert.match(
      down.stderr,
      new RegExp(
        `worker cli-test: removed the stale record .*worker\\.json \\(pid ${c.pid} is now another process \\(sleep 60\\)\\)`,
      ),
    );
    await new Promise((r) => setTimeout(r, 300));
    assert.deepEqual([a, b, c].map(alive), [true, true, true], 'no sleep was signalled');
    assert.deepEqual(
      ['temporal.pid', 's3/minio.pid', `${worker}/worker.json`].map((f) => fs.existsSync(path.resolve(state, f))),
      [false, false, false],
    );
    assert.equal(fs.readFileSync(path.join(worker, 'worker.log'), 'utf8'), 'kept\n');
  });

  it('stops a recorded background worker only while it is the recorded process', async () => {
    const state = tempDir('stack-workers');
    // Stand-ins whose command lines look like a worker's (`<cli> worker`): only the record tells them apart.
    const argvTail = [
      '-e',
      'setTimeout(() => {}, 60_000)',
      path.join(projectRoot(), 'dist', 'src', 'cli', 'main.js'),
      'worker',
    ];
    const start = () => {
      const child = spawn(process.execPath, argvTail, { stdio: 'ignore' });
      onCleanup(() => void child.kill('SIGKILL'));
      return child;
    };
    const [ours, recycled] = [start(), start()];
    await new Promise((r) => setTimeout(r, 200));
    const write = (name: string, rec: object) => {
      fs.mkdirSync(path.join(state, 'workers', name), { recursive: true });
      fs.writeFileSync(
        path.join(state, 'workers', name, 'worker.json'),
        JSON.stringify({ ...rec, stamp: 'x', address: 'a:1', namespace: 'n', alias: name, startedAt: '' }),
      );
    };
    write('ours', recordProcess(ours.pid!, [process.execPath, ...argvTail]));
    write('recycled', { ...recordProcess(recycled.pid!, [process.execPath, ...argvTail]), startTime: '1' });

    const notes: string[] = [];
    const stopped = await stopBackgroundWorkers(10_000, state, (l) => notes.push(l));
    assert.deepEqual(
      stopped.map((w) => w.alias),
      ['ours'],
    );
    if (ours.exitCode === null && ours.signalCode === null) await new Promise((r) => ours.once('exit', r));
    assert.equal(ours.signalCode, 'SIGTERM');
    assert.equal(alive(recycled), true, 'a process that is not the recorded one keeps running');
    assert.equal(notes.length, 1);
    assert.match(
      notes[0]!,
      new RegExp(`^worker recycled: removed the stale record .* \\(pid ${recycled.pid} is now another process \\(`),
    );
  });

  it('@real knows a real background worker by its record: reuses it, then stops it', async () => {
    const temporal = await testTemporal();
    const dir = tempDir('stack-worker');
    const state = path.join(dir, 'state');
    const config = path.join(dir, 'rootfs.yaml');
    fs.writeFileSync(
      config,
      [
        `workspace: ${path.join(dir, 'workspace')}`,
        `operator: { path: ${requireTool('referenceOperator')} }`,
        'buildHost: { kind: local, alias: stack-test }',
        `temporal: { address: "${temporal.address}", namespace: ${temporal.namespace} }`,
        // Never contacted: the worker runs no build here.
        's3: { bucket: stack-test, endpoint: "http://127.0.0.1:1" }',
        '',
      ].join('\n'),
    );
    const saved = process.env.ROOTFS_STATE_DIR;
    process.env.ROOTFS_STATE_DIR = state;
    onCleanup(() => stopBackgroundWorkers(10_000, state).then(() => undefined));
    try {
      const target = {
        configFile: config,
        address: temporal.address,
        namespace: temporal.namespace,
        alias: 'stack-test',
      };
      const worker = ensureBackgroundWorker(target);
      assert.equal(worker.started, true);
      assert.equal(
        await waitForPoller(temporal.env.client, temporal.namespace, hostTaskQueue('stack-test'), worker),
        true,
        'the worker polls',
      );
      // Its record matches the live process (start time and command line as /proc shows them).
      assert.deepEqual(ensureBackgroundWorker(target), {
        pid: worker.pid,
        log: worker.log,
        started: false,
        startTime: worker.startTime,
        argv: worker.argv,
      });
      assert.deepEqual(
        listBackgroundWorkers(state).map((w) => [w.alias, w.running]),
        [['stack-test', true]],
      );
      const stopped = await stopBackgroundWorkers(30_000, state);
      assert.deepEqual(
        stopped.map((w) => w.pid),
        [worker.pid],
      );
      assert.equal(
        fs.existsSync(`/proc/${worker.pid}/cmdline`) && fs.readFileSync(`/proc/${worker.pid}/cmdline`, 'utf8') !== '',
        false,
        'the worker is gone',
      );
    } finally {
      if (saved === undefined) delete process.env.ROOTFS_STATE_DIR;
      else process.env.ROOTFS_STATE_DIR = saved;
    }
  });
});
