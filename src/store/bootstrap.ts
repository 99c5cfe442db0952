import { HttpUrl, NAME_PATTERN, Sha256Hex, type S3Config } from '../config/schema';
import type { S3Access } from './client';
import { StoreError, where } from './errors';
import {
  DEFAULT_LANGUAGE,
  DEFAULT_LINK,
  IMAGE_KEY_PATTERN,
  KERNEL_KEY,
  MANIFEST_SUFFIX,
  MAX_MANIFEST_BYTES,
  OLD_LINK,
} from './layout';
import { HEADS_PREFIX } from './blocks/format';
import { FETCHER_PREFIX } from './blocks/tools';
import { listBucket } from './list';

export interface BootstrapConfig {
  s3: S3Config;
  workspace: string;
  /** The configured languages (a Config's `languages` record or their names): what a fallback source is asked for. */
  languages: Readonly<Record<string, unknown>> | readonly string[];
}

export interface BootstrapOptions {
  /**
   * Where to fetch from when the bucket has no images: an https URL base serving `vmlinux`,
   * `rootfs-<lang>.ext4` and, to verify them, `SHA256SUMS` (as `sha256sum` prints it).
   */
  fallbackUrl?: string;
  defaultLanguage?: string;
  /**
   * The sha256 each key must have (`vmlinux`, `rootfs-<lang>.ext4`), from `bucketPins`. With
   * pins the script installs exactly these contents: an object swapped later, in the bucket or
   * at the fallback, is refused, and the bucket's other images are skipped.
   */
  pins?: Readonly<Record<string, string>>;
  /**
   * The sha256 of the block store fetcher (fetcher/, published beside the block store): with it
   * the script syncs from the block store, fetching only compressed blocks, and falls back to the
   * plain objects when the bucket lacks that fetcher or its sync fails.
   */
  fetcherSha256?: string;
}

export interface BucketPins {
  /** Key -> sha256, from each object's manifest. */
  pins: Record<string, string>;
  /** Kernel or image objects that cannot be pinned, and why (no usable manifest, size differs). */
  problems: string[];
}

/**
 * The sha256 of the kernel and every image in the bucket, as their manifests say, to pin into a
 * bootstrap script. An object whose manifest is missing, unusable or of another size is a problem.
 */
export async function bucketPins(target: S3Access): Promise<BucketPins> {
  const listing = await listBucket(target);
  const pins: Record<string, string> = {};
  const problems: string[] = [];
  // A plain object the script may fall back to must be verifiable, whatever the block store holds.
  for (const o of listing.objects) {
    if (o.kind !== 'kernel' && o.kind !== 'image') continue;
    const at = where(target.config, o.key);
    if (!o.manifest) problems.push(`${at}: ${o.manifestProblem ?? 'it has no manifest'}`);
    else if (o.manifest.sizeBytes !== o.sizeBytes) {
      problems.push(`${at}: the object has ${o.sizeBytes} bytes but its manifest says ${o.manifest.sizeBytes}`);
    } else pins[o.key] = o.manifest.sha256;
  }
  // The block store's current version wins: a rollback moves it, not the plain object.
  for (const head of listing.blockStore?.heads ?? []) {
    pins[head.key] = head.versions.find((v) => v.index === head.current)!.sha256;
  }
  return { pins, problems };
}

/** Single-quoted for bash; every value in the script goes through this. */
export const shellQuote = (s: string): string => `'${s.replace(/'/g, `'\\''`)}'`;

/**
 * The fallback source as the script uses it, or why it cannot be: https only (what comes from it
 * is installed as root on new hosts), no `user:password@` (the script is readable user-data), no
 * query or fragment (file names are appended to it).
 */
export function fallbackBase(url: string): string {
  const shown = JSON.stringify(url).slice(0, 80);
  const refuse = (why: string) => new StoreError('invalid-input', `The fallback source ${shown} ${why}.`);
  // Credentials first: the URL schema refuses them too, but this says why it matters here.
  if (URL.canParse(url) && (new URL(url).username || new URL(url).password)) {
    throw refuse('carries credentials (user:password@), readable by anyone who can read the script');
  }
  if (!HttpUrl.safeParse(url).success) throw refuse('is not an https URL');
  const u = new URL(url);
  if (u.protocol !== 'https:') {
    throw refuse(
      'is not an https URL: what the script fetches from it is installed on new hosts, so it must not be open to change in transit',
    );
  }
  if (u.search || u.hash)
    throw refuse('has a ?query or #fragment: it must be a base URL that file names are appended to');
  return url.replace(/\/+$/, '');
}

/** The URL of the bucket that object keys are appended to, path-style or virtual-hosted as configured. */
export function bucketUrl(s3: S3Config): string {
  if (s3.endpoint) {
    const u = new URL(s3.endpoint);
    const base = `${u.protocol}//${u.host}${u.pathname.replace(/\/+$/, '')}`;
    return s3.forcePathStyle
      ? `${base}/${s3.bucket}`
      : `${u.protocol}//${s3.bucket}.${u.host}${u.pathname.replace(/\/+$/, '')}`;
  }
  // Dotted names do not match the wildcard TLS certificate of virtual-hosted URLs.
  return s3.forcePathStyle || s3.bucket.includes('.')
    ? `https://s3.${s3.region}.amazonaws.com/${s3.bucket}`
    : `https://${s3.bucket}.s3.${s3.region}.amazonaws.com`;
}

/**
 * The bash script a new build host runs at first boot (cloud-init user-data). It needs only
 * bash, curl (7.75 or later, for `--aws-sigv4`) and coreutils, so it works before anything
 * is installed. It syncs like `download`: every `rootfs-<lang>.ext4` and `vmlinux` whose
 * manifest's sha256 differs from the local file is downloaded (sparse) to a temp file, checked
 * and renamed into place; then `<workspace>/rootfs.ext4` points at `images/rootfs-python.ext4`. When the
 * bucket has no images it fetches from `fallbackUrl` instead (https only, redirects included),
 * saying so in the log. Every file is checked against a sha256 (the manifest's, the fallback's
 * `SHA256SUMS`, or the one pinned in the script) and not installed without one that matches;
 * any such file makes the exit 1.
 *
 * Credentials come from AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and AWS_SESSION_TOKEN in the
 * environment and reach curl through a config on a pipe, never its argv; without them the
 * requests are unsigned (a public bucket). S3_BUCKET_URL, S3_REGION, ROOTFS_WORKSPACE and
 * ROOTFS_FALLBACK_URL (https only, else the script stops with exit 2) override the values written
 * into the script; curl's own CURL_CA_BUNDLE names the CAs it trusts.
 */
export function bootstrapScript(config: BootstrapConfig, opts: BootstrapOptions = {}): string {
  const languages = (
    Array.isArray(config.languages) ? [...config.languages] : Object.keys(config.languages)
  ) as string[];
  const defaultLanguage = opts.defaultLanguage ?? DEFAULT_LANGUAGE;
  for (const name of [...languages, defaultLanguage]) {
    if (!NAME_PATTERN.test(name))
      throw new StoreError('invalid-input', `${JSON.stringify(name).slice(0, 60)} is not a language name.`);
  }
  const fallback = opts.fallbackUrl === undefined ? '' : fallbackBase(opts.fallbackUrl);
  const pins = Object.entries(opts.pins ?? {}).sort(([a], [b]) =>
    a === KERNEL_KEY ? -1 : b === KERNEL_KEY ? 1 : a.localeCompare(b),
  );
  for (const [key, sha256] of pins) {
    if (key !== KERNEL_KEY && !IMAGE_KEY_PATTERN.test(key)) {
      throw new StoreError(
        'invalid-input',
        `Cannot pin ${JSON.stringify(key).slice(0, 60)}: not a kernel or image key.`,
      );
    }
    if (!Sha256Hex.safeParse(sha256).success) {
      throw new StoreError(
        'invalid-input',
        `Cannot pin ${key}: ${JSON.stringify(sha256).slice(0, 80)} is not a sha256.`,
      );
    }
  }
  if (opts.fetcherSha256 !== undefined && !Sha256Hex.safeParse(opts.fetcherSha256).success) {
    throw new StoreError(
      'invalid-input',
      `${JSON.stringify(opts.fetcherSha256).slice(0, 80)} is not the sha256 of a fetcher.`,
    );
  }
  const vars = [
    `S3_BUCKET=${shellQuote(config.s3.bucket)}`,
    `FETCHER_SHA256=${shellQuote(opts.fetcherSha256 ?? '')}`,
    `DEFAULT_LANGUAGE=${shellQuote(defaultLanguage)}`,
    `S3_BUCKET_URL=\${S3_BUCKET_URL:-${shellQuote(bucketUrl(config.s3))}}`,
    `S3_REGION=\${S3_REGION:-${shellQuote(config.s3.region)}}`,
    `WORKSPACE=\${ROOTFS_WORKSPACE:-${shellQuote(config.workspace)}}`,
    `FALLBACK_URL=\${ROOTFS_FALLBACK_URL:-${shellQuote(fallback)}}`,
    `LANGUAGES=${shellQuote(languages.join(' '))}`,
    `LINK_TARGET=${shellQuote(`images/rootfs-${defaultLanguage}.ext4`)}`,
    pins.length
      ? `# Pinned: the sha256 of each object as the bucket's manifests said when this script was made.\n` +
        `# Only these contents are installed; make the script again after publishing new images.\n` +
        `declare -A PINNED=(\n${pins.map(([k, v]) => `  [${shellQuote(k)}]=${shellQuote(v)}\n`).join('')})`
      : "# Not pinned: the sums come from the bucket's manifests and the fallback's SHA256SUMS at run time.\ndeclare -A PINNED=()",
    `PINNED_KEYS=${shellQuote(pins.map(([k]) => k).join(' '))}`,
  ];
  return `#!/bin/bash
# Generated by rootfs-pipeline (bootstrapScript). Syncs the Firecracker kernel and root
# filesystem images from s3://${config.s3.bucket} into the workspace of a new build host and
# links ${DEFAULT_LINK} to the python image; falls back to a plain URL when the bucket has no images.
# Needs bash, curl >= 7.75 and coreutils. Credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
# (and AWS_SESSION_TOKEN) from the environment; without them requests are unsigned.
# The fallback is fetched over https only; CURL_CA_BUNDLE names other CAs to trust.
set -euo pipefail
export LC_ALL=C
umask 022

${vars.join('\n')}
LIST_PAGE_SIZE=\${S3_LIST_PAGE_SIZE:-1000}
# A manifest is a few KiB (its package list), a SHA256SUMS a few lines: larger ones are not read.
MAX_MANIFEST_BYTES=${MAX_MANIFEST_BYTES}
MAX_SUMS_BYTES=1048576
IMAGES="$WORKSPACE/images"
# SigV4 needs the payload hash; every request here is a GET without a body.
EMPTY_SHA256=e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855
CURL_OPTS=(--silent --show-error --connect-timeout 10 --retry 4 --retry-delay 2 --retry-connrefused)

log() { printf '%s rootfs-bootstrap: %s\\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" "$*" >&2; }

# What the fallback serves is installed as root: it must not be open to change in transit.
FALLBACK_URL=\${FALLBACK_URL%/}
if [[ -n $FALLBACK_URL && $FALLBACK_URL != https://* ]]; then
  log "error: the fallback source must be an https:// URL, not $FALLBACK_URL"
  exit 2
fi
fallback_curl() { curl "\${CURL_OPTS[@]}" --proto =https --proto-redir =https --location --fail "$@"; }

# Only names this tool writes are used as file names: nothing else in the bucket reaches a path.
valid_key() { [[ $1 == ${KERNEL_KEY} || $1 =~ ^rootfs-[a-z][a-z0-9-]{0,31}\\.ext4$ ]]; }

# The secret goes to curl as a config on a pipe (printf is a builtin): it never shows in argv.
config_quote() { local v=\${1//\\\\/\\\\\\\\}; printf '"%s"' "\${v//\\"/\\\\\\"}"; }
curl_config() {
  if [[ -n \${AWS_ACCESS_KEY_ID:-} ]]; then
    printf 'user = %s\\n' "$(config_quote "$AWS_ACCESS_KEY_ID:\${AWS_SECRET_ACCESS_KEY:-}")"
    printf 'aws-sigv4 = "aws:amz:%s:s3"\\n' "$S3_REGION"
    printf 'header = "x-amz-content-sha256: %s"\\n' "$EMPTY_SHA256"
    if [[ -n \${AWS_SESSION_TOKEN:-} ]]; then printf 'header = %s\\n' "$(config_quote "x-amz-security-token: $AWS_SESSION_TOKEN")"; fi
  fi
  return 0
}
s3_curl() { curl -K <(curl_config) "\${CURL_OPTS[@]}" "$@"; }

# s3_get PATH OUT: GET of $S3_BUCKET_URL/PATH into OUT; prints the HTTP status (000: no answer).
s3_get() {
  local code
  code=$(s3_curl -o "$2" -w '%{http_code}' "$S3_BUCKET_URL/$1") || true
  printf '%s' "\${code:-000}"
}

# get_manifest KEY OUT: the manifest of KEY into OUT; prints the HTTP status, or too-large.
get_manifest() {
  local code rc=0
  code=$(s3_curl --max-filesize "$MAX_MANIFEST_BYTES" -o "$2" -w '%{http_code}' "$S3_BUCKET_URL/$1${MANIFEST_SUFFIX}") || rc=$?
  # 63: curl's "maximum file size exceeded"; the size check covers a server that sends no length.
  if ((rc == 63)) || (($(stat -c %s "$2") > MAX_MANIFEST_BYTES)); then printf 'too-large'; else printf '%s' "\${code:-000}"; fi
}

# What S3 said in an error body, e.g. "AccessDenied: Access Denied."
s3_reason() { sed -n 's:.*<Code>\\([^<]*\\)</Code>.*<Message>\\([^<]*\\)</Message>.*:\\1\\: \\2:p' "$1" 2>/dev/null | head -n1; }

urlencode() {
  local s=$1 out='' c i
  for ((i = 0; i < \${#s}; i++)); do
    c=\${s:i:1}
    case $c in [A-Za-z0-9._~-]) out+=$c ;; *) printf -v c '%%%02X' "'$c"; out+=$c ;; esac
  done
  printf '%s' "$out"
}

# Prints every key of the bucket, a line each. Returns 2 when the bucket does not exist.
list_keys() {
  local token='' query code page
  page=$(mktemp)
  while :; do
    # SigV4 as curl signs it wants the parameters sorted and encoded already.
    query="list-type=2&max-keys=$LIST_PAGE_SIZE"
    if [[ -n $token ]]; then query="continuation-token=$(urlencode "$token")&$query"; fi
    code=$(s3_get "?$query" "$page")
    case $code in
      200) ;;
      404) rm -f "$page"; return 2 ;;
      *) log "error: cannot list s3://$S3_BUCKET (HTTP $code $(s3_reason "$page"))"; rm -f "$page"; return 1 ;;
    esac
    { grep -o '<Key>[^<]*</Key>' "$page" || true; } | sed 's:</*Key>::g'
    grep -q '<IsTruncated>true</IsTruncated>' "$page" || break
    token=$(sed -n 's:.*<NextContinuationToken>\\([^<]*\\)</NextContinuationToken>.*:\\1:p' "$page")
  done
  rm -f "$page"
}

# sparse_from FILE: writes stdin to FILE; zero blocks become holes (dd conv=sparse), so a 2 GiB image with 300 MB of data takes 300 MB.
sparse_from() { dd of="$1" ibs=1M obs=4K conv=sparse iflag=fullblock status=none; }

local_sha256() { if [[ -f $1 ]]; then sha256sum <"$1" | cut -d' ' -f1; fi; }

# install_verified TMP DEST EXPECTED NAME: renames TMP over DEST only when its sha256 is EXPECTED;
# without an EXPECTED sum nothing is installed.
install_verified() {
  local actual kept=''
  if [[ -e $2 ]]; then kept='; the local copy was kept'; fi
  if [[ ! $3 =~ ^[0-9a-f]{64}$ ]]; then
    rm -f "$1"
    log "error: $4 has no checksum to verify it against; not installed$kept"
    return 1
  fi
  actual=$(local_sha256 "$1")
  if [[ $actual != "$3" ]]; then
    rm -f "$1"
    log "error: $4 does not match its checksum (sha256 $actual, expected $3); not installed$kept"
    return 1
  fi
  if ! mv -fT -- "$1" "$2"; then
    rm -f "$1"
    log "error: $4 could not be put in place at $2$kept"
    return 1
  fi
  log "downloaded $4 ($(stat -c %s "$2") bytes)"
}

dest_of() { if [[ $1 == ${KERNEL_KEY} ]]; then printf '%s' "$WORKSPACE/$1"; else printf '%s' "$IMAGES/$1"; fi; }

# manifest_field NAME FILE: a string field of a manifest as this tool writes it (one field a line).
manifest_field() { sed -n "s/^ *\\"$1\\": *\\"\\\\([^\\"]*\\\\)\\",\\\\{0,1\\\\}$/\\\\1/p" "$2" | head -n1; }

DOWNLOADED=0 UNCHANGED=0 FAILED=0
failed() { log "error: $*"; FAILED=$((FAILED + 1)); }

# sync_key KEY: the object, when its manifest's sha256 differs from the local file's. Without a
# manifest that describes this key with a sha256, nothing is downloaded.
sync_key() {
  local key=$1 dest tmp manifest expected described code pinned=\${PINNED[$1]:-}
  dest=$(dest_of "$key")
  manifest=$(mktemp)
  code=$(get_manifest "$key" "$manifest")
  expected=$(manifest_field sha256 "$manifest")
  described=$(manifest_field key "$manifest")
  rm -f "$manifest"
  if [[ $code == too-large ]]; then
    failed "s3://$S3_BUCKET/$key${MANIFEST_SUFFIX} is over $MAX_MANIFEST_BYTES bytes, so it is not read" \\
      "and $key cannot be verified; not downloaded"
    return 0
  fi
  if [[ $code != 200 ]]; then
    failed "s3://$S3_BUCKET/$key has no manifest (HTTP $code), so it cannot be verified; not downloaded"
    return 0
  fi
  if [[ $described != "$key" || ! $expected =~ ^[0-9a-f]{64}$ ]]; then
    failed "s3://$S3_BUCKET/$key${MANIFEST_SUFFIX} is not a manifest of $key with a sha256, so $key cannot be verified; not downloaded"
    return 0
  fi
  if [[ -n $pinned && $expected != "$pinned" ]]; then
    failed "s3://$S3_BUCKET/$key changed since this script was made" \\
      "(its manifest says sha256 $expected, the script pins $pinned); not downloaded"
    return 0
  fi
  if [[ $(local_sha256 "$dest") == "$expected" ]]; then
    log "$key is up to date"; UNCHANGED=$((UNCHANGED + 1)); return 0
  fi
  tmp="$(dirname "$dest")/.$key.$$.partial"
  if ! s3_curl --fail "$S3_BUCKET_URL/$key" | sparse_from "$tmp"; then
    rm -f "$tmp"; failed "the download of s3://$S3_BUCKET/$key failed"; return 0
  fi
  if install_verified "$tmp" "$dest" "$expected" "s3://$S3_BUCKET/$key"; then DOWNLOADED=$((DOWNLOADED + 1)); else FAILED=$((FAILED + 1)); fi
}

# from_fallback: vmlinux and the configured images from FALLBACK_URL, each only when its content
# matches the sum pinned in this script or, if none, the one SHA256SUMS lists; a file without a
# sum is not even fetched.
from_fallback() {
  local sums name dest tmp expected missing=''
  sums=$(mktemp)
  if ! fallback_curl --max-filesize "$MAX_SUMS_BYTES" -o "$sums" "$FALLBACK_URL/SHA256SUMS"; then
    : >"$sums"
    missing=" ($FALLBACK_URL/SHA256SUMS could not be fetched)"
  fi
  for name in ${KERNEL_KEY} $(for l in $LANGUAGES; do printf 'rootfs-%s.ext4 ' "$l"; done); do
    dest=$(dest_of "$name")
    expected=\${PINNED[$name]:-}
    if [[ -n $PINNED_KEYS && -z $expected ]]; then
      # A pinned script installs exactly what it pins: the fallback's own sums do not stand in.
      failed "$FALLBACK_URL/$name is not pinned in this script; not installed"
      continue
    fi
    if [[ -z $expected ]]; then expected=$(awk -v n="$name" '$2 == n || $2 == "*" n { print tolower($1); exit }' "$sums"); fi
    if [[ ! $expected =~ ^[0-9a-f]{64}$ ]]; then
      failed "$FALLBACK_URL/$name has no sha256 in $FALLBACK_URL/SHA256SUMS$missing, so it cannot be verified; not installed"
      continue
    fi
    if [[ $(local_sha256 "$dest") == "$expected" ]]; then
      log "$name is up to date"; UNCHANGED=$((UNCHANGED + 1)); continue
    fi
    tmp="$(dirname "$dest")/.$name.$$.partial"
    if ! fallback_curl "$FALLBACK_URL/$name" | sparse_from "$tmp"; then
      rm -f "$tmp"; failed "$FALLBACK_URL/$name could not be fetched"; continue
    fi
    if install_verified "$tmp" "$dest" "$expected" "$FALLBACK_URL/$name"; then
      DOWNLOADED=$((DOWNLOADED + 1))
    else
      FAILED=$((FAILED + 1))
    fi
  done
  rm -f "$sums"
}

# from_blocks: the block store's files through the fetcher this script pins (FETCHER_SHA256), taken
# from the bucket and checked; it fetches only the compressed blocks the host lacks and checks every
# block and file itself. Returns 1 (the plain objects are then synced) when it cannot run or fails.
from_blocks() {
  local tool code actual rc=0 args key
  if [[ -z $FETCHER_SHA256 ]]; then return 1; fi
  tool="$WORKSPACE/.rootfs-fetch.$$"
  code=$(s3_get "${FETCHER_PREFIX}$FETCHER_SHA256" "$tool")
  if [[ $code != 200 ]]; then
    rm -f "$tool"; log "the block store's fetcher is not in the bucket (HTTP $code): syncing the plain objects"; return 1
  fi
  actual=$(local_sha256 "$tool")
  if [[ $actual != "$FETCHER_SHA256" ]]; then
    rm -f "$tool"; log "error: the fetcher in the bucket has sha256 $actual, not $FETCHER_SHA256: not run"; return 1
  fi
  chmod 0755 "$tool"
  args=(sync --bucket-url "$S3_BUCKET_URL" --region "$S3_REGION" --workspace "$WORKSPACE" --default-language "$DEFAULT_LANGUAGE")
  for key in $PINNED_KEYS; do args+=(--pin "$key=\${PINNED[$key]}"); done
  log "syncing from the block store"
  "$tool" "\${args[@]}" || rc=$?
  rm -f "$tool"
  if ((rc != 0)); then log "the block store sync failed (exit $rc): syncing the plain objects"; return 1; fi
}

mkdir -p "$IMAGES"
rm -f "$WORKSPACE"/.*.partial "$IMAGES"/.*.partial
log "syncing s3://$S3_BUCKET into $WORKSPACE"
status=0
KEYS=$(list_keys) || status=$?
if [[ $status == 1 ]]; then exit 1; fi
FOUND=' '
HEADS=0
while IFS= read -r key; do
  if valid_key "$key"; then FOUND+="$key "; fi
  if [[ $key =~ ^${HEADS_PREFIX}(.+)\\.json$ ]] && valid_key "\${BASH_REMATCH[1]}"; then HEADS=$((HEADS + 1)); fi
done <<<"$KEYS"
if ((HEADS > 0)) && from_blocks; then
  log "the block store's files are in place"
elif [[ $FOUND == *' rootfs-'* && -n $PINNED_KEYS ]]; then
  # Exactly the pinned keys: one missing is a failure, one not pinned is not installed.
  for key in $FOUND; do
    if [[ -z \${PINNED[$key]:-} ]]; then log "warning: s3://$S3_BUCKET/$key is not pinned in this script: skipped"; fi
  done
  for key in $PINNED_KEYS; do
    if [[ $FOUND == *" $key "* ]]; then
      sync_key "$key"
    else
      failed "s3://$S3_BUCKET/$key is pinned in this script but not in the bucket"
    fi
  done
elif [[ $FOUND == *' rootfs-'* ]]; then
  for key in $FOUND; do sync_key "$key"; done
else
  why="has no images"
  if [[ $status == 2 ]]; then why="does not exist"; fi
  if [[ -z $FALLBACK_URL ]]; then
    log "error: bucket $S3_BUCKET $why and no fallback source is configured"
    exit 1
  fi
  log "bucket $S3_BUCKET $why: falling back to $FALLBACK_URL"
  from_fallback
fi

LINK="$WORKSPACE/${DEFAULT_LINK}"
if [[ ! -f "$WORKSPACE/$LINK_TARGET" ]]; then
  log "warning: $WORKSPACE/$LINK_TARGET is not there after the sync (the bucket has no such image): $LINK is not made"
fi
if [[ -f "$WORKSPACE/$LINK_TARGET" ]]; then
  if [[ -e $LINK && ! -L $LINK ]]; then
    log "warning: $LINK is a file, not a link: left as it is"
  else
    ln -sfn "$LINK_TARGET" "$LINK.$$.tmp"
    mv -Tf "$LINK.$$.tmp" "$LINK"
    log "$LINK -> $LINK_TARGET"
  fi
  # The default link of earlier versions, when it is one of ours: hosts look for the one above.
  OLD="$WORKSPACE/${OLD_LINK}"
  if [[ -L $OLD && $(readlink "$OLD") =~ ^rootfs-[a-z][a-z0-9-]{0,31}\\.ext4$ ]]; then
    rm -f "$OLD"
    log "removed $OLD, the default link of earlier versions"
  fi
fi
log "done: $DOWNLOADED downloaded, $UNCHANGED up to date, $FAILED failed"
if ((FAILED > 0)); then exit 1; fi
`;
}
