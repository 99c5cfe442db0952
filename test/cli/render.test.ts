import { strict as assert } from 'node:assert';
import { progressTable, summaryTable } from '../../src/cli/build';
import { clock, lineReporter, renderLive } from '../../src/cli/watch';
import type { LanguageProgress, StepProgress } from '../../workflows/types';
import { STEPS } from '../../workflows/types';

const T0 = Date.parse('2026-11-23T10:00:00Z');
const at = (s: number) => new Date(T0 + s * 1000).toISOString();

function progress(
  language: string,
  states: Partial<Record<(typeof STEPS)[number], Partial<StepProgress>>>,
  state: LanguageProgress['state'] = 'running',
): LanguageProgress {
  return {
    language,
    workflowId: `run/${language}`,
    state,
    steps: STEPS.map((name) => ({ name, state: 'pending', attempts: 0, ...states[name] })),
  };
}

const python = progress('python', {
  allocate: { state: 'done', attempts: 1, startedAt: at(0), durationMs: 100 },
  base: { state: 'reused', attempts: 1, startedAt: at(1), durationMs: 300 },
  runtime: { state: 'running', attempts: 2, startedAt: at(5) },
});
const rust = progress(
  'rust',
  {
    allocate: { state: 'done', attempts: 1, startedAt: at(0), durationMs: 100 },
    base: { state: 'done', attempts: 1, startedAt: at(1), durationMs: 20_000 },
    runtime: {
      state: 'awaiting-retry',
      attempts: 3,
      startedAt: at(22),
      durationMs: 1500,
      error: 'download failed: 503\nmore detail',
    },
  },
  'awaiting-retry',
);

describe('CLI rendering', () => {
  it('the live block: a bar per language, the step, elapsed time, heartbeat or the waiting error', () => {
    const lines = renderLive(
      [python, rust, progress('go', {}, 'pending')],
      T0 + 47_000,
      new Map([['python', 'apt-get: Unpacking python3.10']]),
      120,
    );
    assert.equal(
      lines[0],
      'python   [#####---------------] 2/8  install runtime           0:47  apt-get: Unpacking python3.10',
    );
    assert.equal(
      lines[1],
      'rust     [#####---------------] 2/8  install runtime           0:47  waiting for retry: download failed: 503',
    );
    assert.equal(lines[2], 'go       [--------------------] 0/8  pending');
    for (const l of renderLive([python], T0, new Map([['python', 'x'.repeat(500)]]), 80)) assert.equal(l.length, 80);
    const finished = progress(
      'bash',
      Object.fromEntries(
        STEPS.map((s, i) => [s, { state: 'done', attempts: 1, startedAt: at(i * 10), durationMs: 5000 }]),
      ),
      'done',
    );
    assert.match(
      renderLive([finished], T0 + 3_600_000)[0]!,
      /\[#{20}\] 8\/8 {2}done +1:15$/,
      'a finished build keeps its own duration',
    );
    assert.equal(clock(61_999), '1:01');
  });

  it('append-only lines: one per step change, the error and how to resume once', () => {
    const out: string[] = [];
    const report = lineReporter((l) => out.push(l), 'rootfs resume run/all');
    report([python, rust]);
    report([python, rust]);
    assert.deepEqual(out, [
      'python   allocate workspace       done (0.1 s)',
      'python   debootstrap base         reused (0.3 s)',
      'python   install runtime          running',
      'rust     allocate workspace       done (0.1 s)',
      'rust     debootstrap base         done (20.0 s)',
      'rust     install runtime          awaiting-retry: download failed: 503',
      '         rootfs resume run/all',
    ]);
  });

  it('status of a running build: every step with state, time, attempts and error', () => {
    const table = progressTable([rust], T0 + 30_000).split('\n');
    assert.equal(table[0], 'rust  awaiting-retry (2/8 steps)  run/rust');
    assert.equal(table[2], '  debootstrap base         done            20.0 s');
    assert.equal(
      table[3],
      '  install runtime          awaiting-retry  1.5 s         3 attempts  error: download failed: 503',
    );
    assert.match(progressTable([python], T0 + 30_000), /install runtime +running +0:25 so far +2 attempts$/m);
  });

  it('the summary: image, size, digest, versions, each step ran or reused with its time, and why an image did not finish', () => {
    const text = summaryTable({
      runTag: 'run',
      images: [
        {
          language: 'go',
          workflowId: 'run/go',
          state: 'done',
          path: '/srv/firecracker/images/rootfs-go.ext4',
          sizeBytes: 1.5 * 1024 ** 3,
          sha256: 'ab'.repeat(32),
          versions: ['go version go1.22.3 linux/amd64'],
          bootMs: 7_250,
          steps: { base: 'reused', runtime: 'ran', boot: 'ran', upload: 'skipped' },
          durationsMs: { base: 40, runtime: 61_000, boot: 9_000 },
        },
        {
          language: 'rust',
          workflowId: 'run/rust',
          state: 'aborted',
          versions: [],
          steps: {},
          error: 'rust: aborted by the operator at step runtime: checksum mismatch\nsecond line',
        },
      ],
      kernel: {
        workflowId: 'run/kernel',
        state: 'done',
        sha256: 'cd'.repeat(32),
        sizeBytes: 21.9 * 1024 ** 2,
        release: '6.1.192',
        source: 'linux-source-6.1 6.1.192-2',
        steps: { 'kernel-source': 'reused', 'kernel-config': 'reused', 'kernel-build': 'ran', 'kernel-upload': 'ran' },
        durationsMs: { 'kernel-build': 330_000 },
      },
      bucket: { bucket: 'b', objects: 3, totalBytes: 2048 },
    });
    assert.equal(
      text,
      [
        'language image                      size        sha256        steps',
        'go       rootfs-go.ext4                1.5 GiB  abababababab  2 ran, 1 reused',
        '         go version go1.22.3 linux/amd64; booted to /health in 7.3 s',
        '         base reused 0.0 s · runtime ran 61.0 s · boot ran 9.0 s · upload skipped',
        'rust     -                                   -  -             0 ran, 0 reused',
        '         aborted: rust: aborted by the operator at step runtime: checksum mismatch',
        'kernel   vmlinux                      21.9 MiB  cdcdcdcdcdcd  Linux 6.1.192 (linux-source-6.1 6.1.192-2)',
        '         source reused · config reused · build ran 330.0 s · upload ran',
        'bucket b: 3 objects, 2.0 KiB',
      ].join('\n'),
    );
  });
});
