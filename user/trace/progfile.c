#include "progfile.h"

#include <errno.h>
#include <fcntl.h>
#include <gelf.h>
#include <inttypes.h>
#include <libelf.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

void prog_files_init(struct prog_files *pf, const char *proc_root)
{
	memset(pf, 0, sizeof(*pf));
	snprintf(pf->proc_root, sizeof(pf->proc_root), "%s", proc_root);
	elf_version(EV_CURRENT);
}

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

/* The first n bytes a symbol holds in the file: a constant's value, a
 * function's code. */
static int symbol_bytes(Elf *elf, const GElf_Sym *sym, void *out, size_t n)
{
	Elf_Scn *scn = elf_getscn(elf, sym->st_shndx);
	Elf_Data *data = scn ? elf_getdata(scn, NULL) : NULL;
	GElf_Shdr shdr;
	uint64_t at;

	if (!data || !gelf_getshdr(scn, &shdr) || shdr.sh_type == SHT_NOBITS)
		return -EINVAL;
	at = sym->st_value - shdr.sh_addr;
	if (at + n > data->d_size)
		return -EINVAL;
	memcpy(out, (const char *)data->d_buf + at, n);
	return 0;
}

/* uv_version() compiles to `mov $UV_VERSION_HEX, %eax; ret` on x86-64. */
static uint32_t uv_version_of(Elf *elf, const GElf_Sym *sym)
{
	uint8_t code[6];
	uint32_t version;

	if (symbol_bytes(elf, sym, code, sizeof(code)) || code[0] != 0xb8 || code[5] != 0xc3)
		return 0;
	memcpy(&version, code + 1, sizeof(version));
	return version;
}

struct program_read {
	Elf *elf;
	struct prog_file *file;
};

static bool look_at_symbol(void *ctx, const GElf_Sym *sym, const char *name)
{
	struct program_read *r = ctx;
	Elf *elf = r->elf;
	struct prog_file *file = r->file;

	if (strcmp(name, "_PyRuntime") == 0) {
		file->py_runtime = sym->st_value;
	} else if (strcmp(name, "Py_Version") == 0) {
		file->py_version_known =
			symbol_bytes(elf, sym, &file->py_version, sizeof(file->py_version)) == 0;
	} else if (strcmp(name, "uv_version") == 0) {
		file->uv_version = uv_version_of(elf, sym);
	} else if (strcmp(name, "default_loop_struct") == 0) {
		file->uv_loop = sym->st_value;
	}
	return false;
}

/* Symbol tables are read with pread, a chunk at a time, rather than
 * through libelf's mapping of the file: node's (.symtab, .strtab, .dynsym
 * and .dynstr, ~14 MB) would count in the agent's resident memory while
 * mapped. The string table is searched first for where the names looked
 * for sit, then the symbols naming those offsets are read. Only 64-bit
 * little-endian files are read: the kernel side follows 64-bit pointers
 * only. */
#define SYMS_PER_READ 512
#define STRING_BYTES_PER_READ 16384
#define SYMBOL_NAMES_MAX 4
#define NAME_SITES_MAX 8

/* The names looked for, and where in a string table each sits, NUL
 * included: a table may hold a name more than once, or as the tail of a
 * longer one. */
struct symbol_names {
	const char *const *names;
	size_t n;
	uint64_t sites[SYMBOL_NAMES_MAX][NAME_SITES_MAX];
	size_t nsites[SYMBOL_NAMES_MAX];
};

/* Called with each defined symbol of a wanted name; true stops the scan. */
typedef bool (*symbol_fn)(void *ctx, const GElf_Sym *sym, const char *name);

static void note_sites(const char *buf, size_t len, uint64_t base, struct symbol_names *s)
{
	for (size_t w = 0; w < s->n; w++) {
		size_t want = strlen(s->names[w]) + 1;
		const char *p = buf;

		while (s->nsites[w] < NAME_SITES_MAX &&
		       (p = memmem(p, len - (size_t)(p - buf), s->names[w], want))) {
			s->sites[w][s->nsites[w]++] = base + (uint64_t)(p - buf);
			p++;
		}
	}
}

static size_t longest_name(const struct symbol_names *s)
{
	size_t longest = 0;

	for (size_t w = 0; w < s->n; w++)
		if (strlen(s->names[w]) > longest)
			longest = strlen(s->names[w]);
	return longest;
}

/* Consecutive reads overlap by the longest name, so that a name across
 * two of them is found, and only once: a whole match, its NUL included,
 * cannot lie within the overlap. */
static int find_name_sites(int fd, const GElf_Shdr *strtab, struct symbol_names *s)
{
	char buf[STRING_BYTES_PER_READ];
	size_t overlap = longest_name(s);
	uint64_t pos = 0;

	memset(s->nsites, 0, sizeof(s->nsites));
	while (pos < strtab->sh_size) {
		size_t len = strtab->sh_size - pos < sizeof(buf) ? strtab->sh_size - pos : sizeof(buf);
		ssize_t got = pread(fd, buf, len, (off_t)(strtab->sh_offset + pos));

		if (got != (ssize_t)len)
			return got < 0 ? -errno : -EIO;
		note_sites(buf, len, pos, s);
		if (pos + len == strtab->sh_size)
			break;
		pos += len - overlap;
	}
	return 0;
}

/* The name a symbol's name offset is a site of, or NULL. */
static const char *name_at(const struct symbol_names *s, uint32_t offset)
{
	for (size_t w = 0; w < s->n; w++)
		for (size_t i = 0; i < s->nsites[w]; i++)
			if (s->sites[w][i] == offset)
				return s->names[w];
	return NULL;
}

/* Whether fn stopped the scan. */
static bool scan_symbols(int fd, const GElf_Shdr *symtab, const struct symbol_names *s,
			 symbol_fn fn, void *ctx)
{
	Elf64_Sym syms[SYMS_PER_READ];
	uint64_t count = symtab->sh_size / sizeof(Elf64_Sym);

	for (uint64_t i = 0; i < count;) {
		size_t n = count - i < SYMS_PER_READ ? (size_t)(count - i) : SYMS_PER_READ;
		ssize_t got = pread(fd, syms, n * sizeof(*syms),
				    (off_t)(symtab->sh_offset + i * sizeof(*syms)));

		if (got != (ssize_t)(n * sizeof(*syms)))
			return false;
		for (size_t j = 0; j < n; j++) {
			const char *name = syms[j].st_shndx == SHN_UNDEF ? NULL
									: name_at(s, syms[j].st_name);

			if (name && fn(ctx, &syms[j], name))
				return true;
		}
		i += n;
	}
	return false;
}

/* The symbols named in s of the tables of one type (SHT_DYNSYM or
 * SHT_SYMTAB), until fn returns true. */
static void scan_table(Elf *elf, int fd, uint32_t type, struct symbol_names *s, symbol_fn fn,
		       void *ctx)
{
	Elf_Scn *scn = NULL;

	while ((scn = elf_nextscn(elf, scn))) {
		GElf_Shdr symtab, strtab;

		if (!gelf_getshdr(scn, &symtab) || symtab.sh_type != type ||
		    symtab.sh_entsize != sizeof(Elf64_Sym) ||
		    !gelf_getshdr(elf_getscn(elf, symtab.sh_link), &strtab) ||
		    find_name_sites(fd, &strtab, s))
			continue;
		if (scan_symbols(fd, &symtab, s, fn, ctx))
			return;
	}
}

static bool is_elf64_lsb(Elf *elf)
{
	const char *ident = elf_getident(elf, NULL);

	return ident && ident[EI_CLASS] == ELFCLASS64 && ident[EI_DATA] == ELFDATA2LSB;
}

static const char *const program_names[] = {
	"_PyRuntime", "Py_Version", "uv_version", "default_loop_struct",
};
_Static_assert(sizeof(program_names) / sizeof(program_names[0]) <= SYMBOL_NAMES_MAX,
	       "struct symbol_names holds the sites of every name a program is read for");

/* _PyRuntime, Py_Version and uv_version are exported, for extension
 * modules and addons, even by a stripped program. libuv's default loop is
 * static: only a program that keeps its symbol table (Node.js's own
 * builds do) has it, and only one exporting uv_version is searched. */
static void read_program(Elf *elf, int fd, struct prog_file *file)
{
	struct symbol_names names = {
		.names = program_names,
		.n = sizeof(program_names) / sizeof(program_names[0]),
	};
	struct program_read read = { elf, file };

	if (!is_elf64_lsb(elf))
		return;
	scan_table(elf, fd, SHT_DYNSYM, &names, look_at_symbol, &read);
	if (file->uv_version)
		scan_table(elf, fd, SHT_SYMTAB, &names, look_at_symbol, &read);
	if (first_load_vaddr(elf, &file->load_vaddr))
		file->py_runtime = file->uv_loop = 0;
}

static struct prog_file *cache_slot(struct prog_files *pf, const struct stat *st, bool *hit)
{
	struct prog_file *oldest = &pf->cache[0];
	uint64_t mtime = (uint64_t)st->st_mtim.tv_sec * 1000000000ull + (uint64_t)st->st_mtim.tv_nsec;

	for (unsigned i = 0; i < PROG_FILES_CACHE; i++) {
		struct prog_file *f = &pf->cache[i];

		if (f->last_use && f->dev == st->st_dev && f->ino == st->st_ino &&
		    f->mtime_ns == mtime) {
			*hit = true;
			f->last_use = ++pf->uses;
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
	oldest->last_use = ++pf->uses;
	return oldest;
}

static struct prog_file *file_at(struct prog_files *pf, const char *path)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct prog_file *file = NULL;
	struct stat st;
	bool hit;
	Elf *elf;

	if (fd < 0)
		return NULL;
	if (fstat(fd, &st))
		goto out;
	file = cache_slot(pf, &st, &hit);
	if (hit)
		goto out;
	elf = elf_begin(fd, ELF_C_READ_MMAP, NULL);
	if (elf) {
		read_program(elf, fd, file);
		elf_end(elf);
	}
out:
	close(fd);
	return file;
}

const struct prog_file *prog_file_at(struct prog_files *pf, const char *path)
{
	return file_at(pf, path);
}

int prog_exe(struct prog_files *pf, uint32_t pid, struct prog_file *out)
{
	char path[128];
	const struct prog_file *file;

	snprintf(path, sizeof(path), "%s/%u/exe", pf->proc_root, pid);
	file = prog_file_at(pf, path);
	if (!file)
		return -errno;
	*out = *file;
	return 0;
}

int prog_mappings(const struct prog_files *pf, uint32_t pid,
		  int (*fn)(void *ctx, const struct prog_mapping *m), void *ctx)
{
	char path[128], line[512];
	FILE *maps;
	int ret = 0;

	snprintf(path, sizeof(path), "%s/%u/maps", pf->proc_root, pid);
	maps = fopen(path, "re");
	if (!maps)
		return -errno;
	while (!ret && fgets(line, sizeof(line), maps)) {
		unsigned long long start, end, offset;
		char file_path[256] = "";
		struct prog_mapping m;

		if (sscanf(line, "%llx-%llx %*s %llx %*s %" SCNu64 " %255s", &start, &end, &offset,
			   &m.inode, file_path) != 5 ||
		    offset != 0)
			continue;
		m.start = start;
		m.end = end;
		m.path = file_path;
		ret = fn(ctx, &m);
	}
	fclose(maps);
	return ret;
}

const struct prog_file *prog_file_of_mapping(struct prog_files *pf, uint32_t pid,
					     const struct prog_mapping *m)
{
	char path[128];

	snprintf(path, sizeof(path), "%s/%u/map_files/%" PRIx64 "-%" PRIx64, pf->proc_root, pid,
		 m->start, m->end);
	return prog_file_at(pf, path);
}

/* ---- a static type object's tp_init ------------------------------------- */

#define PTR_SIZE 8

/* The address of the string text (NUL included) in an allocated
 * section; 0: none. */
static uint64_t string_address(Elf *elf, const char *text)
{
	size_t len = strlen(text) + 1;
	Elf_Scn *scn = NULL;

	while ((scn = elf_nextscn(elf, scn))) {
		Elf_Data *data = elf_getdata(scn, NULL);
		GElf_Shdr shdr;
		const char *at, *end;

		if (!data || !gelf_getshdr(scn, &shdr) || shdr.sh_type != SHT_PROGBITS ||
		    !(shdr.sh_flags & SHF_ALLOC))
			continue;
		at = data->d_buf;
		end = at + data->d_size;
		while (at && at + len <= end) {
			const char *hit = memmem(at, (size_t)(end - at), text, len);

			if (!hit)
				break;
			if (hit == data->d_buf || hit[-1] == '\0')
				return shdr.sh_addr + (uint64_t)(hit - (const char *)data->d_buf);
			at = hit + 1;
		}
	}
	return 0;
}

/* Calls fn with each pointer the file puts in memory once loaded, and
 * its slot: the relative relocations of a shared object, the non-zero
 * words of the writable data of a program linked at a fixed address;
 * until fn returns true. */
static void each_pointer(Elf *elf, bool (*fn)(void *ctx, uint64_t slot, uint64_t value),
			 void *ctx)
{
	Elf_Scn *scn = NULL;

	while ((scn = elf_nextscn(elf, scn))) {
		Elf_Data *data = elf_getdata(scn, NULL);
		GElf_Shdr shdr;

		if (!data || !gelf_getshdr(scn, &shdr))
			continue;
		if (shdr.sh_type == SHT_RELA && shdr.sh_entsize) {
			for (size_t i = 0; i < shdr.sh_size / shdr.sh_entsize; i++) {
				GElf_Rela rela;

				if (gelf_getrela(data, (int)i, &rela) &&
				    GELF_R_TYPE(rela.r_info) == R_X86_64_RELATIVE &&
				    fn(ctx, rela.r_offset, (uint64_t)rela.r_addend))
					return;
			}
		} else if (shdr.sh_type == SHT_PROGBITS && (shdr.sh_flags & SHF_WRITE)) {
			for (size_t at = 0; at + PTR_SIZE <= data->d_size; at += PTR_SIZE) {
				uint64_t word;

				memcpy(&word, (const char *)data->d_buf + at, PTR_SIZE);
				if (word && fn(ctx, shdr.sh_addr + at, word))
					return;
			}
		}
	}
}

struct pointer_search {
	uint64_t slot, value;     /* pointer_at: the slot, and what it holds */
	uint64_t *slots;          /* slots_pointing_to: those holding value */
	size_t n, max;
};

static bool is_the_slot(void *ctx, uint64_t slot, uint64_t value)
{
	struct pointer_search *s = ctx;

	if (slot != s->slot)
		return false;
	s->value = value;
	return true;
}

static bool holds_the_value(void *ctx, uint64_t slot, uint64_t value)
{
	struct pointer_search *s = ctx;

	if (value == s->value && s->n < s->max)
		s->slots[s->n++] = slot;
	return s->n == s->max;
}

/* The pointer the file puts at address `at` once loaded; 0: none. */
static uint64_t pointer_at(Elf *elf, uint64_t at)
{
	struct pointer_search s = { .slot = at };

	each_pointer(elf, is_the_slot, &s);
	return s.value;
}

/* The slots of the pointers to `target`, up to max; how many there are. */
static size_t slots_pointing_to(Elf *elf, uint64_t target, uint64_t *out, size_t max)
{
	struct pointer_search s = { .value = target, .slots = out, .max = max };

	each_pointer(elf, holds_the_value, &s);
	return s.n;
}

/* The file offset of an address in an executable segment; 0: none. */
static uint64_t code_offset(Elf *elf, uint64_t vaddr)
{
	size_t nphdr;

	if (elf_getphdrnum(elf, &nphdr))
		return 0;
	for (size_t i = 0; i < nphdr; i++) {
		GElf_Phdr phdr;

		if (gelf_getphdr(elf, (int)i, &phdr) && phdr.p_type == PT_LOAD &&
		    (phdr.p_flags & PF_X) && vaddr >= phdr.p_vaddr &&
		    vaddr < phdr.p_vaddr + phdr.p_filesz)
			return vaddr - phdr.p_vaddr + phdr.p_offset;
	}
	return 0;
}

#define TYPE_NAME_SLOTS 8
/* PyTypeObject.tp_name: after the refcount, the type and the size. */
#define TP_NAME_AT 24

static int find_type_init(Elf *elf, const char *type_name, uint32_t tp_init_at, uint64_t *out)
{
	uint64_t name = string_address(elf, type_name);
	uint64_t slots[TYPE_NAME_SLOTS];
	size_t n = name ? slots_pointing_to(elf, name, slots, TYPE_NAME_SLOTS) : 0;

	*out = 0;
	for (size_t i = 0; i < n; i++) {
		uint64_t init = pointer_at(elf, slots[i] - TP_NAME_AT + tp_init_at);
		uint64_t offset = init ? code_offset(elf, init) : 0;

		if (!offset)
			continue; /* not a type object, or one without tp_init */
		if (*out && *out != offset)
			return -EINVAL;
		*out = offset;
	}
	return *out ? 0 : -ENOENT;
}

/* Calls fn with the ELF file at path; its result, -errno when the file
 * cannot be opened, -EINVAL when it is not ELF. */
static int with_elf(const char *path, int (*fn)(Elf *elf, int fd, void *ctx), void *ctx)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	Elf *elf;
	int err = -EINVAL;

	if (fd < 0)
		return -errno;
	elf_version(EV_CURRENT);
	elf = elf_begin(fd, ELF_C_READ_MMAP, NULL);
	if (elf && elf_kind(elf) == ELF_K_ELF)
		err = fn(elf, fd, ctx);
	if (elf)
		elf_end(elf);
	close(fd);
	return err;
}

/* What CPython's _asyncio.Task.__init__ is found through. */
#define PY_TASK_TYPE "_asyncio.Task"

struct type_init_search {
	uint32_t tp_init_at;
	uint64_t offset;
};

static int find_task_init(Elf *elf, int fd, void *ctx)
{
	struct type_init_search *s = ctx;

	return find_type_init(elf, PY_TASK_TYPE, s->tp_init_at, &s->offset);
}

const struct prog_file *prog_py_task_init(struct prog_files *pf, const char *path,
					  uint32_t tp_init_at)
{
	struct prog_file *file = file_at(pf, path);
	struct type_init_search search = { tp_init_at, 0 };

	if (!file || file->py_task_init_read)
		return file;
	file->py_task_init_read = true;
	if (with_elf(path, find_task_init, &search) == 0)
		file->py_task_init = search.offset;
	return file;
}

/* ---- a function's offset ------------------------------------------------- */

struct function_search {
	const char *symbol;
	Elf *elf;
	uint64_t offset;
};

static bool is_function(void *ctx, const GElf_Sym *sym, const char *name)
{
	struct function_search *s = ctx;

	if (GELF_ST_TYPE(sym->st_info) != STT_FUNC)
		return false;
	s->offset = code_offset(s->elf, sym->st_value);
	return true;
}

static int find_function(Elf *elf, int fd, void *ctx)
{
	struct function_search *s = ctx;
	struct symbol_names names = { .names = &s->symbol, .n = 1 };

	if (!is_elf64_lsb(elf))
		return -EINVAL;
	s->elf = elf;
	scan_table(elf, fd, SHT_DYNSYM, &names, is_function, s);
	if (!s->offset)
		scan_table(elf, fd, SHT_SYMTAB, &names, is_function, s);
	return s->offset ? 0 : -ENOENT;
}

int prog_symbol_offset(const char *path, const char *symbol, uint64_t *file_offset)
{
	struct function_search search = { .symbol = symbol };
	int err = with_elf(path, find_function, &search);

	*file_offset = search.offset;
	return err;
}
