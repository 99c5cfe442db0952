import { humanSize } from './format';

export type TransferAction = 'upload' | 'download' | 'checksum';

export interface TransferStatus {
  key: string;
  action: TransferAction;
  doneBytes: number;
  totalBytes: number;
  elapsedMs: number;
  bytesPerSecond: number;
  /** Seconds left at the current rate; undefined until there is a rate. */
  etaSeconds?: number;
  /** The last report of this transfer. */
  finished: boolean;
}

/**
 * Where transfers report progress; the CLI renders it (see `terminalProgress`). Only transfers
 * that last longer than a second are reported, at most a few times a second, and each reported
 * transfer ends with one `finished` status.
 */
export type ProgressSink = (status: TransferStatus) => void;

export const QUIET_AFTER_MS = 1000;
export const REPORT_EVERY_MS = 250;

export interface Transfer {
  add(bytes: number): void;
  end(): void;
}

/** Starts tracking one transfer; `now` is injectable for tests. */
export function track(
  sink: ProgressSink | undefined,
  key: string,
  action: TransferAction,
  totalBytes: number,
  now: () => number = Date.now,
): Transfer {
  if (!sink) return { add() {}, end() {} };
  const started = now();
  let done = 0;
  let lastReport = 0;
  let reported = false;
  const status = (finished: boolean): TransferStatus => {
    const elapsedMs = Math.max(1, now() - started);
    const bytesPerSecond = (done / elapsedMs) * 1000;
    const etaSeconds = bytesPerSecond > 0 ? Math.max(0, (totalBytes - done) / bytesPerSecond) : undefined;
    return { key, action, doneBytes: done, totalBytes, elapsedMs, bytesPerSecond, etaSeconds, finished };
  };
  return {
    add(bytes) {
      done += bytes;
      const t = now();
      if (t - started < QUIET_AFTER_MS || t - lastReport < REPORT_EVERY_MS) return;
      lastReport = t;
      reported = true;
      sink(status(false));
    },
    end() {
      if (reported || now() - started >= QUIET_AFTER_MS) sink(status(true));
    },
  };
}

function clock(seconds: number): string {
  const s = Math.round(seconds);
  return s < 60
    ? `${s}s`
    : s < 3600
      ? `${Math.floor(s / 60)}m${String(s % 60).padStart(2, '0')}s`
      : `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`;
}

/** `upload rootfs-python.ext4  512.0 MiB / 2.0 GiB  25%  310.4 MiB/s  ETA 5s` */
export function formatTransfer(s: TransferStatus): string {
  const pct = s.totalBytes > 0 ? Math.floor((s.doneBytes / s.totalBytes) * 100) : 100;
  const tail = s.finished
    ? `in ${clock(s.elapsedMs / 1000)}`
    : `ETA ${s.etaSeconds === undefined ? '?' : clock(s.etaSeconds)}`;
  return `${s.action} ${s.key}  ${humanSize(s.doneBytes)} / ${humanSize(s.totalBytes)}  ${pct}%  ${humanSize(s.bytesPerSecond)}/s  ${tail}`;
}

/** A one-line, redrawn progress display on a terminal; nothing at all when `stream` is not a TTY. */
export function terminalProgress(stream: NodeJS.WriteStream = process.stderr): ProgressSink {
  if (!stream.isTTY) return () => {};
  return (s) => stream.write(`\r\x1b[K${formatTransfer(s)}${s.finished ? '\n' : ''}`);
}
