/**
 * Kconfig fragments: the lines `make allnoconfig KCONFIG_ALLCONFIG=<file>` reads. A fragment is
 * kept to plain assignments so that the build can check, option by option, that the final
 * .config says what the fragment asked for.
 */

const ASSIGNMENT = /^(CONFIG_[A-Z0-9_]+)=(y|n|m|-?\d+|0x[0-9a-fA-F]+|"[^"\\\n]*")$/;
const UNSET = /^# (CONFIG_[A-Z0-9_]+) is not set$/;

export const MAX_FRAGMENT_BYTES = 64 * 1024;

/**
 * The string options a fragment may set. Others name files (an initramfs source, firmware, trusted
 * keys) that kbuild would read from the build host and build into a kernel published to the bucket.
 */
const STRING_OPTIONS = new Set([
  'CONFIG_CMDLINE',
  'CONFIG_LOCALVERSION',
  'CONFIG_DEFAULT_HOSTNAME',
  'CONFIG_DEFAULT_INIT',
]);

/** The options a fragment sets, in order: `n` for `# CONFIG_X is not set`. Throws on anything else. */
export function parseFragment(content: string): Map<string, string> {
  if (Buffer.byteLength(content) > MAX_FRAGMENT_BYTES)
    throw new Error(`a kernel config fragment is at most ${MAX_FRAGMENT_BYTES / 1024} KiB`);
  const options = new Map<string, string>();
  content.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    const unset = UNSET.exec(line);
    const set = ASSIGNMENT.exec(line);
    if (unset) options.set(unset[1]!, 'n');
    else if (set) {
      if (set[2] === 'm') throw new Error(`line ${i + 1}: ${set[1]}=m: the guest kernel has no modules`);
      if (set[2]!.startsWith('"') && !STRING_OPTIONS.has(set[1]!)) {
        throw new Error(
          `line ${i + 1}: ${set[1]} takes a string; only ${[...STRING_OPTIONS].join(', ')} may (others, such as ` +
            'CONFIG_INITRAMFS_SOURCE or CONFIG_EXTRA_FIRMWARE, would read files of the build host into the kernel)',
        );
      }
      options.set(set[1]!, set[2]!);
    } else if (line && !line.startsWith('#')) {
      throw new Error(
        `line ${i + 1}: expected CONFIG_NAME=value or "# CONFIG_NAME is not set", got ${JSON.stringify(line.slice(0, 80))}`,
      );
    }
  });
  if (!options.size) throw new Error('the kernel config fragment sets no option');
  return options;
}

/** What a final .config says of each option: `n` when it is unset or absent. */
export function readConfig(text: string): Map<string, string> {
  const options = new Map<string, string>();
  for (const line of text.split('\n')) {
    const set = /^(CONFIG_[A-Z0-9_]+)=(.*)$/.exec(line);
    const unset = UNSET.exec(line);
    if (set) options.set(set[1]!, set[2]!);
    else if (unset) options.set(unset[1]!, 'n');
  }
  return options;
}

/** The options of `fragment` the final config does not honour, as `NAME: wanted y, got n` lines. */
export function unmetOptions(fragment: Map<string, string>, config: Map<string, string>): string[] {
  return [...fragment].flatMap(([name, wanted]) => {
    const got = config.get(name) ?? 'n';
    return got === wanted ? [] : [`${name}: wanted ${wanted}, got ${got}`];
  });
}
