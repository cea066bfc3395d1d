// A static file server for the example pages, on loopback, with no dependencies:
//   node serve.mjs [PORT]        (default 8000; 0 picks a free port)
// The pages come from another origin than MediaFlow's, as they would in production.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.dirname(fileURLToPath(import.meta.url));
const types = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript; charset=utf-8', '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8', '.map': 'application/json', '.png': 'image/png', '.svg': 'image/svg+xml',
};
// Only what the pages need: never node_modules or the test.
const servable = /^\/(?:[\w-]+\.(?:html|css)|src\/[\w-]+\.js|dist\/[\w.-]+)$/;

/**
 * Starts the server; resolves to it once it listens (its port:
 * `server.address().port`). `routes` maps a path to a handler `(req, res)`:
 * a stand-in for your application's backend (the test's presign route).
 */
export function serve(port = 8000, host = '127.0.0.1', { routes = {} } = {}) {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    if (Object.hasOwn(routes, url.pathname)) return routes[url.pathname](req, res);
    const rel = url.pathname === '/' ? '/index.html' : url.pathname;
    if (req.method !== 'GET' && req.method !== 'HEAD') return send(res, 405, 'method not allowed');
    if (!servable.test(rel)) return send(res, 404, 'not found');
    fs.readFile(path.join(root, rel), (err, body) => {
      if (err) return send(res, 404, rel.startsWith('/dist/') ? 'not found: run `npm run build` first' : 'not found');
      res.writeHead(200, { 'Content-Type': types[path.extname(rel)] || 'application/octet-stream', 'Cache-Control': 'no-store' });
      res.end(req.method === 'HEAD' ? undefined : body);
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}

function send(res, status, text) {
  res.writeHead(status, { 'Content-Type': 'text/plain; charset=utf-8' });
  res.end(`${text}\n`);
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const server = await serve(Number(process.argv[2] ?? 8000));
  const { port } = server.address();
  console.log(`example pages at http://127.0.0.1:${port}/ (uppy.html, fetch.html); MediaFlow expected at http://127.0.0.1:8080 (?api= to change)`);
}
