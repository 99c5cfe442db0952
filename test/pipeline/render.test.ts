import { strict as assert } from 'node:assert';
import { loadConfig } from '../../src/config';
import { renderProfile, renderUnit } from '../../src/pipeline/render';

describe('unit and profile rendering', () => {
  const { config } = loadConfig({ env: {}, cwd: '/' });

  it('renders the operator unit exactly, with the language environment', () => {
    assert.equal(
      renderUnit(config.languages.go!),
      [
        '[Unit]',
        'Description=infra.operator guest agent',
        'After=network.target',
        '',
        '[Service]',
        'Type=simple',
        'ExecStart=/usr/local/bin/infra.operator guest --port 5000',
        'Restart=always',
        'RestartSec=1',
        'Environment=HOME=/tmp',
        'Environment=GOCACHE=/tmp/go-cache',
        'Environment=GOPATH=/tmp/go',
        'Environment=GOROOT=/usr/local/go',
        'Environment=PATH=/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin',
        '',
        '[Install]',
        'WantedBy=multi-user.target',
        '',
      ].join('\n'),
    );
  });

  it('renders a unit without Environment lines for a language that needs none', () => {
    assert.doesNotMatch(renderUnit(config.languages.bash!), /Environment=/);
  });

  it('renders profile.d with the runtime PATH and variables but not the unit-only HOME', () => {
    const go = renderProfile('go', config.languages.go!);
    assert.match(go, /^export PATH=\/usr\/local\/go\/bin:\$PATH$/m);
    assert.match(go, /^export GOROOT=\/usr\/local\/go$/m);
    assert.doesNotMatch(go, /HOME=/);
    assert.equal(renderProfile('bash', config.languages.bash!), '# bash runtime, written by rootfs-pipeline.\n');
  });
});
