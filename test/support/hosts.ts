import { LocalHost, SshHost, type Host } from '../../src/host';
import { testSshd } from './sshd';

/** Every Host implementation, by name: suites that run against each of them must see them behave alike. */
export const TEST_HOSTS: Array<[string, () => Promise<Host>]> = [
  ['LocalHost', async () => new LocalHost()],
  [
    'SshHost',
    async () => {
      const sshd = await testSshd();
      return SshHost.connect({
        host: sshd.host,
        port: sshd.port,
        user: sshd.user,
        keyPath: sshd.clientKeyPath,
        hostKeySha256: sshd.hostKeySha256,
      });
    },
  ],
];
