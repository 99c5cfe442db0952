/** Human sizes the way `aws s3 ls --human-readable` prints them. */
export function humanSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} Bytes`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = bytes / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(1)} ${units[i]}`;
}

/** Where transfers report progress; the CLI renders it, tests count it. */
export interface TransferProgress {
  start(name: string, totalBytes: number): void;
  advance(name: string, bytes: number): void;
  finish(name: string, note: string): void;
}

export const silentProgress: TransferProgress = { start() {}, advance() {}, finish() {} };

/**
 * One line per transfer on a TTY (bytes, rate, ETA), redrawn at most 4 times a second and only
 * once the transfer has taken a second; nothing but the final line when not a TTY.
 */
export function terminalProgress(stream: NodeJS.WriteStream = process.stderr): TransferProgress {
  const state = new Map<string, { total: number; done: number; started: number; drawn: number }>();
  const tty = stream.isTTY === true;
  return {
    start(name, total) {
      state.set(name, { total, done: 0, started: Date.now(), drawn: 0 });
    },
    advance(name, bytes) {
      const s = state.get(name);
      if (!s) return;
      s.done += bytes;
      const now = Date.now();
      if (!tty || now - s.started < 1000 || now - s.drawn < 250) return;
      s.drawn = now;
      const rate = s.done / ((now - s.started) / 1000);
      const eta = rate > 0 ? Math.max(0, (s.total - s.done) / rate) : 0;
      const pct = s.total ? Math.floor((s.done / s.total) * 100) : 100;
      stream.write(`\r\x1b[K${name}: ${humanSize(s.done)} / ${humanSize(s.total)} (${pct}%) ${humanSize(rate)}/s ETA ${Math.ceil(eta)} s`);
    },
    finish(name, note) {
      const s = state.get(name);
      state.delete(name);
      const secs = s ? (Date.now() - s.started) / 1000 : 0;
      stream.write(`${tty ? '\r\x1b[K' : ''}${name}: ${note}${secs >= 1 ? ` in ${secs.toFixed(1)} s` : ''}\n`);
    },
  };
}
