/* Command spans: the name and arguments of a command line, and the
 * linker's rule that a command's would-be roots are its children. */
#include "argv.h"
#include "command.h"
#include "harness.h"
#include "linker.h"

#include <criterion/criterion.h>
#include <string.h>

static struct command_span describe(int argc, char **argv)
{
	struct command_span out;

	command_describe(argv, argc, &out);
	return out;
}

Test(command, name_is_the_program_and_its_subcommand_words)
{
	char *ktrdr[] = { "/usr/bin/python3", "/opt/ktrdr/ktrdr", "--request-id", "abc",
			  "models", "train", "AAPL", "momentum" };
	char *git[] = { "/usr/bin/git", "-C", "/src", "remote", "add", "origin", "x" };
	char *plain[] = { "/usr/bin/psql", "-h", "db", "-c", "select 1" };
	struct command_span f = describe(8, ktrdr);

	cr_expect_str_eq(f.name, "ktrdr models train");
	cr_expect_str_eq(f.executable, "ktrdr");
	cr_expect_str_eq(f.args, "--request-id abc models train AAPL momentum");
	f = describe(7, git);
	cr_expect_str_eq(f.name, "git remote add", "a path after an option is skipped");
	f = describe(5, plain);
	cr_expect_str_eq(f.name, "psql", "\"db\" follows an option: maybe its value, never a name");
	char *module[] = { "python3", "-m", "http.server", "8000" };
	f = describe(4, module);
	cr_expect_str_eq(f.executable, "http.server", "a module keeps its dots");
	char *script[] = { "python3", "tool.py", "sync" };
	f = describe(3, script);
	cr_expect_str_eq(f.name, "tool sync");
}

Test(command, secret_option_values_are_redacted_everywhere)
{
	char *argv[] = { "deploy", "--api-token", "s3cr3t", "--password=hunter2", "--user", "ann",
			 "push" };
	struct command_span f = describe(7, argv);

	cr_expect_str_eq(f.args, "--api-token REDACTED --password=REDACTED --user ann push");
	cr_expect_str_eq(f.name, "deploy push");
	cr_expect_null(strstr(f.name, "s3cr3t"));
}

Test(command, a_would_be_root_of_a_command_is_its_child)
{
	struct harness h;
	struct tconn c;
	uint8_t trace_id[TRACE_ID_SIZE] = { 0xaa }, span_id[SPAN_ID_SIZE] = { 0xbb };
	cJSON *ctx;

	h_init(&h, false);
	cr_assert_eq(linker_set_root(tracker_linker(h.tracker), 4100, trace_id, span_id, 1), 0);
	c = h_open(&h, 4100, 5, SONDE_ROLE_CLIENT);
	h_send(&h, &c, SONDE_DIR_EGRESS, "GET /x HTTP/1.1\r\n\r\n");
	h_send(&h, &c, SONDE_DIR_INGRESS, "HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n");
	h_finish(&h);
	cr_assert_eq(h.nspans, 1);
	ctx = cJSON_GetObjectItem(h.spans[0], "context");
	cr_expect_str_eq(cJSON_GetObjectItem(ctx, "trace_id")->valuestring,
			 "0xaa000000000000000000000000000000");
	cr_expect_str_eq(cJSON_GetObjectItem(h.spans[0], "parent_id")->valuestring,
			 "0xbb00000000000000");
	cr_expect_eq(h.stats.link.parent_command, 1);
	cr_expect_eq(h.stats.link.roots, 0);
	h_free(&h);
}

Test(command, a_process_command_line_keeps_no_secret)
{
	char *argv[] = { "/usr/bin/app", "--db-password", "hunter2", "--API_KEY=abc", "--mode",
			 "fast" };
	char out[256];

	argv_join_redacted(argv, 6, out, sizeof(out));
	cr_expect_str_eq(out, "/usr/bin/app --db-password REDACTED --API_KEY=REDACTED --mode fast");
}
