#include "logfiles.h"

#include <dirent.h>
#include <fnmatch.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PATTERNS_MAX 16

struct watched {
	struct watched *next;
	uint32_t tgid;
	int32_t fd;
	bool seen; /* in a scan since the last sweep */
	char path[LOGFILES_PATH_MAX];
};

struct logfiles {
	char proc_root[128];
	char patterns[PATTERNS_MAX][LOGFILES_PATH_MAX];
	size_t npatterns;
	struct watched *watched;
};

struct logfiles *logfiles_new(const char *patterns, const char *proc_root, char *err,
			      size_t err_size)
{
	struct logfiles *f = calloc(1, sizeof(*f));
	const char *at = patterns;

	if (!f) {
		snprintf(err, err_size, "out of memory");
		return NULL;
	}
	snprintf(f->proc_root, sizeof(f->proc_root), "%s", proc_root);
	while (*at) {
		size_t len = strcspn(at, ":");

		if (f->npatterns == PATTERNS_MAX || len >= LOGFILES_PATH_MAX || (len && at[0] != '/')) {
			snprintf(err, err_size, "SONDE_LOGS_FILES: \"%.*s\": not an absolute path, "
				 "too long, or more than %d", (int)len, at, PATTERNS_MAX);
			free(f);
			return NULL;
		}
		if (len)
			snprintf(f->patterns[f->npatterns++], LOGFILES_PATH_MAX, "%.*s", (int)len, at);
		at += len + (at[len] == ':');
	}
	return f;
}

void logfiles_free(struct logfiles *f)
{
	if (!f)
		return;
	while (f->watched) {
		struct watched *w = f->watched;

		f->watched = w->next;
		free(w);
	}
	free(f);
}

static bool named(const struct logfiles *f, const char *path)
{
	for (size_t i = 0; i < f->npatterns; i++)
		if (fnmatch(f->patterns[i], path, FNM_PATHNAME) == 0)
			return true;
	return false;
}

static struct watched *find(struct logfiles *f, uint32_t tgid, int32_t fd)
{
	for (struct watched *w = f->watched; w; w = w->next)
		if (w->tgid == tgid && w->fd == fd)
			return w;
	return NULL;
}

static void found(struct logfiles *f, uint32_t tgid, int32_t fd, const char *path, logfile_fn fn,
		  void *ctx)
{
	struct watched *w = find(f, tgid, fd);

	if (w && strcmp(w->path, path) == 0) {
		w->seen = true;
		return;
	}
	if (!w) {
		w = calloc(1, sizeof(*w));
		if (!w)
			return;
		w->tgid = tgid;
		w->fd = fd;
		w->next = f->watched;
		f->watched = w;
	}
	snprintf(w->path, sizeof(w->path), "%s", path);
	w->seen = true;
	fn(ctx, tgid, fd, w->path, true);
}

void logfiles_scan(struct logfiles *f, uint32_t tgid, logfile_fn fn, void *ctx)
{
	char dir_path[192], link[320], target[LOGFILES_PATH_MAX];
	struct dirent *entry;
	DIR *dir;

	snprintf(dir_path, sizeof(dir_path), "%s/%u/fd", f->proc_root, tgid);
	dir = opendir(dir_path);
	if (!dir)
		return;
	while ((entry = readdir(dir))) {
		char *end;
		long fd = strtol(entry->d_name, &end, 10);
		ssize_t len;

		if (*end || fd <= 2)
			continue;
		snprintf(link, sizeof(link), "%s/%s", dir_path, entry->d_name);
		len = readlink(link, target, sizeof(target) - 1);
		if (len <= 0)
			continue;
		target[len] = '\0';
		if (named(f, target))
			found(f, tgid, (int32_t)fd, target, fn, ctx);
	}
	closedir(dir);
}

void logfiles_sweep(struct logfiles *f, logfile_fn fn, void *ctx)
{
	struct watched **link = &f->watched;

	while (*link) {
		struct watched *w = *link;

		if (w->seen) {
			w->seen = false;
			link = &w->next;
			continue;
		}
		*link = w->next;
		fn(ctx, w->tgid, w->fd, w->path, false);
		free(w);
	}
}

void logfiles_forget(struct logfiles *f, uint32_t tgid)
{
	struct watched **link = &f->watched;

	while (*link) {
		struct watched *w = *link;

		if (w->tgid != tgid) {
			link = &w->next;
			continue;
		}
		*link = w->next;
		free(w);
	}
}
