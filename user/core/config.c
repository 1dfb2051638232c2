#include "config.h"

#include "config_file.h"
#include "log.h"
#include "number.h"
#include "jobs.h"
#include "scope.h"
#include "sonde_events.h"

#include <assert.h>
#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int parse_buffer(const char *text, enum probe_buffer *out)
{
	/* auto is the ring buffer: every kernel sonde runs on has one. */
	if (strcmp(text, "auto") == 0 || strcmp(text, "ring") == 0)
		*out = PROBE_BUFFER_RING;
	else if (strcmp(text, "perf") == 0)
		*out = PROBE_BUFFER_PERF;
	else
		return -1;
	return 0;
}

static int parse_sched(const char *text, const char *source, enum exporter_sched *out,
		       char *err, size_t size)
{
	if (strcmp(text, "idle") == 0)
		*out = EXPORTER_SCHED_IDLE;
	else if (strcmp(text, "normal") == 0)
		*out = EXPORTER_SCHED_NORMAL;
	else
		return errorf(err, size, "%s: \"%s\" is not one of idle, normal", source, text);
	return 0;
}

/* "wrk,ab": process names (comm) whose connections are never traced. */
static int parse_exclude(struct sonde_config *cfg, const char *text, const char *source,
			 char *err, size_t size)
{
	cfg->excluded_count = 0;
	while (*text) {
		size_t len = strcspn(text, ",");

		if (len == 0 || len >= SONDE_COMM_LEN)
			return errorf(err, size, "%s: \"%.*s\" is not a process name of 1 to %d characters",
				    source, (int)len, text, SONDE_COMM_LEN - 1);
		if (cfg->excluded_count == SONDE_EXCLUDE_MAX)
			return errorf(err, size, "%s: more than %d process names", source,
				    SONDE_EXCLUDE_MAX);
		memset(cfg->excluded_comms[cfg->excluded_count], 0, SONDE_COMM_LEN);
		memcpy(cfg->excluded_comms[cfg->excluded_count++], text, len);
		text += len + (text[len] == ',');
	}
	return 0;
}

/* Where a signal can go, by name. */
struct sink_name {
	const char *name;
	unsigned bit;
};

static const struct sink_name trace_sinks[] = {
	{ "otlp", EXPORTER_OTLP }, { "console", EXPORTER_CONSOLE }, { "tree", EXPORTER_TREE },
	{ NULL, 0 },
};
static const struct sink_name metric_sinks[] = {
	{ "prometheus", METRICS_PROMETHEUS }, { "otlp", METRICS_OTLP },
	{ "console", METRICS_CONSOLE }, { NULL, 0 },
};
static const struct sink_name log_sinks[] = {
	{ "otlp", LOG_SINK_OTLP }, { "console", LOG_SINK_CONSOLE }, { NULL, 0 },
};

static const struct sink_name *sink_named(const struct sink_name *sinks, const char *text,
					  size_t len)
{
	for (; sinks->name; sinks++)
		if (strlen(sinks->name) == len && strncmp(text, sinks->name, len) == 0)
			return sinks;
	return NULL;
}

/* A list of sinks such as "otlp,console" ("none": no sink); a name not in
 * `sinks` is an error that lists them. */
static int parse_sinks(const char *text, const char *source, const struct sink_name *sinks,
		       unsigned *out, char *err, size_t size)
{
	*out = 0;
	while (*text) {
		size_t len = strcspn(text, ",");
		const struct sink_name *sink = sink_named(sinks, text, len);
		char choices[96] = "";

		if (sink) {
			*out |= sink->bit;
		} else if (len != 4 || strncmp(text, "none", 4) != 0) {
			for (const struct sink_name *s = sinks; s->name; s++)
				snprintf(choices + strlen(choices), sizeof(choices) - strlen(choices),
					 "%s, ", s->name);
			return errorf(err, size, "%s: \"%.*s\" is not one of %snone", source,
				    (int)len, text, choices);
		}
		text += len + (text[len] == ',');
	}
	return 0;
}

static int parse_temporality(const char *text, const char *source,
			     enum metrics_temporality *out, char *err, size_t size)
{
	if (strcasecmp(text, "cumulative") == 0)
		*out = TEMPORALITY_CUMULATIVE;
	else if (strcasecmp(text, "delta") == 0)
		*out = TEMPORALITY_DELTA;
	else if (strcasecmp(text, "lowmemory") == 0)
		*out = TEMPORALITY_LOWMEMORY;
	else
		return errorf(err, size, "%s: \"%s\" is not one of cumulative, delta, lowmemory",
			    source, text);
	return 0;
}

/* "1", "true", "0" or "false": anything else is a mistake, not "off". */
static int parse_switch(const char *text, const char *source, bool *out, char *err, size_t size)
{
	if (strcmp(text, "1") == 0 || strcasecmp(text, "true") == 0)
		*out = true;
	else if (strcmp(text, "0") == 0 || strcasecmp(text, "false") == 0)
		*out = false;
	else
		return errorf(err, size, "%s: \"%s\" is not 1, 0, true or false", source, text);
	return 0;
}

static int set_text(char *dst, size_t size, const char *text, const char *source, char *err,
		    size_t err_size)
{
	if (strlen(text) >= size || !text[0])
		return errorf(err, err_size, "%s: \"%s\" is empty or longer than %zu bytes", source,
			    text, size - 1);
	memcpy(dst, text, strlen(text) + 1);
	return 0;
}

struct number_setting {
	const char *env;
	const char *flag;
	uint32_t min, max;
	size_t offset;
};

static const struct number_setting numbers[] = {
	{ "SONDE_CAPTURE_BYTES", "capture-bytes", 64, SONDE_CAPTURE_MAX,
	  offsetof(struct sonde_config, capture_bytes) },
	{ "SONDE_RINGBUF_BYTES", "ringbuf-bytes", 1u << 16, 1u << 30,
	  offsetof(struct sonde_config, ringbuf_bytes) },
	{ "SONDE_MAX_CONNECTIONS", "max-connections", 1024, 1u << 24,
	  offsetof(struct sonde_config, max_connections) },
	{ "SONDE_POLL_MS", "poll-ms", 1, 1000, offsetof(struct sonde_config, poll_ms) },
	{ "OTEL_BSP_MAX_QUEUE_SIZE", "max-queue-size", 1, 1u << 20,
	  offsetof(struct sonde_config, max_queue_size) },
	{ "OTEL_BSP_MAX_EXPORT_BATCH_SIZE", "max-export-batch", 1, 1u << 20,
	  offsetof(struct sonde_config, max_export_batch) },
	{ "OTEL_BSP_SCHEDULE_DELAY", "schedule-delay-ms", 0, 3600000,
	  offsetof(struct sonde_config, schedule_delay_ms) },
	{ "OTEL_BSP_EXPORT_TIMEOUT", "export-timeout-ms", 1, 3600000,
	  offsetof(struct sonde_config, export_timeout_ms) },
	{ "SONDE_STATS_INTERVAL", "stats-interval", 0, 86400,
	  offsetof(struct sonde_config, stats_interval_s) },
	{ "OTEL_EXPORTER_PROMETHEUS_PORT", "prometheus-port", 1, 65535,
	  offsetof(struct sonde_config, prometheus_port) },
	{ "SONDE_METRICS_CARDINALITY_LIMIT", "metrics-cardinality-limit", 1, 1000000,
	  offsetof(struct sonde_config, cardinality_limit) },
	{ "OTEL_METRIC_EXPORT_INTERVAL", "metric-export-interval-ms", 1, 86400000,
	  offsetof(struct sonde_config, metric_interval_ms) },
	{ "OTEL_METRIC_EXPORT_TIMEOUT", "metric-export-timeout-ms", 1, 3600000,
	  offsetof(struct sonde_config, metric_timeout_ms) },
	{ "SONDE_LOGS_RATE_LIMIT", "logs-rate-limit", 1, 1000000,
	  offsetof(struct sonde_config, log_rate_limit) },
	{ "SONDE_LOGS_CAPTURE_BYTES", "logs-capture-bytes", 64, SONDE_CAPTURE_MAX,
	  offsetof(struct sonde_config, log_capture_bytes) },
	{ "OTEL_BLRP_MAX_QUEUE_SIZE", "logs-max-queue-size", 1, 1u << 20,
	  offsetof(struct sonde_config, blrp_max_queue) },
	{ "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE", "logs-max-export-batch", 1, 1u << 20,
	  offsetof(struct sonde_config, blrp_max_batch) },
	{ "OTEL_BLRP_SCHEDULE_DELAY", "logs-schedule-delay-ms", 0, 3600000,
	  offsetof(struct sonde_config, blrp_delay_ms) },
	{ "OTEL_BLRP_EXPORT_TIMEOUT", "logs-export-timeout-ms", 1, 3600000,
	  offsetof(struct sonde_config, blrp_timeout_ms) },
};

#define NNUMBERS (sizeof(numbers) / sizeof(numbers[0]))

/* Settings that are text, kept as given (checked where they are used). */
struct text_setting {
	const char *env;
	const char *flag;
	size_t offset, size;
};

#define TEXT_FIELD(name) offsetof(struct sonde_config, name), sizeof(((struct sonde_config *)0)->name)

static const struct text_setting texts[] = {
	{ "SONDE_STATS_FILE", "stats-file", TEXT_FIELD(stats_file) },
	{ "SONDE_COMMAND_SPANS", "command-spans", TEXT_FIELD(command_spans) },
	{ "SONDE_ENTRY_POINTS", "entry-points", TEXT_FIELD(entry_points) },
	{ "SONDE_LOGS_FILES", "logs-files", TEXT_FIELD(log_files) },
	{ "SONDE_LOGS_REDACT", "logs-redact", TEXT_FIELD(log_redact) },
	{ "SONDE_INCLUDE", "include", TEXT_FIELD(scope_include) },
	{ "SONDE_EXCLUDE", "exclude", TEXT_FIELD(scope_exclude) },
	{ "SONDE_SERVICE_NAMES", "service-names", TEXT_FIELD(service_names) },
	{ "OTEL_EXPORTER_PROMETHEUS_HOST", "prometheus-host", TEXT_FIELD(prometheus_host) },
};

#define NTEXTS (sizeof(texts) / sizeof(texts[0]))

static int set_text_setting(struct sonde_config *cfg, const struct text_setting *t,
			    const char *text, const char *source, char *err, size_t size)
{
	return set_text((char *)cfg + t->offset, t->size, text, source, err, size);
}

static uint32_t *field(struct sonde_config *cfg, const struct number_setting *n)
{
	return (uint32_t *)((char *)cfg + n->offset);
}

static int set_number(struct sonde_config *cfg, const struct number_setting *n, const char *text,
		      const char *source, char *err, size_t size)
{
	if (parse_u32(text, n->min, n->max, field(cfg, n)))
		return errorf(err, size, "%s: \"%s\" is not a whole number from %u to %u", source,
			    text, n->min, n->max);
	return 0;
}

static void set_defaults(struct sonde_config *cfg)
{
	memset(cfg, 0, sizeof(*cfg));
	cfg->exporters = EXPORTER_CONSOLE;
	cfg->capture_bytes = 512;
	cfg->ringbuf_bytes = 4u << 20;
	cfg->max_connections = 65536;
	cfg->poll_ms = 20;
	cfg->max_queue_size = 2048;
	cfg->max_export_batch = 512;
	cfg->schedule_delay_ms = 5000;
	cfg->export_timeout_ms = 30000;
	strcpy(cfg->prometheus_host, "localhost");
	cfg->prometheus_port = 9464;
	cfg->cardinality_limit = 2000;
	cfg->metric_interval_ms = 60000;
	cfg->metric_timeout_ms = 30000;
	cfg->log_rate_limit = 10000;
	cfg->log_capture_bytes = 1024;
	cfg->blrp_max_queue = 2048;
	cfg->blrp_max_batch = 512;
	cfg->blrp_delay_ms = 1000;
	cfg->blrp_timeout_ms = 30000;
}

/* With no exporter named, a configured OTLP endpoint means OTLP (as an
 * SDK would export); with neither, spans go to the console. */
static int from_env(struct sonde_config *cfg, struct otlp_settings *otlp,
		    const struct config_env *env, char *err, size_t size)
{
	const char *v = env->get(env->ctx, "OTEL_TRACES_EXPORTER");

	otlp_settings_from_env(&otlp[OTLP_TRACES], OTLP_TRACES, env);
	otlp_settings_from_env(&otlp[OTLP_METRICS], OTLP_METRICS, env);
	otlp_settings_from_env(&otlp[OTLP_LOGS], OTLP_LOGS, env);
	cfg->exporters_named = v && v[0];
	if (cfg->exporters_named &&
	    parse_sinks(v, "OTEL_TRACES_EXPORTER", trace_sinks, &cfg->exporters, err, size))
		return -1;
	for (size_t i = 0; i < NNUMBERS; i++) {
		v = env->get(env->ctx, numbers[i].env);
		if (v && v[0] && set_number(cfg, &numbers[i], v, numbers[i].env, err, size))
			return -1;
	}
	for (size_t i = 0; i < NTEXTS; i++) {
		v = env->get(env->ctx, texts[i].env);
		if (v && v[0] && set_text_setting(cfg, &texts[i], v, texts[i].env, err, size))
			return -1;
	}
	v = env->get(env->ctx, "SONDE_BUFFER");
	if (v && v[0] && parse_buffer(v, &cfg->buffer))
		return errorf(err, size, "SONDE_BUFFER: \"%s\" is not one of auto, ring, perf", v);
	v = env->get(env->ctx, "SONDE_EXPORT_SCHED");
	if (v && v[0] && parse_sched(v, "SONDE_EXPORT_SCHED", &cfg->export_sched, err, size))
		return -1;
	v = env->get(env->ctx, "SONDE_EXCLUDE_COMM");
	if (v && v[0] && parse_exclude(cfg, v, "SONDE_EXCLUDE_COMM", err, size))
		return -1;
	v = env->get(env->ctx, "SONDE_KEEP_QUERY");
	if (v && v[0] && parse_switch(v, "SONDE_KEEP_QUERY", &cfg->keep_query, err, size))
		return -1;
	v = env->get(env->ctx, "SONDE_PIN");
	if (v && v[0] && parse_switch(v, "SONDE_PIN", &cfg->pin, err, size))
		return -1;
	v = env->get(env->ctx, "OTEL_METRICS_EXPORTER");
	if (v && v[0] && parse_sinks(v, "OTEL_METRICS_EXPORTER", metric_sinks,
					     &cfg->metrics_exporters, err, size))
		return -1;
	v = env->get(env->ctx, "OTEL_LOGS_EXPORTER");
	if (v && v[0] && parse_sinks(v, "OTEL_LOGS_EXPORTER", log_sinks, &cfg->log_sinks, err, size))
		return -1;
	v = env->get(env->ctx, "SONDE_VERBOSE");
	if (v && v[0] && parse_switch(v, "SONDE_VERBOSE", &cfg->verbose, err, size))
		return -1;
	v = env->get(env->ctx, "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE");
	if (v && v[0] && parse_temporality(v, "OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE",
					   &cfg->temporality, err, size))
		return -1;
	return 0;
}

enum {
	OPT_EXPORTER = 256,
	OPT_BUFFER,
	OPT_EXPORT_SCHED,
	OPT_EXCLUDE,
	OPT_KEEP_QUERY,
	OPT_PIN,
	OPT_METRICS_EXPORTER,
	OPT_TEMPORALITY,
	OPT_LOGS_EXPORTER,
	OPT_CONFIG,
	OPT_CHECK_CONFIG,
	OPT_NUMBER,
	OPT_TEXT = OPT_NUMBER + NNUMBERS,
	OPT_OTLP = OPT_TEXT + NTEXTS,
};

static int from_flags(struct sonde_config *cfg, struct otlp_settings *otlp, int argc,
		      char **argv, char *err, size_t size)
{
	/* The fixed options below, the numeric ones, the OTLP ones, and the
	 * terminator. */
	struct option opts[14 + NNUMBERS + NTEXTS + OTLP_SETTINGS + 1];
	size_t n = 0;
	int c, idx;

	opts[n++] = (struct option){ "exporter", required_argument, NULL, OPT_EXPORTER };
	opts[n++] = (struct option){ "buffer", required_argument, NULL, OPT_BUFFER };
	opts[n++] = (struct option){ "exclude-comm", required_argument, NULL, OPT_EXCLUDE };
	opts[n++] = (struct option){ "export-sched", required_argument, NULL, OPT_EXPORT_SCHED };
	opts[n++] = (struct option){ "keep-query", no_argument, NULL, OPT_KEEP_QUERY };
	opts[n++] = (struct option){ "pin", no_argument, NULL, OPT_PIN };
	opts[n++] = (struct option){ "metrics-exporter", required_argument, NULL,
				     OPT_METRICS_EXPORTER };
	opts[n++] = (struct option){ "metrics-temporality", required_argument, NULL,
				     OPT_TEMPORALITY };
	opts[n++] = (struct option){ "logs-exporter", required_argument, NULL, OPT_LOGS_EXPORTER };
	opts[n++] = (struct option){ "config", required_argument, NULL, OPT_CONFIG };
	opts[n++] = (struct option){ "check-config", no_argument, NULL, OPT_CHECK_CONFIG };
	opts[n++] = (struct option){ "verbose", no_argument, NULL, 'v' };
	opts[n++] = (struct option){ "help", no_argument, NULL, 'h' };
	opts[n++] = (struct option){ "version", no_argument, NULL, 'V' };
	for (size_t i = 0; i < NNUMBERS; i++)
		opts[n++] = (struct option){ numbers[i].flag, required_argument, NULL,
					     OPT_NUMBER + (int)i };
	for (size_t i = 0; i < NTEXTS; i++)
		opts[n++] = (struct option){ texts[i].flag, required_argument, NULL,
					     OPT_TEXT + (int)i };
	for (int i = 0; i < OTLP_SETTINGS; i++)
		opts[n++] = (struct option){ otlp_setting_flag(i), required_argument, NULL,
					     OPT_OTLP + i };
	opts[n] = (struct option){ 0 };
	assert(n + 1 == sizeof(opts) / sizeof(opts[0]));
	optind = 1;
	opterr = 0;
	while ((c = getopt_long(argc, argv, "vhV", opts, &idx)) != -1) {
		char source[64];

		switch (c) {
		case OPT_EXPORTER:
			if (parse_sinks(optarg, "--exporter", trace_sinks, &cfg->exporters, err, size))
				return -1;
			cfg->exporters_named = true;
			break;
		case OPT_BUFFER:
			if (parse_buffer(optarg, &cfg->buffer))
				return errorf(err, size, "--buffer: \"%s\" is not one of auto, ring, perf",
					    optarg);
			break;
		case OPT_EXPORT_SCHED:
			if (parse_sched(optarg, "--export-sched", &cfg->export_sched, err, size))
				return -1;
			break;
		case OPT_EXCLUDE:
			if (parse_exclude(cfg, optarg, "--exclude-comm", err, size))
				return -1;
			break;
		case OPT_KEEP_QUERY:
			cfg->keep_query = true;
			break;
		case OPT_PIN:
			cfg->pin = true;
			break;
		case OPT_METRICS_EXPORTER:
			if (parse_sinks(optarg, "--metrics-exporter", metric_sinks,
					&cfg->metrics_exporters, err, size))
				return -1;
			break;
		case OPT_LOGS_EXPORTER:
			if (parse_sinks(optarg, "--logs-exporter", log_sinks, &cfg->log_sinks, err, size))
				return -1;
			break;
		case OPT_TEMPORALITY:
			if (parse_temporality(optarg, "--metrics-temporality", &cfg->temporality, err,
					      size))
				return -1;
			break;
		case OPT_CONFIG: /* read before anything else: see config_path */
			break;
		case OPT_CHECK_CONFIG:
			cfg->check_config = true;
			break;
		case 'v':
			cfg->verbose = true;
			break;
		case 'h':
			cfg->help = true;
			break;
		case 'V':
			cfg->version = true;
			break;
		default:
			if (c >= OPT_NUMBER && c < OPT_NUMBER + (int)NNUMBERS) {
				snprintf(source, sizeof(source), "--%s", numbers[c - OPT_NUMBER].flag);
				if (set_number(cfg, &numbers[c - OPT_NUMBER], optarg, source, err, size))
					return -1;
				break;
			}
			if (c >= OPT_TEXT && c < OPT_TEXT + (int)NTEXTS) {
				snprintf(source, sizeof(source), "--%s", texts[c - OPT_TEXT].flag);
				if (set_text_setting(cfg, &texts[c - OPT_TEXT], optarg, source, err, size))
					return -1;
				break;
			}
			if (c >= OPT_OTLP && c < OPT_OTLP + OTLP_SETTINGS) {
				for (int signal = 0; signal < OTLP_SIGNALS; signal++)
					otlp_settings_set_flag(&otlp[signal], c - OPT_OTLP, optarg);
				break;
			}
			return errorf(err, size, "unknown or incomplete option \"%s\" (see --help)",
				    argv[optind - 1]);
		}
	}
	if (optind < argc)
		return errorf(err, size, "unexpected argument \"%s\" (see --help)", argv[optind]);
	return 0;
}

/* The stats file is written (with a rename) every second: its directory
 * must take a new file now, not fail then. */
static int check_entry_points(const char *text, char *err, size_t size)
{
	struct entry_points *eps = malloc(sizeof(*eps));
	int ret;

	if (!eps)
		return errorf(err, size, "SONDE_ENTRY_POINTS: out of memory");
	ret = jobs_parse_entry_points(text, eps, err, size);
	if (!ret) {
		uint64_t offsets[JOBS_NATIVE_MAX];

		ret = jobs_find_natives(eps, offsets, err, size);
	}
	free(eps);
	return ret;
}

static int check_writable(const char *path, char *err, size_t size)
{
	char dir[sizeof(((struct sonde_config *)0)->stats_file)];
	char *slash;

	snprintf(dir, sizeof(dir), "%s", path);
	slash = strrchr(dir, '/');
	if (!slash)
		snprintf(dir, sizeof(dir), ".");
	else if (slash == dir)
		dir[1] = '\0';
	else
		*slash = '\0';
	if (access(dir, W_OK) != 0)
		return errorf(err, size, "--stats-file (SONDE_STATS_FILE): cannot write in \"%s\": %s",
			    dir, strerror(errno));
	return 0;
}

static int parse_sources(struct sonde_config *cfg, int argc, char **argv,
			 const struct config_env *env, char *err, size_t err_size)
{
	struct otlp_settings otlp[OTLP_SIGNALS];

	if (from_env(cfg, otlp, env, err, err_size) ||
	    from_flags(cfg, otlp, argc, argv, err, err_size))
		return -1;
	/* An endpoint, from a variable or a flag, means OTLP unless an
	 * exporter was named. */
	if (!cfg->exporters_named && otlp_settings_have_endpoint(&otlp[OTLP_TRACES]))
		cfg->exporters = EXPORTER_OTLP;
	for (int signal = 0; signal < OTLP_SIGNALS; signal++)
		if (otlp_settings_check(&otlp[signal], err, err_size))
			return -1;
	if (cfg->stats_file[0] && check_writable(cfg->stats_file, err, err_size))
		return -1;
	if (scope_check(&(struct scope_texts){ cfg->scope_include, cfg->scope_exclude,
					       cfg->service_names }, err, err_size))
		return -1;
	if (check_entry_points(cfg->entry_points, err, err_size))
		return -1;
	if ((cfg->exporters & EXPORTER_OTLP) &&
	    otlp_settings_resolve(&otlp[OTLP_TRACES], &cfg->otlp, err, err_size))
		return -1;
	if ((cfg->metrics_exporters & METRICS_OTLP) &&
	    otlp_settings_resolve(&otlp[OTLP_METRICS], &cfg->metrics_otlp, err, err_size))
		return -1;
	if ((cfg->log_sinks & LOG_SINK_OTLP) &&
	    otlp_settings_resolve(&otlp[OTLP_LOGS], &cfg->logs_otlp, err, err_size))
		return -1;
	if (cfg->blrp_max_batch > cfg->blrp_max_queue)
		return errorf(err, err_size,
			    "OTEL_BLRP_MAX_EXPORT_BATCH_SIZE (%u) exceeds OTEL_BLRP_MAX_QUEUE_SIZE (%u)",
			    cfg->blrp_max_batch, cfg->blrp_max_queue);
	if (cfg->ringbuf_bytes & (cfg->ringbuf_bytes - 1))
		return errorf(err, err_size, "ring buffer size %u is not a power of two",
			    cfg->ringbuf_bytes);
	if (cfg->max_export_batch > cfg->max_queue_size)
		return errorf(err, err_size,
			    "OTEL_BSP_MAX_EXPORT_BATCH_SIZE (%u) exceeds OTEL_BSP_MAX_QUEUE_SIZE (%u)",
			    cfg->max_export_batch, cfg->max_queue_size);
	return 0;
}

/* ---- the configuration file ------------------------------------------------ */

/* What a list setting's values are joined with, as its variable takes
 * them. */
static const char *list_separator(const char *key)
{
	static const struct { const char *key, *separator; } lists[] = {
		{ "OTEL_TRACES_EXPORTER", "," },   { "OTEL_METRICS_EXPORTER", "," },
		{ "OTEL_LOGS_EXPORTER", "," },     { "SONDE_EXCLUDE_COMM", "," },
		{ "SONDE_COMMAND_SPANS", "," },    { "SONDE_LOGS_FILES", ":" },
		{ "SONDE_ENTRY_POINTS", "," },
		{ "SONDE_LOGS_REDACT", ";;" },     { "SONDE_INCLUDE", "," },
		{ "SONDE_EXCLUDE", "," },          { "SONDE_SERVICE_NAMES", "," },
	};

	for (size_t i = 0; i < sizeof(lists) / sizeof(lists[0]); i++)
		if (strcmp(lists[i].key, key) == 0)
			return lists[i].separator;
	if (strncmp(key, "OTEL_EXPORTER_OTLP_", 19) == 0 && strstr(key, "HEADERS"))
		return ",";
	return NULL;
}

/* --config's file, or the default one when it exists; NULL for none. */
static const char *config_path(int argc, char **argv, const char *default_file)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--config") == 0 && i + 1 < argc)
			return argv[i + 1];
		if (strncmp(argv[i], "--config=", 9) == 0)
			return argv[i] + 9;
	}
	return default_file && access(default_file, F_OK) == 0 ? default_file : NULL;
}

/* Settings by their variable's name: the environment's, else the file's. */
struct sources {
	config_getenv_fn getenv_fn;
	struct config_file *file;
};

static const char *lookup(void *ctx, const char *name)
{
	struct sources *src = ctx;
	const char *v = src->getenv_fn(name);
	struct config_entry *e;

	if (v && v[0])
		return v;
	e = src->file ? config_file_find(src->file, name) : NULL;
	if (!e)
		return NULL;
	e->used = true;
	return e->value;
}

/* The names from_env looks up: what a file may set. Copied: the OTLP
 * settings' names are built in a buffer of their own. */
struct known_names {
	char names[128][64];
	size_t count;
	bool full;
};

static const char *record_name(void *ctx, const char *name)
{
	struct known_names *k = ctx;

	if (k->count < sizeof(k->names) / sizeof(k->names[0]))
		snprintf(k->names[k->count++], sizeof(k->names[0]), "%s", name);
	else
		k->full = true;
	return NULL;
}

static int check_keys(const struct config_file *f, char *err, size_t size)
{
	struct known_names *known = calloc(1, sizeof(*known));
	struct config_env recorder = { record_name, known };
	struct otlp_settings otlp[OTLP_SIGNALS];
	struct sonde_config *scratch = malloc(sizeof(*scratch));
	int ret = 0;

	if (!known || !scratch) {
		ret = errorf(err, size, "%s: %s", f->path, strerror(ENOMEM));
		goto out;
	}
	set_defaults(scratch);
	from_env(scratch, otlp, &recorder, err, size);
	assert(!known->full);
	for (size_t i = 0; i < f->count && !ret; i++) {
		size_t j = 0;

		while (j < known->count && strcmp(known->names[j], f->entries[i].key) != 0)
			j++;
		if (j == known->count)
			ret = errorf(err, size, "%s:%d: unknown setting %s (settings are named as "
				     "the environment variables in sonde --help)", f->path,
				     f->entries[i].line, f->entries[i].key);
	}
out:
	free(known);
	free(scratch);
	return ret;
}

/* An error about a setting the file gave says where in the file. */
static void place_error(const struct config_file *f, char *err, size_t size)
{
	char copy[512];

	for (size_t i = 0; i < f->count; i++) {
		if (!f->entries[i].used || !strstr(err, f->entries[i].key))
			continue;
		snprintf(copy, sizeof(copy), "%s", err);
		snprintf(err, size, "%s:%d: %s", f->path, f->entries[i].line, copy);
		return;
	}
}

int config_parse(struct sonde_config *cfg, int argc, char **argv, config_getenv_fn getenv_fn,
		 const char *default_file, char *err, size_t err_size)
{
	struct config_file file = { .count = 0 };
	struct sources src = { getenv_fn, NULL };
	struct config_env env = { lookup, &src };
	const char *path = config_path(argc, argv, default_file);
	int ret;

	set_defaults(cfg);
	if (path) {
		if (config_file_load(&file, path, list_separator, err, err_size) ||
		    check_keys(&file, err, err_size)) {
			config_file_free(&file);
			return -1;
		}
		src.file = &file;
		snprintf(cfg->config_file, sizeof(cfg->config_file), "%s", path);
	}
	ret = parse_sources(cfg, argc, argv, &env, err, err_size);
	if (ret && src.file)
		place_error(&file, err, err_size);
	config_file_free(&file);
	return ret;
}

void config_usage(FILE *out)
{
	fprintf(out,
		"usage: sonde [options]\n"
		"Traces every HTTP/1.x, PostgreSQL and Redis exchange on this host into\n"
		"OpenTelemetry spans, and counts them as RED metrics.\n\n"
		"  --exporter LIST           where spans go: otlp, console, tree (each finished\n"
		"                            trace as an indented tree), none, or e.g. otlp,tree\n"
		"                            (OTEL_TRACES_EXPORTER; default otlp when an OTLP\n"
		"                            endpoint is set, else console)\n"
		"  --otlp-endpoint URL       collector (OTEL_EXPORTER_OTLP_ENDPOINT, or the exact\n"
		"                            URL in OTEL_EXPORTER_OTLP_TRACES_ENDPOINT; default\n"
		"                            http://localhost:4318, grpc: http://localhost:4317)\n"
		"  --otlp-protocol P         grpc or http/protobuf (OTEL_EXPORTER_OTLP_PROTOCOL;\n"
		"                            default http/protobuf)\n"
		"  --otlp-headers K=V,...    extra request headers (OTEL_EXPORTER_OTLP_HEADERS)\n"
		"  --otlp-compression C      gzip or none (OTEL_EXPORTER_OTLP_COMPRESSION)\n"
		"  --otlp-timeout-ms N       per request (OTEL_EXPORTER_OTLP_TIMEOUT; default 10000)\n"
		"  --otlp-certificate F      CA bundle for TLS (OTEL_EXPORTER_OTLP_CERTIFICATE)\n"
		"  --otlp-client-certificate F, --otlp-client-key F   mutual TLS\n"
		"                            (OTEL_EXPORTER_OTLP_CLIENT_CERTIFICATE, _CLIENT_KEY)\n"
		"  --otlp-insecure true|false  h2c for a gRPC endpoint given without a scheme\n"
		"                            (OTEL_EXPORTER_OTLP_INSECURE)\n"
		"                            Each OTEL_EXPORTER_OTLP_X also reads as\n"
		"                            OTEL_EXPORTER_OTLP_TRACES_X for spans and\n"
		"                            OTEL_EXPORTER_OTLP_METRICS_X for metrics, which win.\n"
		"  --capture-bytes N         payload bytes captured per syscall, 64-%u\n"
		"                            (SONDE_CAPTURE_BYTES; default 512)\n"
		"  --keep-query              export url.query (SONDE_KEEP_QUERY=1; default off)\n"
		"  --pin                     pin the counters and the connection table under\n"
		"                            " PROBE_PIN_DIR " for bpftool (SONDE_PIN=1)\n"
		"  --buffer auto|ring|perf   kernel-to-agent transport (SONDE_BUFFER; default auto,\n"
		"                            the ring buffer, which every kernel sonde runs on has)\n"
		"  --export-sched idle|normal  the export thread's scheduling (SONDE_EXPORT_SCHED;\n"
		"                            default idle: it runs only when the CPU has nothing\n"
		"                            else to do; on a saturated host spans are dropped\n"
		"                            and counted instead of the programs slowed down)\n"
		"  --exclude-comm A,B        never trace processes with these names (comm, up to\n"
		"                            8 of 15 characters; SONDE_EXCLUDE_COMM), in the kernel\n"
		"  --include S,S, --exclude S,S   trace only processes an include selector picks\n"
		"                            (all when none is given), never one an exclude\n"
		"                            selector picks (SONDE_INCLUDE, SONDE_EXCLUDE); a\n"
		"                            selector is exe:GLOB (executable path), cgroup:GLOB,\n"
		"                            comm:GLOB, pid:N[-M] or port:N[-M] (a port it accepts\n"
		"                            connections on, from the first such connection)\n"
		"  --service-names S=N,S=N   service.name N for processes selector S picks, when\n"
		"                            their environment names none (SONDE_SERVICE_NAMES)\n"
		"  --ringbuf-bytes N         ring buffers of all CPUs, power of two (default 4 MiB)\n"
		"  --max-connections N       TCP socket ends the kernel's table holds, ~100 bytes\n"
		"                            each; the idle ones give way when it is full\n"
		"                            (SONDE_MAX_CONNECTIONS; default 65536)\n"
		"  --poll-ms N               longest wait of an event in the ring (default 20)\n"
		"  --max-queue-size N        spans queued for export (OTEL_BSP_MAX_QUEUE_SIZE)\n"
		"  --max-export-batch N      (OTEL_BSP_MAX_EXPORT_BATCH_SIZE)\n"
		"  --schedule-delay-ms N     (OTEL_BSP_SCHEDULE_DELAY)\n"
		"  --export-timeout-ms N     retries of one batch, and the final flush, end after\n"
		"                            this (OTEL_BSP_EXPORT_TIMEOUT; default 30000)\n"
		"  --metrics-exporter LIST   prometheus, otlp, console, none, or a list\n"
		"                            (OTEL_METRICS_EXPORTER; default none)\n"
		"  --metric-export-interval-ms N, --metric-export-timeout-ms N   OTLP and console\n"
		"                            (OTEL_METRIC_EXPORT_INTERVAL, _TIMEOUT; default\n"
		"                            60000, 30000)\n"
		"  --metrics-temporality T   cumulative, delta or lowmemory (OTEL_EXPORTER_OTLP_\n"
		"                            METRICS_TEMPORALITY_PREFERENCE; default cumulative)\n"
		"  --prometheus-host H, --prometheus-port N   where GET /metrics is served\n"
		"                            (OTEL_EXPORTER_PROMETHEUS_HOST, _PORT; default\n"
		"                            localhost:9464)\n"
		"  --metrics-cardinality-limit N   series per metric before the overflow series\n"
		"                            (SONDE_METRICS_CARDINALITY_LIMIT; default 2000)\n"
		"  --command-spans A,B       programs (or scripts) that get a span from exec to\n"
		"                            exit, the parent of their spans (SONDE_COMMAND_SPANS)\n"
		"  --entry-points LIST       python:QUALNAME (a Python function whose asyncio\n"
		"                            tasks and threads get a span, the parent of theirs;\n"
		"                            a uprobe hit per asyncio task of a CPython process)\n"
		"                            or native:/PATH:SYMBOL[:N=KEY...] (each call of a\n"
		"                            native function, argument N as attribute KEY; an\n"
		"                            entry and a return probe per call), ',' between\n"
		"                            (SONDE_ENTRY_POINTS)\n"
		"  --logs-exporter LIST      what traced processes write to stdout and stderr, as\n"
		"                            OTLP log records: otlp, console, none (OTEL_LOGS_\n"
		"                            EXPORTER; default none); OTEL_EXPORTER_OTLP_LOGS_X\n"
		"                            override OTEL_EXPORTER_OTLP_X for logs\n"
		"  --logs-rate-limit N       writes per second per process (SONDE_LOGS_RATE_LIMIT;\n"
		"                            default 10000; more are dropped, counted)\n"
		"  --logs-capture-bytes N    bytes per write (SONDE_LOGS_CAPTURE_BYTES; 1024)\n"
		"  --logs-files P:P          log files (paths or shell patterns) whose writes by\n"
		"                            traced processes are log records too, found open\n"
		"                            within a second (SONDE_LOGS_FILES)\n"
		"  --logs-redact P;;P        POSIX extended regular expressions whose matches are\n"
		"                            replaced by [REDACTED] (SONDE_LOGS_REDACT)\n"
		"  --logs-max-queue-size N, --logs-max-export-batch N, --logs-schedule-delay-ms N,\n"
		"  --logs-export-timeout-ms N   (OTEL_BLRP_MAX_QUEUE_SIZE, _MAX_EXPORT_BATCH_SIZE,\n"
		"                            _SCHEDULE_DELAY, _EXPORT_TIMEOUT: 2048, 512, 1000, 30000)\n"
		"  --stats-interval S        log counters every S seconds (0: at exit only)\n"
		"  --stats-file PATH         write counters as JSON, every second and at exit\n"
		"                            (SONDE_STATS_FILE)\n"
		"  --config FILE             settings from a YAML file (default: %s when it\n"
		"                            exists): keys are the variables above, lists may be\n"
		"                            YAML sequences; flags and variables win over it\n"
		"  --check-config            validate the settings, say so, and exit\n"
		"  -v, --verbose             debug logging (SONDE_VERBOSE=1)\n"
		"  -V, --version\n",
		SONDE_CAPTURE_MAX, CONFIG_FILE_DEFAULT);
}
