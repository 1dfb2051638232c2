#include "progfile.h"

#include <criterion/criterion.h>
#include <elf.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* A program's layout, written by hand: one executable PT_LOAD, a .text
 * holding uv_version's code (mov $0x012e00, %eax; ret), a .dynsym
 * exporting it and a .symtab naming default_loop_struct, whose name in a
 * 40,000-byte .strtab straddles the first 16 KiB the reader takes of it,
 * and a static function, static_helper, at the same code. */
#define TEXT_AT 128
#define DYNSTR_AT 256
#define DYNSYM_AT 512
#define STRTAB_AT 1024
#define STRTAB_SIZE 40000
#define SYMTAB_AT (STRTAB_AT + STRTAB_SIZE)
#define SYMTAB_SYMS 3
#define SHSTRTAB_AT (SYMTAB_AT + SYMTAB_SYMS * sizeof(Elf64_Sym))
#define SHDRS_AT (SHSTRTAB_AT + 64)
#define LOOP_NAME_AT (16384 - 10)
#define HELPER_NAME_AT 30000
#define LOAD_VADDR 0x400000
#define LOOP_VADDR 0x401000

enum { SEC_NULL, SEC_TEXT, SEC_DYNSTR, SEC_DYNSYM, SEC_STRTAB, SEC_SYMTAB, SEC_SHSTRTAB, NSECS };

static const char shstrtab[] = "\0.text\0.dynstr\0.dynsym\0.strtab\0.symtab\0.shstrtab";

static Elf64_Shdr section(uint32_t name, uint32_t type, uint64_t at, uint64_t size, uint32_t link,
			  uint64_t entsize)
{
	return (Elf64_Shdr){ .sh_name = name, .sh_type = type, .sh_offset = at, .sh_size = size,
			     .sh_link = link, .sh_entsize = entsize, .sh_addralign = 1 };
}

static void write_program(const char *path)
{
	static uint8_t image[SHDRS_AT + NSECS * sizeof(Elf64_Shdr)];
	const uint8_t code[] = { 0xb8, 0x00, 0x2e, 0x01, 0x00, 0xc3 };
	Elf64_Ehdr *eh = (Elf64_Ehdr *)image;
	Elf64_Phdr *ph = (Elf64_Phdr *)(image + sizeof(*eh));
	Elf64_Sym *dynsym = (Elf64_Sym *)(image + DYNSYM_AT);
	Elf64_Sym *symtab = (Elf64_Sym *)(image + SYMTAB_AT);
	Elf64_Shdr *sh = (Elf64_Shdr *)(image + SHDRS_AT);
	FILE *out;

	memset(image, 0, sizeof(image));
	memcpy(eh->e_ident, ELFMAG, SELFMAG);
	eh->e_ident[EI_CLASS] = ELFCLASS64;
	eh->e_ident[EI_DATA] = ELFDATA2LSB;
	eh->e_ident[EI_VERSION] = EV_CURRENT;
	eh->e_type = ET_EXEC;
	eh->e_machine = EM_X86_64;
	eh->e_version = EV_CURRENT;
	eh->e_phoff = sizeof(*eh);
	eh->e_shoff = SHDRS_AT;
	eh->e_ehsize = sizeof(*eh);
	eh->e_phentsize = sizeof(*ph);
	eh->e_phnum = 1;
	eh->e_shentsize = sizeof(Elf64_Shdr);
	eh->e_shnum = NSECS;
	eh->e_shstrndx = SEC_SHSTRTAB;
	*ph = (Elf64_Phdr){ .p_type = PT_LOAD, .p_flags = PF_R | PF_X, .p_vaddr = LOAD_VADDR,
			    .p_filesz = TEXT_AT + 6,
			    .p_memsz = TEXT_AT + 6, .p_align = 0x1000 };

	memcpy(image + TEXT_AT, code, sizeof(code));
	memcpy(image + DYNSTR_AT, "\0uv_version", sizeof("\0uv_version"));
	dynsym[1] = (Elf64_Sym){ .st_name = 1, .st_info = ELF64_ST_INFO(STB_GLOBAL, STT_FUNC),
				 .st_shndx = SEC_TEXT, .st_value = LOAD_VADDR + TEXT_AT,
				 .st_size = sizeof(code) };
	/* Strings on either side, so that only the exact site matches. */
	memset(image + STRTAB_AT + 1, 'x', STRTAB_SIZE - 2);
	memcpy(image + STRTAB_AT + LOOP_NAME_AT - 1, "\0default_loop_struct",
	       sizeof("\0default_loop_struct"));
	symtab[1] = (Elf64_Sym){ .st_name = LOOP_NAME_AT,
				 .st_info = ELF64_ST_INFO(STB_LOCAL, STT_OBJECT),
				 .st_shndx = SEC_TEXT, .st_value = LOOP_VADDR, .st_size = 8 };
	memcpy(image + STRTAB_AT + HELPER_NAME_AT - 1, "\0static_helper", sizeof("\0static_helper"));
	symtab[2] = (Elf64_Sym){ .st_name = HELPER_NAME_AT,
				 .st_info = ELF64_ST_INFO(STB_LOCAL, STT_FUNC),
				 .st_shndx = SEC_TEXT, .st_value = LOAD_VADDR + TEXT_AT,
				 .st_size = sizeof(code) };
	memcpy(image + SHSTRTAB_AT, shstrtab, sizeof(shstrtab));

	sh[SEC_TEXT] = section(1, SHT_PROGBITS, TEXT_AT, sizeof(code), 0, 0);
	sh[SEC_TEXT].sh_addr = LOAD_VADDR + TEXT_AT;
	sh[SEC_DYNSTR] = section(7, SHT_STRTAB, DYNSTR_AT, sizeof("\0uv_version"), 0, 0);
	sh[SEC_DYNSYM] = section(15, SHT_DYNSYM, DYNSYM_AT, 2 * sizeof(Elf64_Sym), SEC_DYNSTR,
				 sizeof(Elf64_Sym));
	sh[SEC_STRTAB] = section(23, SHT_STRTAB, STRTAB_AT, STRTAB_SIZE, 0, 0);
	sh[SEC_SYMTAB] = section(31, SHT_SYMTAB, SYMTAB_AT, SYMTAB_SYMS * sizeof(Elf64_Sym), SEC_STRTAB,
				 sizeof(Elf64_Sym));
	sh[SEC_SHSTRTAB] = section(39, SHT_STRTAB, SHSTRTAB_AT, sizeof(shstrtab), 0, 0);

	out = fopen(path, "wb");
	cr_assert_not_null(out);
	cr_assert_eq(fwrite(image, sizeof(image), 1, out), 1);
	fclose(out);
}

Test(progfile, finds_a_static_name_across_two_reads_of_the_string_table)
{
	char path[] = "/tmp/sonde-progfile-XXXXXX";
	struct prog_files files;
	const struct prog_file *file;
	int fd = mkstemp(path);

	cr_assert_geq(fd, 0);
	close(fd);
	write_program(path);
	prog_files_init(&files, "/proc");
	file = prog_file_at(&files, path);
	unlink(path);
	cr_assert_not_null(file);
	cr_expect_eq(file->uv_version, 0x012e00);
	cr_expect_eq(file->uv_loop, LOOP_VADDR);
	cr_expect_eq(file->load_vaddr, LOAD_VADDR);
}

/* An entry point's symbol is found by the same reader: in .symtab when
 * the file does not export it, and only as a function. */
Test(progfile, finds_a_static_function_and_no_object_as_one)
{
	char path[] = "/tmp/sonde-progfile-XXXXXX";
	uint64_t offset = 1;
	int fd = mkstemp(path);

	cr_assert_geq(fd, 0);
	close(fd);
	write_program(path);
	cr_expect_eq(prog_symbol_offset(path, "static_helper", &offset), 0);
	cr_expect_eq(offset, TEXT_AT);
	cr_expect_eq(prog_symbol_offset(path, "uv_version", &offset), 0);
	cr_expect_eq(offset, TEXT_AT);
	cr_expect_eq(prog_symbol_offset(path, "default_loop_struct", &offset), -ENOENT);
	unlink(path);
}
