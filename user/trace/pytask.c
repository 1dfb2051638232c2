#include "pytask.h"

#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <inttypes.h>
#include <libelf.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PYTASK_DESC(...) COUNTER_DESC(struct pytask_stats, __VA_ARGS__)
const struct counter_desc pytask_counters[] = { PYTASK_COUNTERS(PYTASK_DESC) };
const size_t pytask_counter_count = sizeof(pytask_counters) / sizeof(pytask_counters[0]);

/* Checked against the CPython headers by tests/unit/test_pytask.c. */
const struct pytask_version pytask_versions[] = {
	{
		.hex_major_minor = 0x030b,
		.layout = {
			.interp_main = 48,
			.threads_head = 16,
			.tstate_next = 8,
			.tstate_native_id = 160,
			.tstate_cframe = 56,
			.cframe_frame = 8,
			.frame_previous = 48,
			.frame_code = 32,
			.code_flags = 48,
			.frame_locals = 72,
			.handle_callback = 24,
			.step_task = 16,
			.future_callback0 = 24,
			.task_coro = 136,
			.coro_iframe = 80,
			.func_closure = 72,
			.values_before = 32,
			.taskgroup_parent = 32,
		},
	},
};
const unsigned pytask_nversions = sizeof(pytask_versions) / sizeof(pytask_versions[0]);

void pytask_init(struct pytask *pt, const char *proc_root)
{
	memset(pt, 0, sizeof(*pt));
	snprintf(pt->proc_root, sizeof(pt->proc_root), "%s", proc_root);
	elf_version(EV_CURRENT);
}

static int version_index(uint64_t py_version)
{
	for (unsigned i = 0; i < pytask_nversions; i++)
		if (pytask_versions[i].hex_major_minor == (py_version >> 16 & 0xffff))
			return (int)i;
	return -1;
}

/* The lowest PT_LOAD address, page aligned: what the mapping at file
 * offset 0 starts at, before relocation. */
static int first_load_vaddr(Elf *elf, uint64_t *out)
{
	size_t nphdr;

	if (elf_getphdrnum(elf, &nphdr))
		return -EINVAL;
	*out = UINT64_MAX;
	for (size_t i = 0; i < nphdr; i++) {
		GElf_Phdr phdr;

		if (gelf_getphdr(elf, (int)i, &phdr) && phdr.p_type == PT_LOAD &&
		    phdr.p_vaddr < *out)
			*out = phdr.p_vaddr & ~(uint64_t)0xfff;
	}
	return *out == UINT64_MAX ? -EINVAL : 0;
}

/* The 8-byte value a symbol holds in the file (Py_Version is const). */
static int symbol_value(Elf *elf, const GElf_Sym *sym, uint64_t *out)
{
	Elf_Scn *scn = elf_getscn(elf, sym->st_shndx);
	Elf_Data *data = scn ? elf_getdata(scn, NULL) : NULL;
	GElf_Shdr shdr;
	uint64_t at;

	if (!data || !gelf_getshdr(scn, &shdr) || shdr.sh_type == SHT_NOBITS)
		return -EINVAL;
	at = sym->st_value - shdr.sh_addr;
	if (at + sizeof(*out) > data->d_size)
		return -EINVAL;
	memcpy(out, (const char *)data->d_buf + at, sizeof(*out));
	return 0;
}

/* _PyRuntime and Py_Version (3.11 on) in the dynamic symbols, which an
 * interpreter exports for extension modules even when stripped. */
static void find_runtime(Elf *elf, struct pytask_file *file)
{
	Elf_Scn *scn = NULL;
	uint64_t load_vaddr, py_version = 0;
	bool have_runtime = false, have_version = false;

	while ((scn = elf_nextscn(elf, scn))) {
		GElf_Shdr shdr;
		Elf_Data *data;

		if (!gelf_getshdr(scn, &shdr) || shdr.sh_type != SHT_DYNSYM || !shdr.sh_entsize)
			continue;
		data = elf_getdata(scn, NULL);
		for (size_t i = 0; data && i < shdr.sh_size / shdr.sh_entsize; i++) {
			GElf_Sym sym;
			const char *name;

			if (!gelf_getsym(data, (int)i, &sym) || sym.st_shndx == SHN_UNDEF)
				continue;
			name = elf_strptr(elf, shdr.sh_link, sym.st_name);
			if (name && strcmp(name, "_PyRuntime") == 0) {
				file->runtime_offset = sym.st_value;
				have_runtime = true;
			} else if (name && strcmp(name, "Py_Version") == 0) {
				have_version = symbol_value(elf, &sym, &py_version) == 0;
			}
		}
	}
	if (!have_runtime || first_load_vaddr(elf, &load_vaddr))
		return;
	file->runtime_offset -= load_vaddr;
	file->version = have_version ? version_index(py_version) : -1;
	file->version_known = have_version;
}

static struct pytask_file *cache_slot(struct pytask *pt, const struct stat *st, bool *hit)
{
	struct pytask_file *oldest = &pt->cache[0];
	uint64_t mtime = (uint64_t)st->st_mtim.tv_sec * 1000000000ull + (uint64_t)st->st_mtim.tv_nsec;

	for (unsigned i = 0; i < PYTASK_CACHE_SIZE; i++) {
		struct pytask_file *f = &pt->cache[i];

		if (f->last_use && f->dev == st->st_dev && f->ino == st->st_ino &&
		    f->mtime_ns == mtime) {
			*hit = true;
			f->last_use = ++pt->uses;
			return f;
		}
		if (f->last_use < oldest->last_use)
			oldest = f;
	}
	*hit = false;
	memset(oldest, 0, sizeof(*oldest));
	oldest->dev = st->st_dev;
	oldest->ino = st->st_ino;
	oldest->mtime_ns = mtime;
	oldest->version = -1;
	oldest->last_use = ++pt->uses;
	return oldest;
}

/* What one mapped program file is, read once per file. */
static const struct pytask_file *examine_file(struct pytask *pt, const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct pytask_file *file = NULL;
	struct stat st;
	bool hit;
	Elf *elf;

	if (fd < 0)
		return NULL;
	if (fstat(fd, &st))
		goto out;
	file = cache_slot(pt, &st, &hit);
	if (hit)
		goto out;
	elf = elf_begin(fd, ELF_C_READ_MMAP, NULL);
	if (elf) {
		find_runtime(elf, file);
		elf_end(elf);
	}
out:
	close(fd);
	return file;
}

/* A mapping that may hold the interpreter: the program itself (exe_inode,
 * when it is one), else a shared libpython. Only the mapping at file
 * offset 0 gives the base. */
static bool may_hold_interpreter(const char *path, unsigned long long offset, uint64_t inode,
				 uint64_t exe_inode)
{
	const char *base = strrchr(path, '/');

	if (offset != 0 || !base)
		return false;
	if (exe_inode)
		return inode == exe_inode;
	return strncmp(base + 1, "libpython3", 10) == 0;
}

static int layout_from_maps(struct pytask *pt, uint32_t pid, uint64_t exe_inode,
			    struct sonde_py_layout *out)
{
	char path[128], line[512];
	FILE *maps;
	int found = 0;

	snprintf(path, sizeof(path), "%s/%u/maps", pt->proc_root, pid);
	maps = fopen(path, "re");
	if (!maps)
		return -errno;
	while (!found && fgets(line, sizeof(line), maps)) {
		unsigned long long start, end, offset;
		uint64_t inode;
		char file_path[256] = "";
		const struct pytask_file *file;

		if (sscanf(line, "%llx-%llx %*s %llx %*s %" SCNu64 " %255s", &start, &end, &offset,
			   &inode, file_path) != 5 ||
		    !may_hold_interpreter(file_path, offset, inode, exe_inode))
			continue;
		snprintf(path, sizeof(path), "%s/%u/map_files/%llx-%llx", pt->proc_root, pid, start,
			 end);
		file = examine_file(pt, path);
		if (!file || !file->version_known)
			continue;
		if (file->version < 0) {
			pt->stats.unsupported++;
			found = -1;
			break;
		}
		*out = pytask_versions[file->version].layout;
		out->runtime = start + file->runtime_offset;
		found = 1;
	}
	fclose(maps);
	return found < 0 ? 0 : found;
}

int pytask_layout(struct pytask *pt, uint32_t pid, bool at_exec, struct sonde_py_layout *out)
{
	char path[128];
	const struct pytask_file *exe;
	int ret;

	snprintf(path, sizeof(path), "%s/%u/exe", pt->proc_root, pid);
	exe = examine_file(pt, path);
	if (!exe)
		return errno == ENOENT || errno == EACCES ? 0 : -errno;
	if (!exe->version_known && at_exec)
		return 0;
	ret = layout_from_maps(pt, pid, exe->version_known ? exe->ino : 0, out);
	if (ret > 0)
		pt->stats.processes++;
	else if (ret < 0)
		pt->stats.failures++;
	return ret;
}
