/* The configuration file: keys are the variables' names, lists are YAML
 * sequences joined as the variable takes them, the environment and flags
 * win over it, and what is wrong in it names its file, line and key. */
#include "config.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *env_delay;

static char *fake_getenv(const char *name)
{
	if (env_delay && strcmp(name, "OTEL_BSP_SCHEDULE_DELAY") == 0)
		return (char *)env_delay;
	return NULL;
}

/* Writes text to a file of its own and parses with it (and extra flags). */
static int parse(const char *text, const char *flag, struct sonde_config *cfg, char *err)
{
	char path[] = "/tmp/sonde-config-XXXXXX";
	int fd = mkstemp(path);
	char *argv[] = { "sonde", "--config", path, (char *)flag, NULL };
	int ret;

	cr_assert(fd >= 0);
	cr_assert_eq(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	close(fd);
	ret = config_parse(cfg, flag ? 4 : 3, argv, fake_getenv, NULL, err, 512);
	unlink(path);
	return ret;
}

Test(config_file, values_and_lists_as_the_variables_take_them)
{
	struct sonde_config cfg;
	char err[512];

	env_delay = NULL;
	cr_assert_eq(parse("# sonde\n"
			   "OTEL_TRACES_EXPORTER: [console, tree]\n"
			   "SONDE_EXCLUDE_COMM:\n  - wrk\n  - curl\n"
			   "OTEL_BSP_SCHEDULE_DELAY: 200\n"
			   "SONDE_LOGS_REDACT: ['password=\\S+', 'token=\\S+']\n",
			   NULL, &cfg, err), 0, "%s", err);
	cr_expect_eq(cfg.exporters, EXPORTER_CONSOLE | EXPORTER_TREE);
	cr_expect_eq(cfg.excluded_count, 2);
	cr_expect_str_eq(cfg.excluded_comms[1], "curl");
	cr_expect_eq(cfg.schedule_delay_ms, 200);
	cr_expect_str_eq(cfg.log_redact, "password=\\S+;;token=\\S+");
}

Test(config_file, the_environment_and_flags_win_over_the_file)
{
	struct sonde_config cfg;
	char err[512];

	env_delay = "300";
	cr_assert_eq(parse("OTEL_BSP_SCHEDULE_DELAY: 200\n", NULL, &cfg, err), 0, "%s", err);
	cr_expect_eq(cfg.schedule_delay_ms, 300);
	cr_assert_eq(parse("OTEL_BSP_SCHEDULE_DELAY: 200\n", "--schedule-delay-ms=400", &cfg, err),
		     0, "%s", err);
	cr_expect_eq(cfg.schedule_delay_ms, 400);
	env_delay = "soon";
	cr_expect_eq(parse("OTEL_BSP_SCHEDULE_DELAY: 200\n", NULL, &cfg, err), -1);
	cr_expect_null(strstr(err, "/tmp/"), "a bad variable is not the file's: %s", err);
	env_delay = NULL;
}

Test(config_file, what_is_wrong_names_the_file_line_and_key)
{
	struct sonde_config cfg;
	char err[512];

	env_delay = NULL;
	cr_expect_eq(parse("OTEL_BSP_SCHEDULE_DELAY: 1\nSONDE_BUFER: ring\n", NULL, &cfg, err), -1);
	cr_expect(strstr(err, ":2: unknown setting SONDE_BUFER"), "%s", err);
	cr_expect_eq(parse("\nOTEL_BSP_SCHEDULE_DELAY: soon\n", NULL, &cfg, err), -1);
	cr_expect(strstr(err, ":2: OTEL_BSP_SCHEDULE_DELAY: \"soon\""), "%s", err);
	cr_expect_eq(parse("SONDE_BUFFER: [ring, perf]\n", NULL, &cfg, err), -1);
	cr_expect(strstr(err, ":1: SONDE_BUFFER takes one value, not a list"), "%s", err);
	cr_expect_eq(parse("SONDE_BUFFER: {a: b}\n", NULL, &cfg, err), -1);
	cr_expect(strstr(err, ":1: SONDE_BUFFER takes a value, not a mapping"), "%s", err);
	cr_expect_eq(parse("SONDE_BUFFER: ring\nSONDE_BUFFER: perf\n", NULL, &cfg, err), -1);
	cr_expect(strstr(err, ":2: SONDE_BUFFER is given twice"), "%s", err);
	cr_expect_eq(parse("SONDE_BUFFER: [ring\n", NULL, &cfg, err), -1);
	cr_expect(strstr(err, ":2: "), "a YAML error has its line: %s", err);
	cr_expect_eq(parse("- ring\n", NULL, &cfg, err), -1);
	cr_expect(strstr(err, "must be a mapping"), "%s", err);
	cr_expect_eq(parse("OTEL_EXPORTER_OTLP_ENDPOINT: nowhere\n", "--exporter=otlp", &cfg, err),
		     -1);
	cr_expect(strstr(err, ":1: OTEL_EXPORTER_OTLP_ENDPOINT"), "%s", err);
}

/* Settings that are flags first can be said in the file too. */
Test(config_file, the_stats_file_and_debug_logging_too)
{
	struct sonde_config cfg;
	char err[512];

	env_delay = NULL;
	cr_assert_eq(parse("SONDE_STATS_FILE: /tmp/sonde-stats.json\nSONDE_VERBOSE: 1\n", NULL,
			   &cfg, err), 0, "%s", err);
	cr_expect_str_eq(cfg.stats_file, "/tmp/sonde-stats.json");
	cr_expect(cfg.verbose);
	cr_expect_eq(parse("SONDE_STATS_FILE: /nonexistent/dir/stats.json\n", NULL, &cfg, err), -1);
	cr_expect(strstr(err, ":1: --stats-file (SONDE_STATS_FILE): cannot write"), "%s", err);
}

Test(config_file, an_empty_file_sets_nothing)
{
	struct sonde_config cfg;
	char err[512];

	env_delay = NULL;
	cr_assert_eq(parse("", NULL, &cfg, err), 0, "%s", err);
	cr_expect_eq(cfg.schedule_delay_ms, 5000);
}

Test(config_file, a_missing_file_named_by_a_flag_stops_start_up)
{
	struct sonde_config cfg;
	char err[512];
	char *argv[] = { "sonde", "--config", "/nonexistent/sonde.yaml", NULL };

	cr_expect_eq(config_parse(&cfg, 3, argv, fake_getenv, NULL, err, sizeof(err)), -1);
	cr_expect(strstr(err, "/nonexistent/sonde.yaml"), "%s", err);
}

Test(config_file, scope_rules_are_lists_checked_before_start_up)
{
	struct sonde_config cfg;
	char err[512];

	env_delay = NULL;
	cr_assert_eq(parse("SONDE_INCLUDE: ['exe:/usr/sbin/nginx', 'port:8000-8099']\n"
			   "SONDE_EXCLUDE: ['comm:wrk']\n"
			   "SONDE_SERVICE_NAMES: ['port:8080=edge']\n", NULL, &cfg, err), 0, "%s", err);
	cr_expect_str_eq(cfg.scope_include, "exe:/usr/sbin/nginx,port:8000-8099");
	cr_expect_str_eq(cfg.scope_exclude, "comm:wrk");
	cr_expect_str_eq(cfg.service_names, "port:8080=edge");
	cr_expect_eq(parse("SONDE_VERBOSE: 1\nSONDE_EXCLUDE: [nginx]\n", NULL, &cfg, err), -1);
	cr_expect(strstr(err, ":2: --exclude (SONDE_EXCLUDE): \"nginx\" is not KIND:VALUE"), "%s",
		  err);
}

Test(config_file, entry_points_are_a_list_checked_before_start_up)
{
	struct sonde_config cfg;
	char err[512];

	env_delay = NULL;
	cr_assert_eq(parse("SONDE_ENTRY_POINTS:\n  - python:_training_job\n  - python:Worker.run\n",
			   NULL, &cfg, err), 0, "%s", err);
	cr_expect_str_eq(cfg.entry_points, "python:_training_job,python:Worker.run");
	cr_expect_eq(parse("SONDE_VERBOSE: 1\nSONDE_ENTRY_POINTS: [train]\n", NULL, &cfg, err), -1);
	cr_expect(strstr(err, ":2: SONDE_ENTRY_POINTS: \"train\" is not python:QUALNAME"), "%s", err);
	/* A native one names a function its file has. */
	cr_expect_eq(parse("SONDE_ENTRY_POINTS: ['native:/bin/sh:no_such_function']\n", NULL, &cfg,
			   err), -1);
	cr_expect(strstr(err, ":1: SONDE_ENTRY_POINTS: native:/bin/sh:no_such_function: /bin/sh has "
			 "no function no_such_function"), "%s", err);
}
