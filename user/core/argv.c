#include "argv.h"

#include <stdio.h>
#include <string.h>

bool argv_secret_option(const char *option)
{
	static const char *const words[] = { "pass", "secret", "token", "key", "auth",
					     "credential" };

	if (option[0] != '-')
		return false;
	for (size_t i = 0; i < sizeof(words) / sizeof(words[0]); i++)
		if (strcasestr(option, words[i]))
			return true;
	return false;
}

void argv_join_redacted(char *const *argv, int argc, char *out, size_t size)
{
	size_t used = 0;
	bool hide_next = false;

	if (!size)
		return;
	out[0] = '\0';
	for (int i = 0; i < argc && used < size; i++) {
		const char *arg = argv[i];
		const char *eq = arg[0] == '-' ? strchr(arg, '=') : NULL;
		const char *sep = used ? " " : "";
		char option[128];

		if (hide_next) {
			used += (size_t)snprintf(out + used, size - used, "%sREDACTED", sep);
			hide_next = false;
			continue;
		}
		if (eq) {
			snprintf(option, sizeof(option), "%.*s", (int)(eq - arg), arg);
			if (argv_secret_option(option)) {
				used += (size_t)snprintf(out + used, size - used, "%s%s=REDACTED", sep,
							 option);
				continue;
			}
		} else {
			hide_next = argv_secret_option(arg);
		}
		used += (size_t)snprintf(out + used, size - used, "%s%s", sep, arg);
	}
}
