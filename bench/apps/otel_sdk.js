// The OpenTelemetry JS SDK set up the way its documentation shows for a
// Node service: sdk-trace-node, the http instrumentation and the batch
// span processor with the OTLP/HTTP protobuf exporter (endpoint from
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT). Preloaded with `node -r`.
const path = require('path');

const modules = path.join(__dirname, '..', 'node', 'node_modules');
const load = (name) => require(path.join(modules, name));
const { NodeTracerProvider, BatchSpanProcessor } = load('@opentelemetry/sdk-trace-node');
const { OTLPTraceExporter } = load('@opentelemetry/exporter-trace-otlp-proto');
const { registerInstrumentations } = load('@opentelemetry/instrumentation');
const { HttpInstrumentation } = load('@opentelemetry/instrumentation-http');
const { resourceFromAttributes } = load('@opentelemetry/resources');

const provider = new NodeTracerProvider({
  resource: resourceFromAttributes({ 'service.name': process.env.OTEL_SERVICE_NAME || 'node-bench' }),
  spanProcessors: [new BatchSpanProcessor(new OTLPTraceExporter())],
});
provider.register();
registerInstrumentations({ instrumentations: [new HttpInstrumentation()] });
process.on('SIGTERM', () => provider.shutdown().finally(() => process.exit(0)));
