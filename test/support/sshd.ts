import { execFileSync } from 'node:child_process';
import * as crypto from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { freePort, portAccepts, startServer, sharedTempDir, waitUntilReady } from './process';

/**
 * A real OpenSSH server on a free loopback port, with its own generated host key, client key and
 * authorized_keys in a temp dir. Never the machine's own sshd, config or keys.
 */
export interface TestSshd {
  host: string;
  port: number;
  user: string;
  /** Private key that authorized_keys accepts. */
  clientKeyPath: string;
  /** A second private key that is NOT authorized. */
  strangerKeyPath: string;
  /** `SHA256:…` fingerprint of the server's host key, as `ssh-keygen -lf` prints it. */
  hostKeySha256: string;
  dir: string;
}

function keygen(file: string): void {
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'rootfs-test', '-f', file], { stdio: 'ignore' });
}

/** `SHA256:<base64 without padding>` of a public key file, computed the way OpenSSH does. */
export function fingerprintOfPublicKeyFile(pubFile: string): string {
  const blob = Buffer.from(fs.readFileSync(pubFile, 'utf8').trim().split(/\s+/)[1]!, 'base64');
  return 'SHA256:' + crypto.createHash('sha256').update(blob).digest('base64').replace(/=+$/, '');
}

async function startSshd(): Promise<TestSshd> {
  const sshdBin = '/usr/sbin/sshd';
  if (!fs.existsSync(sshdBin)) throw new Error('sshd is not installed: run `npm run setup`');
  // Privilege separation needs this directory; Debian creates it only when its own sshd runs.
  fs.mkdirSync('/run/sshd', { recursive: true, mode: 0o755 });
  const dir = sharedTempDir('sshd');
  const hostKey = path.join(dir, 'host_ed25519');
  const clientKeyPath = path.join(dir, 'client_ed25519');
  const strangerKeyPath = path.join(dir, 'stranger_ed25519');
  keygen(hostKey);
  keygen(clientKeyPath);
  keygen(strangerKeyPath);
  const authorized = path.join(dir, 'authorized_keys');
  fs.copyFileSync(`${clientKeyPath}.pub`, authorized);
  fs.chmodSync(authorized, 0o600);
  const port = await freePort();
  const config = path.join(dir, 'sshd_config');
  fs.writeFileSync(
    config,
    [
      `ListenAddress 127.0.0.1:${port}`,
      `HostKey ${hostKey}`,
      `PidFile ${path.join(dir, 'sshd.pid')}`,
      `AuthorizedKeysFile ${authorized}`,
      'PermitRootLogin prohibit-password',
      'PasswordAuthentication no',
      'KbdInteractiveAuthentication no',
      'UsePAM no',
      // The temp dir's owner and modes are not what StrictModes expects of a home directory.
      'StrictModes no',
      'Subsystem sftp internal-sftp',
      'MaxStartups 100:30:200',
      'MaxSessions 100',
      'LogLevel VERBOSE',
      '',
    ].join('\n'),
  );
  const server = startServer(sshdBin, ['-D', '-e', '-f', config], { logFile: path.join(dir, 'sshd.log') });
  await waitUntilReady(server, 'sshd', () => portAccepts(port), 15_000);
  return {
    host: '127.0.0.1',
    port,
    user: 'root',
    clientKeyPath,
    strangerKeyPath,
    hostKeySha256: fingerprintOfPublicKeyFile(`${hostKey}.pub`),
    dir,
  };
}

let shared: Promise<TestSshd> | undefined;

/** The test run's sshd, started on first use and stopped by the global teardown. */
export function testSshd(): Promise<TestSshd> {
  return (shared ??= startSshd());
}
