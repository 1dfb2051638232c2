'use strict';
// An OTLP trace, metrics and logs receiver for sonde's end-to-end tests,
// independent of sonde's own encoder: requests are decoded with the
// official opentelemetry-proto v1.4.0 schema (the .proto files shipped in
// @elastic/mockotlpserver), gRPC is served by @grpc/grpc-js, HTTP by
// node:http(s). Tests script its answers to trace exports (UNAVAILABLE,
// 503, slow, 400, partial success, RetryInfo...) and read what it decoded,
// through a small control API:
//   GET  /requests          every trace export request, with its decoded spans
//   GET  /metrics_requests  every metrics export request, with its data points
//   GET  /logs_requests     every logs export request, with its records
//   POST /script            JSON list of answers for the next trace requests
// Usage: node receiver.js '{"grpc_port":0,"http_port":0,"tls":{"cert":..,"key":..}}'
// With "keep_spans":false it still decodes every request but keeps only its
// span count (span_count), so that a benchmark can send it spans for minutes.
// Prints one JSON line with the bound ports once listening.

const fs = require('fs');
const http = require('http');
const https = require('https');
const path = require('path');
const zlib = require('zlib');
const grpc = require('@grpc/grpc-js');
const protobuf = require('protobufjs');

// grpc-js decompresses a message and drops its grpc-encoding header before
// the handler runs; note what each message was compressed with on the way.
const { BaseServerInterceptingCall } = require('@grpc/grpc-js/build/src/server-interceptors');

let lastGrpcEncoding = 'identity';
const decompress = BaseServerInterceptingCall.prototype.decompressMessage;
BaseServerInterceptingCall.prototype.decompressMessage = function (message, encoding) {
  lastGrpcEncoding = message.readUInt8(0) === 1 ? encoding : 'identity';
  return decompress.call(this, message, encoding);
};

const PROTO_ROOT = path.dirname(require.resolve('@elastic/mockotlpserver/package.json'));
const EXPORT_PATH = '/opentelemetry.proto.collector.trace.v1.TraceService/Export';
const METRICS_PATH = '/opentelemetry.proto.collector.metrics.v1.MetricsService/Export';
const LOGS_PATH = '/opentelemetry.proto.collector.logs.v1.LogsService/Export';

function loadSchema() {
  const root = new protobuf.Root();
  root.resolvePath = (_origin, target) => path.join(PROTO_ROOT, target);
  root.loadSync('opentelemetry/proto/collector/trace/v1/trace_service.proto');
  root.loadSync('opentelemetry/proto/collector/metrics/v1/metrics_service.proto');
  root.loadSync('opentelemetry/proto/collector/logs/v1/logs_service.proto');
  // google.rpc.Status and RetryInfo, as published in googleapis.
  protobuf.parse(`syntax = "proto3"; package google.rpc;
    message Any { string type_url = 1; bytes value = 2; }
    message Status { int32 code = 1; string message = 2; repeated Any details = 3; }
    message Duration { int64 seconds = 1; int32 nanos = 2; }
    message RetryInfo { Duration retry_delay = 1; }`, root);
  return {
    request: root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceRequest'),
    response: root.lookupType('opentelemetry.proto.collector.trace.v1.ExportTraceServiceResponse'),
    status: root.lookupType('google.rpc.Status'),
    retryInfo: root.lookupType('google.rpc.RetryInfo'),
    metricsRequest: root.lookupType('opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceRequest'),
    metricsResponse: root.lookupType('opentelemetry.proto.collector.metrics.v1.ExportMetricsServiceResponse'),
    logsRequest: root.lookupType('opentelemetry.proto.collector.logs.v1.ExportLogsServiceRequest'),
    logsResponse: root.lookupType('opentelemetry.proto.collector.logs.v1.ExportLogsServiceResponse'),
  };
}

const schema = loadSchema();
const requests = [];
const metricsRequests = [];
const logsRequests = [];
const script = [];
let keepSpans = true;

const hex = (b64) => Buffer.from(b64 || '', 'base64').toString('hex');

function attributeMap(list) {
  const values = {};
  const types = {};
  for (const kv of list || []) {
    const v = kv.value || {};
    types[kv.key] = v.value;
    values[kv.key] = v.value === 'intValue' ? Number(v.intValue) : v[v.value];
  }
  return { values, types };
}

// Flattens a decoded request into one object per span.
function flatten(message) {
  const obj = schema.request.toObject(message, {
    longs: String, enums: String, bytes: String, oneofs: true, defaults: true,
  });
  const spans = [];
  for (const rs of obj.resourceSpans || []) {
    const resource = attributeMap(rs.resource && rs.resource.attributes);
    for (const ss of rs.scopeSpans || []) {
      for (const s of ss.spans || []) {
        const attrs = attributeMap(s.attributes);
        spans.push({
          trace_id: hex(s.traceId), span_id: hex(s.spanId), parent_span_id: hex(s.parentSpanId),
          trace_id_bytes: Buffer.from(s.traceId || '', 'base64').length,
          span_id_bytes: Buffer.from(s.spanId || '', 'base64').length,
          name: s.name, kind: s.kind, flags: s.flags,
          start_time_unix_nano: s.startTimeUnixNano, end_time_unix_nano: s.endTimeUnixNano,
          attributes: attrs.values, attribute_types: attrs.types,
          status: { code: (s.status || {}).code || 'STATUS_CODE_UNSET', message: (s.status || {}).message || '' },
          resource: resource.values, resource_types: resource.types,
          scope: { name: (ss.scope || {}).name, version: (ss.scope || {}).version },
        });
      }
    }
  }
  return { spans, resource_spans: (obj.resourceSpans || []).length };
}

// Flattens a decoded metrics request into one object per data point.
function flattenMetrics(message) {
  const obj = schema.metricsRequest.toObject(message, {
    longs: String, enums: String, bytes: String, oneofs: true, defaults: true,
  });
  const points = [];
  for (const rm of obj.resourceMetrics || []) {
    const resource = attributeMap(rm.resource && rm.resource.attributes);
    for (const sm of rm.scopeMetrics || []) {
      for (const m of sm.metrics || []) {
        const data = m[m.data] || {};
        for (const dp of data.dataPoints || []) {
          const attrs = attributeMap(dp.attributes);
          points.push({
            name: m.name, unit: m.unit, description: m.description, type: m.data,
            temporality: data.aggregationTemporality, is_monotonic: data.isMonotonic,
            resource: resource.values, scope: { name: (sm.scope || {}).name },
            attributes: attrs.values, attribute_types: attrs.types,
            start_time_unix_nano: dp.startTimeUnixNano, time_unix_nano: dp.timeUnixNano,
            count: dp.count !== undefined ? Number(dp.count) : undefined,
            sum: dp.sum, has_sum: dp.sum !== undefined && dp.sum !== null,
            bucket_counts: (dp.bucketCounts || []).map(Number),
            explicit_bounds: dp.explicitBounds,
            value: dp.value === 'asInt' ? Number(dp.asInt) : dp.asDouble,
          });
        }
      }
    }
  }
  return { points, resource_metrics: (obj.resourceMetrics || []).length };
}

function recordMetrics(transport, bytes) {
  const entry = { transport, time: Date.now() };
  try {
    Object.assign(entry, flattenMetrics(schema.metricsRequest.decode(bytes)));
  } catch (err) {
    entry.decode_error = String(err);
    entry.points = [];
  }
  metricsRequests.push(entry);
}

// Flattens a decoded logs request into one object per record.
function flattenLogs(message) {
  const obj = schema.logsRequest.toObject(message, {
    longs: String, enums: String, bytes: String, oneofs: true, defaults: true,
  });
  const records = [];
  for (const rl of obj.resourceLogs || []) {
    const resource = attributeMap(rl.resource && rl.resource.attributes);
    for (const sl of rl.scopeLogs || []) {
      for (const r of sl.logRecords || []) {
        const attrs = attributeMap(r.attributes);
        const body = r.body || {};
        records.push({
          body: body.value ? body[body.value] : null, body_type: body.value,
          severity_number: r.severityNumber, severity_text: r.severityText,
          attributes: attrs.values, attribute_types: attrs.types,
          trace_id: hex(r.traceId), span_id: hex(r.spanId), flags: r.flags,
          time_unix_nano: r.timeUnixNano, observed_time_unix_nano: r.observedTimeUnixNano,
          resource: resource.values, scope: { name: (sl.scope || {}).name },
        });
      }
    }
  }
  return { records, resource_logs: (obj.resourceLogs || []).length };
}

function recordLogs(transport, bytes) {
  const entry = { transport, time: Date.now() };
  try {
    Object.assign(entry, flattenLogs(schema.logsRequest.decode(bytes)));
  } catch (err) {
    entry.decode_error = String(err);
    entry.records = [];
  }
  logsRequests.push(entry);
}

function logsResponseBytes() {
  return Buffer.from(schema.logsResponse.encode(schema.logsResponse.create({})).finish());
}

function metricsResponseBytes() {
  return Buffer.from(schema.metricsResponse.encode(schema.metricsResponse.create({})).finish());
}

// Decoded all the same, but not turned into objects: a benchmark's load.
function countSpans(message) {
  let spanCount = 0;
  for (const rs of message.resourceSpans) {
    for (const ss of rs.scopeSpans) spanCount += ss.spans.length;
  }
  return { span_count: spanCount, resource_spans: message.resourceSpans.length };
}

function nextAnswer() {
  return script.length ? script.shift() : { kind: 'ok' };
}

function statusDetails(code, message, retryDelayMs) {
  const details = [];
  if (retryDelayMs !== undefined) {
    details.push({
      typeUrl: 'type.googleapis.com/google.rpc.RetryInfo',
      value: schema.retryInfo.encode({
        retryDelay: { seconds: Math.floor(retryDelayMs / 1000), nanos: (retryDelayMs % 1000) * 1e6 },
      }).finish(),
    });
  }
  return Buffer.from(schema.status.encode({ code, message, details }).finish());
}

function responseBytes(answer) {
  const body = answer.kind === 'partial'
    ? { partialSuccess: { rejectedSpans: answer.rejected, errorMessage: answer.message || '' } }
    : {};
  return Buffer.from(schema.response.encode(schema.response.create(body)).finish());
}

// Decodes and records one request; returns the record.
function record(transport, encoding, headers, bytes, answer) {
  const entry = { transport, encoding, headers, answer: answer.kind, time: Date.now() };
  try {
    const message = schema.request.decode(bytes);
    Object.assign(entry, keepSpans ? flatten(message) : countSpans(message));
  } catch (err) {
    entry.decode_error = String(err);
    entry.spans = [];
  }
  // A collector that answers after the client gave up still got the data,
  // but the client counts it as failed: keep it apart.
  entry.accepted = answer.kind === 'ok' || answer.kind === 'partial';
  if (entry.spans) entry.span_count = entry.spans.length;
  requests.push(entry);
  return entry;
}

function later(ms, fn) {
  setTimeout(fn, ms || 0);
}

const grpcCodes = { unavailable: 14, invalid: 3, resource_exhausted: 8, deadline: 4 };

function grpcExport(call, callback) {
  const answer = nextAnswer();
  const md = call.metadata.getMap();
  record('grpc', lastGrpcEncoding,
    { 'user-agent': md['user-agent'], 'x-test': md['x-test'] }, call.request, answer);
  later(answer.delay_ms, () => {
    if (answer.kind === 'ok' || answer.kind === 'partial' || answer.kind === 'slow') {
      callback(null, responseBytes(answer));
      return;
    }
    const code = grpcCodes[answer.kind];
    const metadata = new grpc.Metadata();
    if (answer.retry_delay_ms !== undefined) {
      metadata.set('grpc-status-details-bin',
        statusDetails(code, answer.kind, answer.retry_delay_ms));
    }
    callback({ code, details: `scripted ${answer.kind}`, metadata });
  });
}

function grpcLogsExport(call, callback) {
  recordLogs('grpc', call.request);
  callback(null, logsResponseBytes());
}

function grpcMetricsExport(call, callback) {
  recordMetrics('grpc', call.request);
  callback(null, metricsResponseBytes());
}

function startGrpc(port, tls) {
  const server = new grpc.Server();
  const identity = (b) => b;
  const method = (p) => ({
    path: p, requestStream: false, responseStream: false,
    requestSerialize: identity, requestDeserialize: identity,
    responseSerialize: identity, responseDeserialize: identity,
  });
  server.addService({ Export: method(EXPORT_PATH) }, { Export: grpcExport });
  server.addService({ Export: method(METRICS_PATH) }, { Export: grpcMetricsExport });
  server.addService({ Export: method(LOGS_PATH) }, { Export: grpcLogsExport });
  const creds = tls
    ? grpc.ServerCredentials.createSsl(null,
      [{ cert_chain: fs.readFileSync(tls.cert), private_key: fs.readFileSync(tls.key) }], false)
    : grpc.ServerCredentials.createInsecure();
  return new Promise((resolve, reject) => {
    server.bindAsync(`127.0.0.1:${port}`, creds, (err, bound) => (err ? reject(err) : resolve(bound)));
  });
}

function httpAnswer(res, answer) {
  if (answer.kind === 'ok' || answer.kind === 'partial' || answer.kind === 'slow') {
    res.writeHead(200, { 'content-type': 'application/x-protobuf' });
    res.end(responseBytes(answer));
    return;
  }
  const status = { unavailable: 503, invalid: 400, resource_exhausted: 429 }[answer.kind];
  const headers = { 'content-type': 'application/x-protobuf' };
  if (answer.retry_delay_ms !== undefined) headers['retry-after'] = String(Math.ceil(answer.retry_delay_ms / 1000));
  res.writeHead(status, headers);
  res.end(statusDetails(status === 400 ? 3 : 14, `scripted ${answer.kind}`));
}

function httpExport(req, res) {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    let body = Buffer.concat(chunks);
    const encoding = req.headers['content-encoding'] || 'identity';
    if (encoding === 'gzip') body = zlib.gunzipSync(body);
    if (req.method === 'POST' && req.url === '/v1/logs') {
      recordLogs('http', body);
      res.writeHead(200, { 'content-type': 'application/x-protobuf' });
      res.end(logsResponseBytes());
      return;
    }
    if (req.method === 'POST' && req.url === '/v1/metrics') {
      recordMetrics('http', body);
      res.writeHead(200, { 'content-type': 'application/x-protobuf' });
      res.end(metricsResponseBytes());
      return;
    }
    if (req.method !== 'POST' || req.url !== '/v1/traces') {
      res.writeHead(404).end();
      return;
    }
    const answer = nextAnswer();
    record('http', encoding, {
      'user-agent': req.headers['user-agent'], 'x-test': req.headers['x-test'],
      'content-type': req.headers['content-type'],
    }, body, answer);
    later(answer.delay_ms, () => httpAnswer(res, answer));
  });
}

function listen(server, port) {
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve(server.address().port)));
}

function control(req, res) {
  const chunks = [];
  req.on('data', (c) => chunks.push(c));
  req.on('end', () => {
    if (req.method === 'POST' && req.url === '/script') {
      script.push(...JSON.parse(Buffer.concat(chunks).toString()));
      res.writeHead(204).end();
    } else if (req.url === '/requests') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(requests));
    } else if (req.url === '/logs_requests') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(logsRequests));
    } else if (req.url === '/metrics_requests') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify(metricsRequests));
    } else {
      res.writeHead(404).end();
    }
  });
}

async function main() {
  const opts = JSON.parse(process.argv[2] || '{}');
  const tls = opts.tls && { cert: opts.tls.cert, key: opts.tls.key };
  keepSpans = opts.keep_spans !== false;
  const ports = {};
  if (opts.grpc_port !== undefined) ports.grpc_port = await startGrpc(opts.grpc_port, tls);
  if (opts.http_port !== undefined) {
    const server = tls
      ? https.createServer({ cert: fs.readFileSync(tls.cert), key: fs.readFileSync(tls.key) }, httpExport)
      : http.createServer(httpExport);
    ports.http_port = await listen(server, opts.http_port);
  }
  ports.control_port = await listen(http.createServer(control), opts.control_port || 0);
  process.stdout.write(`${JSON.stringify(ports)}\n`);
}

main().catch((err) => {
  process.stderr.write(`receiver: ${err.stack}\n`);
  process.exit(1);
});
