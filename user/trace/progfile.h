/* What sonde reads of a program file to follow the runtime inside it:
 * CPython's _PyRuntime and version (pytask.c), libuv's default loop and
 * version (uvloop.c). Each file is read once, cached by device, inode and
 * modification time, since every exec on the host is looked at; a
 * process's files are found through /proc/<pid>/maps. */
#ifndef SONDE_PROGFILE_H
#define SONDE_PROGFILE_H

#include <stdbool.h>
#include <stdint.h>

#define PROG_FILES_CACHE 64

struct prog_file {
	uint64_t dev, ino, mtime_ns;
	uint64_t last_use;
	uint64_t load_vaddr;   /* lowest PT_LOAD address, page aligned: what
	                          the mapping at file offset 0 starts at */
	uint64_t py_runtime;   /* _PyRuntime, before relocation; 0: none */
	uint64_t py_version;   /* Py_Version (CPython 3.11 on) */
	bool py_version_known;
	uint64_t uv_loop;      /* libuv's default_loop_struct, before
	                          relocation; 0: none */
	uint32_t uv_version;   /* what uv_version() returns (0x012e00 is
	                          1.46.0); 0: unknown */
	bool py_task_init_read; /* py_task_init is (prog_py_task_init) */
	uint64_t py_task_init; /* file offset of _asyncio.Task's __init__;
	                          0: none, or not read */
};

struct prog_files {
	char proc_root[64];
	struct prog_file cache[PROG_FILES_CACHE];
	uint64_t uses;
};

/* proc_root is "/proc" except in tests. */
void prog_files_init(struct prog_files *pf, const char *proc_root);
/* The file at path, read if not cached; NULL (errno set) when it cannot
 * be opened. */
const struct prog_file *prog_file_at(struct prog_files *pf, const char *path);

/* pid's program file (its /proc/<pid>/exe), copied to *out; -errno when
 * it cannot be opened (-ENOENT: the process is gone). */
int prog_exe(struct prog_files *pf, uint32_t pid, struct prog_file *out);

/* The file at path (prog_file_at) with py_task_init read, once per file:
 * the file offset of _asyncio.Task's __init__, the function in the tp_init
 * slot (tp_init_at: that slot's offset in PyTypeObject) of the statically
 * allocated type object named "_asyncio.Task". Found through the
 * relocations of a shared object, or the data of a program linked at a
 * fixed address: no symbol is needed. NULL (errno set) when the file
 * cannot be opened. */
const struct prog_file *prog_py_task_init(struct prog_files *pf, const char *path,
					  uint32_t tp_init_at);

/* The file offset of the function named symbol (dynamic symbols first,
 * then the full table) in the ELF file at path; -ENOENT when it has none,
 * -EINVAL when it is not ELF. */
int prog_symbol_offset(const char *path, const char *symbol, uint64_t *file_offset);

/* A mapping of a process at file offset 0, where a file's base is. */
struct prog_mapping {
	uint64_t start, end;
	uint64_t inode;
	const char *path;
};

/* Calls fn for each mapping of pid at file offset 0, until fn returns
 * non-zero, and returns that; -errno when the maps cannot be read. */
int prog_mappings(const struct prog_files *pf, uint32_t pid,
		  int (*fn)(void *ctx, const struct prog_mapping *m), void *ctx);
/* The file of a mapping, by its map_files link. */
const struct prog_file *prog_file_of_mapping(struct prog_files *pf, uint32_t pid,
					     const struct prog_mapping *m);

#endif
