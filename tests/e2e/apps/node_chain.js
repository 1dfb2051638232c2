// Two Node.js services for the end-to-end tests (no tracing code).
//   node node_chain.js backend PORT [MAX_DELAY_MS]
//     GET /item/ID answers {"id": ID} after 0 to MAX_DELAY_MS - 1 ms
//     (default 10), at once with 0.
//   node node_chain.js front PORT BACKEND_PORT [POSTGRES_URL]
//     (with NODE_CHAIN_WORKERS=N: a cluster of N worker processes, the
//     primary accepting and handing each connection to a worker)
//     GET /call/ID: one call to the backend over a keep-alive agent.
//     POST /chain/ID: reads its body, then awaits a call over the agent,
//     then one with fetch (undici's pool), then answers; logs a line with
//     the id before and after the calls.
//     GET /later/ID: one call after awaiting a timer of 0-4 ms.
//     GET /queued/ID: one call over an agent of 2 sockets, so that calls
//     wait for a socket another request's call frees.
//     GET /file/ID: reads a file, then one call.
//     GET /db/ID: a query over a pool of 64 connections, then a call.
//     GET /dbqueued/ID: a query over a pool of 2, so that queries wait
//     for a connection another request's query frees.
const fs = require('fs');
const http = require('http');

const [mode, port, arg, postgresUrl] = process.argv.slice(2);
const backend = `http://127.0.0.1:${arg}`; // front: the backend's port
const maxDelay = arg === undefined ? 10 : Number(arg); // backend
const agent = new http.Agent({ keepAlive: true });
const narrow = new http.Agent({ keepAlive: true, maxSockets: 2 });
const pools = postgresUrl && {
  wide: new (require('pg').Pool)({ connectionString: postgresUrl, max: 64 }),
  narrow: new (require('pg').Pool)({ connectionString: postgresUrl, max: 2 }),
};

function get(path, via = agent) {
  return new Promise((resolve, reject) => {
    http.get(`${backend}${path}`, { agent: via }, (res) => {
      let body = '';
      res.on('data', (d) => { body += d; });
      res.on('end', () => resolve(body));
    }).on('error', reject);
  });
}

function readBody(req) {
  return new Promise((resolve) => {
    let body = '';
    req.on('data', (d) => { body += d; });
    req.on('end', () => resolve(body));
  });
}

async function chain(id, req) {
  const body = await readBody(req);
  console.log(`request_id=${id} chain start body=${body.length}`);
  const first = await get(`/item/${id}-1`);
  const second = await (await fetch(`${backend}/item/${id}-2`)).text();
  console.log(`request_id=${id} chain done`);
  return JSON.stringify({ first, second });
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function later(id) {
  await sleep(Math.floor(Math.random() * 5));
  return get(`/item/${id}`);
}

async function afterFile(id) {
  await fs.promises.readFile(__filename);
  return get(`/item/${id}`);
}

// The id is in a quoted alias: sonde's query text keeps identifiers.
async function query(id, pool) {
  await pool.query(`SELECT 1 AS "r_${id}"`);
  return get(`/item/${id}`);
}

// Each route's work, to the body it answers.
const routes = {
  chain: (id, req) => chain(id, req),
  file: (id) => afterFile(id),
  later: (id) => later(id),
  queued: (id) => get(`/item/${id}`, narrow),
  db: (id) => query(id, pools.wide),
  dbqueued: (id) => query(id, pools.narrow),
};

function failed(res) {
  res.writeHead(502);
  res.end();
}

function front(req, res) {
  const [, route, id] = req.url.split('/');
  if (route === 'call') {
    http.get(`${backend}/item/${id}`, { agent }, (up) => up.pipe(res))
      .on('error', () => failed(res));
  } else if (routes[route]) {
    routes[route](id, req).then((body) => res.end(body), () => failed(res));
  } else {
    res.writeHead(404);
    res.end();
  }
}

function item(req, res) {
  const body = JSON.stringify({ id: req.url.split('/')[2] });
  if (maxDelay === 0)
    res.end(body);
  else
    setTimeout(() => res.end(body), Math.floor(Math.random() * maxDelay));
}

const workers = Number(process.env.NODE_CHAIN_WORKERS || 0);
const cluster = require('cluster');
if (workers && cluster.isPrimary) {
  for (let i = 0; i < workers; i++)
    cluster.fork();
} else {
  http.createServer(mode === 'front' ? front : item).listen(Number(port), '127.0.0.1');
}
