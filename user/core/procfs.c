#include "procfs.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

size_t procfs_read(const char *root, uint32_t pid, const char *name, char *buf, size_t size)
{
	char path[192];
	size_t used = 0;
	ssize_t n;
	int fd;

	snprintf(path, sizeof(path), "%s/%u/%s", root, pid, name);
	fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	while (used < size - 1 && (n = read(fd, buf + used, size - 1 - used)) > 0)
		used += (size_t)n;
	close(fd);
	buf[used] = '\0';
	return used;
}

int procfs_split(char *text, size_t len, char **argv, int max)
{
	int argc = 0;

	for (size_t off = 0; off < len && argc < max; off += strlen(text + off) + 1)
		argv[argc++] = text + off;
	return argc;
}

const char *procfs_env(const char *block, size_t len, const char *name)
{
	size_t nlen = strlen(name);

	for (size_t off = 0; off < len; off += strlen(block + off) + 1)
		if (strncmp(block + off, name, nlen) == 0 && block[off + nlen] == '=')
			return block + off + nlen + 1;
	return NULL;
}

/* The fields after the command name, whose parentheses may hold any
 * character: the state letter, then the parent's pid. */
static const char *stat_fields(const char *root, uint32_t pid, char *stat, size_t size)
{
	const char *after;

	if (!procfs_read(root, pid, "stat", stat, size))
		return NULL;
	after = strrchr(stat, ')');
	return after ? after + 1 : NULL;
}

uint32_t procfs_ppid(const char *root, uint32_t pid)
{
	char stat[512];
	const char *fields = stat_fields(root, pid, stat, sizeof(stat));
	unsigned ppid;

	if (!fields || sscanf(fields, " %*c %u", &ppid) != 1)
		return 0;
	return ppid;
}

/* stat holds both: the name between its first '(' and its last ')', the
 * state letter after them. */
static bool is_live_and_named(const char *root, uint32_t pid, const char *comm)
{
	char stat[512], state = 0;
	const char *fields = stat_fields(root, pid, stat, sizeof(stat));
	const char *name = fields ? strchr(stat, '(') : NULL;
	size_t len = strlen(comm);

	if (!name || (size_t)(fields - name - 2) != len || memcmp(name + 1, comm, len) != 0)
		return false;
	return sscanf(fields, " %c", &state) == 1 && state != 'Z' && state != 'X';
}

uint32_t procfs_find_named(const char *root, const char *comm, uint32_t skip,
			   bool (*accept)(const char *root, uint32_t pid, void *arg), void *arg)
{
	DIR *dir = opendir(root);
	struct dirent *entry;
	uint32_t found = 0;

	if (!dir)
		return 0;
	while (!found && (entry = readdir(dir))) {
		char *end;
		unsigned long pid = strtoul(entry->d_name, &end, 10);

		if (*end || pid == 0 || pid > UINT32_MAX || pid == skip)
			continue;
		if (is_live_and_named(root, (uint32_t)pid, comm) &&
		    (!accept || accept(root, (uint32_t)pid, arg)))
			found = (uint32_t)pid;
	}
	closedir(dir);
	return found;
}

const char *procfs_basename(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash ? slash + 1 : path;
}
