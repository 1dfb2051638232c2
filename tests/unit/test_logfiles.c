/* Configured log files: a process's open files matched against the
 * patterns, reported once when found, and again when no longer open. */
#include "logfiles.h"
#include "tmpdir.h"

#include <criterion/criterion.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct seen {
	int watched, unwatched;
	int32_t fd;
	char path[LOGFILES_PATH_MAX];
};

static void on_file(void *ctx, uint32_t tgid, int32_t fd, const char *path, bool watch)
{
	struct seen *s = ctx;

	cr_expect_eq(tgid, 77);
	if (watch)
		s->watched++;
	else
		s->unwatched++;
	s->fd = fd;
	snprintf(s->path, sizeof(s->path), "%s", path);
}

/* A fake /proc/77/fd whose links point where the test says. */
static void link_fd(const char *root, int fd, const char *target)
{
	char path[256];

	snprintf(path, sizeof(path), "%s/77/fd/%d", root, fd);
	unlink(path);
	if (target)
		cr_assert_eq(symlink(target, path), 0);
}

Test(logfiles, open_files_matching_a_pattern_are_watched_until_closed)
{
	char root[] = "/tmp/sonde-logfiles-XXXXXX";
	char dir[128], err[256];
	struct seen s = { 0 };
	struct logfiles *f;

	cr_assert_not_null(mkdtemp(root));
	snprintf(dir, sizeof(dir), "mkdir -p %s/77/fd", root);
	cr_assert_eq(system(dir), 0);
	link_fd(root, 1, "/dev/pts/0");
	link_fd(root, 5, "/var/log/app/api.log");
	link_fd(root, 6, "/var/log/app/api.txt");
	f = logfiles_new("/var/log/app/*.log:/srv/other.log", root, err, sizeof(err));
	cr_assert_not_null(f, "%s", err);
	logfiles_scan(f, 77, on_file, &s);
	logfiles_sweep(f, on_file, &s);
	cr_expect_eq(s.watched, 1);
	cr_expect_eq(s.fd, 5);
	cr_expect_str_eq(s.path, "/var/log/app/api.log");
	logfiles_scan(f, 77, on_file, &s);
	logfiles_sweep(f, on_file, &s);
	cr_expect_eq(s.watched, 1, "reported once");
	link_fd(root, 5, NULL);
	logfiles_scan(f, 77, on_file, &s);
	logfiles_sweep(f, on_file, &s);
	cr_expect_eq(s.unwatched, 1, "closed: no longer watched");
	logfiles_free(f);
	tmpdir_remove(root);
}

Test(logfiles, patterns_must_be_absolute_paths)
{
	char err[256];

	cr_expect_null(logfiles_new("app.log", "/proc", err, sizeof(err)));
	cr_expect(strstr(err, "SONDE_LOGS_FILES: \"app.log\"") != NULL, "%s", err);
}
