import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as https from 'node:https';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { onCleanup, tempDir } from '../support/process';

/**
 * A loopback HTTPS server standing in for a fallback download host, with a self-signed
 * certificate made for this run by openssl. curl trusts it only when given `caFile` (the
 * script's curl reads CURL_CA_BUNDLE). Each path answers with a body, an error status or a
 * redirect; every request is counted.
 */
export interface HttpsFixture {
  url: string;
  /** The certificate, to hand to curl as its CA bundle. */
  caFile: string;
  serve(path: string, body: Buffer | string): void;
  fail(path: string, status: number): void;
  redirect(path: string, location: string): void;
  hits(path: string): number;
}

export async function startHttpsFixture(): Promise<HttpsFixture> {
  const dir = tempDir('https-fixture');
  const key = path.join(dir, 'key.pem');
  const cert = path.join(dir, 'cert.pem');
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'ec',
      '-pkeyopt',
      'ec_paramgen_curve:prime256v1',
      '-nodes',
      '-keyout',
      key,
      '-out',
      cert,
      '-days',
      '1',
      '-subj',
      '/CN=127.0.0.1',
      '-addext',
      'subjectAltName=IP:127.0.0.1',
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const routes = new Map<string, { body?: Buffer; status: number; location?: string }>();
  const hits = new Map<string, number>();
  const server = https.createServer({ key: fs.readFileSync(key), cert: fs.readFileSync(cert) }, (req, res) => {
    const p = new URL(req.url ?? '/', 'https://x').pathname;
    hits.set(p, (hits.get(p) ?? 0) + 1);
    const route = routes.get(p);
    if (!route) res.writeHead(404).end('not found\n');
    else if (route.location) res.writeHead(302, { location: route.location }).end();
    else if (route.status !== 200 || !route.body) res.writeHead(route.status).end(`fixture says ${route.status}\n`);
    else res.writeHead(200, { 'content-length': route.body.length }).end(route.body);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  onCleanup(() => new Promise<void>((resolve) => server.close(() => resolve())));
  server.unref();
  const { port } = server.address() as AddressInfo;
  return {
    url: `https://127.0.0.1:${port}`,
    caFile: cert,
    serve: (p, body) => routes.set(p, { body: Buffer.from(body), status: 200 }),
    fail: (p, status) => routes.set(p, { ...routes.get(p), status, location: undefined }),
    redirect: (p, location) => routes.set(p, { status: 302, location }),
    hits: (p) => hits.get(p) ?? 0,
  };
}
