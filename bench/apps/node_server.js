// The benchmark's Node.js server: plain node:http, no tracing code. Run as
// is, under sonde, or with the OpenTelemetry JS SDK preloaded
// (`node -r ./otel_sdk.js`), so that all three serve identical work.
const http = require('http');

const port = Number(process.argv[2]);
const body = JSON.stringify({ status: 'ok', items: [1, 2, 3] });
http.createServer((req, res) => {
  res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': body.length });
  res.end(body);
}).listen(port, '127.0.0.1');
