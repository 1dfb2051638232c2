/* An OTLP exporter's settings from the standard variables
 * (OTEL_EXPORTER_OTLP_*, each with its signal's form, such as
 * OTEL_EXPORTER_OTLP_TRACES_* or _METRICS_*, which wins) and sonde's
 * --otlp-* flags (which win over both), checked into struct otlp_opts with
 * the OpenTelemetry specification's defaults. */
#ifndef SONDE_OTLP_CONFIG_H
#define SONDE_OTLP_CONFIG_H

#include "otlp_transport.h"

#include <stdbool.h>
#include <stddef.h>

typedef char *(*config_getenv_fn)(const char *name);

/* Where settings are looked up by the name of their environment
 * variable: the environment, then the configuration file. */
struct config_env {
	const char *(*get)(void *ctx, const char *name);
	void *ctx;
};

enum otlp_setting {
	OTLP_PROTOCOL,
	OTLP_ENDPOINT,
	OTLP_HEADERS,
	OTLP_COMPRESSION,
	OTLP_TIMEOUT,
	OTLP_CERTIFICATE,
	OTLP_CLIENT_CERTIFICATE,
	OTLP_CLIENT_KEY,
	OTLP_INSECURE,
	OTLP_SETTINGS,
};

/* Raw values and where each came from, before they are checked. */
struct otlp_settings {
	enum otlp_signal signal;
	struct {
		const char *text;    /* NULL: not set */
		char source[48];     /* the variable or flag, for error messages */
		bool signal_only;    /* e.g. OTEL_EXPORTER_OTLP_TRACES_ENDPOINT: used as given */
	} value[OTLP_SETTINGS];
};

void otlp_settings_from_env(struct otlp_settings *s, enum otlp_signal signal,
			    const struct config_env *env);
/* The long option name of a setting, e.g. "otlp-endpoint". */
const char *otlp_setting_flag(enum otlp_setting which);
void otlp_settings_set_flag(struct otlp_settings *s, enum otlp_setting which, const char *text);
/* True when an endpoint is configured: OTLP is then the default exporter. */
bool otlp_settings_have_endpoint(const struct otlp_settings *s);
/* Checks what can be checked without using the settings (protocol,
 * compression, timeout): a mistake in them is one even when the signal is
 * not exported. Returns 0, or -1 with the reason in err. */
int otlp_settings_check(const struct otlp_settings *s, char *err, size_t err_size);
/* Returns 0, or -1 with a reason naming the variable or flag in err. */
int otlp_settings_resolve(const struct otlp_settings *s, struct otlp_opts *out, char *err,
			  size_t err_size);

#endif
