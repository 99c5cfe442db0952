/**
 * Small helpers for the benches' output: medians, and tables with fixed columns that read as
 * markdown (pasted into README/docs as they are) and line up in a terminal.
 */

export function median(values: readonly number[]): number {
  if (!values.length) throw new Error('median of no values');
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

/** Rounds for the JSON line: figures, not noise. */
export const round = (n: number, digits = 3): number => Number(n.toFixed(digits));

export const seconds = (s: number): string => `${s.toFixed(2)} s`;
export const ratio = (r: number): string => `${r.toFixed(2)}×`;
export const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(0)} MiB`;

/**
 * A markdown table whose columns are padded to their widest cell: text left-aligned, and
 * columns named in `right` (numbers) right-aligned.
 */
export function table(
  header: readonly string[],
  rows: readonly (readonly string[])[],
  right: ReadonlySet<number>,
): string {
  for (const row of rows)
    if (row.length !== header.length) throw new Error(`a row of ${row.length} cells under ${header.length} columns`);
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => r[i]!.length)));
  const cell = (text: string, i: number) => (right.has(i) ? text.padStart(widths[i]!) : text.padEnd(widths[i]!));
  const line = (cells: readonly string[]) => `| ${cells.map(cell).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (right.has(i) ? `${'-'.repeat(w + 1)}:` : `${'-'.repeat(w + 2)}`)).join('|')}|`;
  return [line(header), rule, ...rows.map(line)].join('\n');
}
