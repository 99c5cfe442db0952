import * as http from 'node:http';
import type { AddressInfo } from 'node:net';
import { onCleanup } from './process';

/**
 * A loopback HTTP server standing in for a vendor's download host. Each path answers with a
 * body, or with an error status a test can switch at will; every request is counted.
 */
export interface FixtureServer {
  url: string;
  serve(path: string, body: Buffer | string): void;
  fail(path: string, status: number): void;
  hits(path: string): number;
}

export async function startFixtureServer(): Promise<FixtureServer> {
  const routes = new Map<string, { body?: Buffer; status: number }>();
  const hits = new Map<string, number>();
  const server = http.createServer((req, res) => {
    const path = new URL(req.url ?? '/', 'http://x').pathname;
    hits.set(path, (hits.get(path) ?? 0) + 1);
    const route = routes.get(path);
    if (!route) {
      res.writeHead(404).end('not found\n');
    } else if (route.status !== 200 || !route.body) {
      res.writeHead(route.status).end(`fixture says ${route.status}\n`);
    } else {
      res.writeHead(200, { 'content-length': route.body.length }).end(route.body);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  onCleanup(() => new Promise<void>((resolve) => server.close(() => resolve())));
  server.unref();
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}`,
    serve: (path, body) => routes.set(path, { body: Buffer.from(body), status: 200 }),
    fail: (path, status) => routes.set(path, { ...routes.get(path), status }),
    hits: (path) => hits.get(path) ?? 0,
  };
}
