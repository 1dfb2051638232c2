/* sonde's settings: command-line flags over OpenTelemetry environment
 * variables over the configuration file (--config, or the default file
 * when it exists, CONFIG_FILE_DEFAULT for the agent: see config_file.h) over
 * defaults. A bad value is an error naming its source (the file's path
 * and line for a value from the file). */
#ifndef SONDE_CONFIG_H
#define SONDE_CONFIG_H

#include "exporter.h"
#include "log_export.h"
#include "metrics_export.h"
#include "otlp_config.h"
#include "probe.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct sonde_config {
	unsigned exporters;         /* enum exporter_sink bits */
	bool exporters_named;       /* by OTEL_TRACES_EXPORTER or --exporter */
	struct otlp_opts otlp;      /* when exporters has EXPORTER_OTLP */
	enum probe_buffer buffer;
	enum exporter_sched export_sched;
	uint32_t capture_bytes;     /* payload bytes captured per syscall */
	uint32_t ringbuf_bytes;     /* ring buffers of all CPUs, a power of two */
	uint32_t max_connections;   /* entries of the kernel's connection table */
	uint32_t poll_ms;           /* longest time a record waits in the ring */
	uint32_t max_queue_size;    /* OTEL_BSP_MAX_QUEUE_SIZE */
	uint32_t max_export_batch;  /* OTEL_BSP_MAX_EXPORT_BATCH_SIZE */
	uint32_t schedule_delay_ms; /* OTEL_BSP_SCHEDULE_DELAY */
	uint32_t export_timeout_ms; /* OTEL_BSP_EXPORT_TIMEOUT */
	uint32_t stats_interval_s;  /* 0: stats only at exit */
	uint32_t excluded_count;
	char excluded_comms[SONDE_EXCLUDE_MAX][SONDE_COMM_LEN];
	bool keep_query;
	bool pin;                   /* maps pinned under PROBE_PIN_DIR */
	unsigned metrics_exporters; /* enum metrics_sink bits */
	struct otlp_opts metrics_otlp; /* when metrics_exporters has METRICS_OTLP */
	char prometheus_host[256];  /* OTEL_EXPORTER_PROMETHEUS_HOST */
	uint32_t prometheus_port;   /* OTEL_EXPORTER_PROMETHEUS_PORT */
	uint32_t cardinality_limit; /* series per metric */
	uint32_t metric_interval_ms; /* OTEL_METRIC_EXPORT_INTERVAL */
	uint32_t metric_timeout_ms;  /* OTEL_METRIC_EXPORT_TIMEOUT */
	enum metrics_temporality temporality;
	unsigned log_sinks;         /* enum log_sink bits; 0: logs off */
	struct otlp_opts logs_otlp; /* when log_sinks has LOG_SINK_OTLP */
	uint32_t log_rate_limit;    /* writes per second per process */
	uint32_t log_capture_bytes; /* bytes captured per write */
	uint32_t blrp_max_queue;    /* OTEL_BLRP_MAX_QUEUE_SIZE */
	uint32_t blrp_max_batch;    /* OTEL_BLRP_MAX_EXPORT_BATCH_SIZE */
	uint32_t blrp_delay_ms;     /* OTEL_BLRP_SCHEDULE_DELAY */
	uint32_t blrp_timeout_ms;   /* OTEL_BLRP_EXPORT_TIMEOUT */
	char log_redact[2048];      /* SONDE_LOGS_REDACT: patterns, ";;" between */
	char log_files[2048];       /* SONDE_LOGS_FILES: paths or patterns, ':' between */
	char command_spans[1024];   /* SONDE_COMMAND_SPANS: programs, ',' between */
	char entry_points[2048];    /* SONDE_ENTRY_POINTS: python:QUALNAME, ',' between */
	char scope_include[2048];   /* SONDE_INCLUDE: selectors (scope.h), ',' between */
	char scope_exclude[2048];   /* SONDE_EXCLUDE */
	char service_names[2048];   /* SONDE_SERVICE_NAMES: SELECTOR=NAME, ',' between */
	bool verbose;
	bool help;
	bool version;
	bool check_config;          /* --check-config: validate, then exit */
	char config_file[256];      /* the file read, if any */
	char stats_file[256];
};

/* The agent's default configuration file. */
#define CONFIG_FILE_DEFAULT "/etc/sonde/sonde.yaml"

/* Returns 0, or -1 with a one-line reason in err. default_file is read
 * when it exists and --config names none; NULL: no default. */
int config_parse(struct sonde_config *cfg, int argc, char **argv, config_getenv_fn getenv_fn,
		 const char *default_file, char *err, size_t err_size);
void config_usage(FILE *out);

#endif
