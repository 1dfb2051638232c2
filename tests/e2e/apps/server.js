// Plain Node.js http server for the end-to-end tests (no tracing code).
// Listens dual-stack on the port given; /chunked streams three chunks as
// they become ready (20 ms apart), so each goes out in its own write;
// /log?request_id=ID logs a line naming it and answers 30 ms later.
const http = require('http');

const port = Number(process.argv[2]);
http.createServer((req, res) => {
  if (req.url === '/chunked') {
    res.writeHead(200, { 'Content-Type': 'text/plain' });
    res.write('a'.repeat(1000));
    setTimeout(() => res.write('b'.repeat(1000)), 20);
    setTimeout(() => res.end('c'.repeat(1000)), 40);
    return;
  }
  if (req.url.startsWith('/log?')) {
    const rid = new URL(req.url, 'http://x').searchParams.get('request_id');
    console.log(`request_id=${rid} node handling`);
    setTimeout(() => res.end('ok\n'), 30);
    return;
  }
  if (req.url.startsWith('/users/')) {
    res.writeHead(200, { 'Content-Type': 'application/json' });
    res.end(JSON.stringify({ id: req.url.split('/')[2] }));
    return;
  }
  res.writeHead(404);
  res.end();
}).listen(port, '::');
