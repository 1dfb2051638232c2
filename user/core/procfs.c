#include "procfs.h"

#include <fcntl.h>
#include <stdio.h>
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
 * character: state, then the parent's pid. */
uint32_t procfs_ppid(const char *root, uint32_t pid)
{
	char stat[512];
	const char *after;
	unsigned ppid;

	if (!procfs_read(root, pid, "stat", stat, sizeof(stat)))
		return 0;
	after = strrchr(stat, ')');
	if (!after || sscanf(after + 1, " %*c %u", &ppid) != 1)
		return 0;
	return ppid;
}

const char *procfs_basename(const char *path)
{
	const char *slash = strrchr(path, '/');

	return slash ? slash + 1 : path;
}
