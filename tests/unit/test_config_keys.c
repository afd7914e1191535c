/*
 * test_config_keys.c - walks the key tables (config_keys.c) and checks that
 * every key is documented, with the table's default, in the README's key
 * tables, the example configuration conf/tlsfwd.ini and the man page
 * conf/tlsfwd.ini.5, so that documentation cannot drift from the code; and
 * that the daemon's man page daemon/tlsfwd.8, which names a few keys in
 * passing, gives their defaults right. Run from the repository root (make
 * unit).
 *
 * The example configuration's conventions: a key whose default is a value
 * shows that value ("connect_timeout = 5s", or commented out), or its
 * comment says "default: ..."; a key with no default ("none") is
 * commented out; a required key is set.
 */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

static char *
slurp(const char *path)
{
	FILE *f = fopen(path, "r");
	char *buf;
	long n;

	if (f == NULL)
		fail_msg("cannot open %s (run from the repository root)", path);
	fseek(f, 0, SEEK_END);
	n = ftell(f);
	fseek(f, 0, SEEK_SET);
	buf = calloc(1, (size_t)n + 1);
	assert_non_null(buf);
	assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
	fclose(f);
	return buf;
}

/* A copy of the text from the first `from` up to the next `to` (or end). */
static char *
between(const char *text, const char *from, const char *to)
{
	const char *a = strstr(text, from), *b;
	char *out;

	if (a == NULL)
		fail_msg("'%s' not found", from);
	a += strlen(from);
	b = to != NULL ? strstr(a, to) : NULL;
	if (b == NULL)
		b = a + strlen(a);
	out = strndup(a, (size_t)(b - a));
	assert_non_null(out);
	return out;
}

/* Collapses white space, drops backticks and quotes (Markdown, INI). */
static void
plain(char *s)
{
	char *w = s;
	bool space = true;

	for (char *r = s; *r != '\0'; r++) {
		if (*r == '`' || *r == '"')
			continue;
		if (isspace((unsigned char)*r)) {
			if (!space)
				*w++ = ' ';
			space = true;
			continue;
		}
		*w++ = *r;
		space = false;
	}
	*w = '\0';
}

/*
 * roff to text: ".B x" and ".I x" give x; ".BR a b" and the other
 * alternating-font requests give their arguments run together; other
 * requests (".br", ".TP") go; \% and \& vanish, \- is '-'.
 */
static char *
roff_text(const char *roff, size_t n)
{
	char *out = calloc(1, 2 * n + 2), *w = out;
	const char *line = roff, *end = roff + n;

	assert_non_null(out);
	while (line < end) {
		const char *eol = memchr(line, '\n', (size_t)(end - line));
		const char *r = line;
		bool alternating = false, quoted = false;

		if (eol == NULL)
			eol = end;
		if (*r == '.') {
			alternating = r[1] != '\0' && r[2] != ' ' &&
			    strchr("BIR", r[1]) != NULL &&
			    strchr("BIR", r[2]) != NULL;
			if (strncmp(r, ".B ", 3) != 0 &&
			    strncmp(r, ".I ", 3) != 0 && !alternating) {
				line = eol + 1;
				continue;	/* a request without text */
			}
			r += alternating ? 4 : 3;
		}
		for (; r < eol; r++) {
			if (*r == '"') {
				quoted = !quoted;
				continue;
			}
			if (*r == ' ' && alternating && !quoted)
				continue;
			if (*r == '\\' && r + 1 < eol && (r[1] == '%' ||
			    r[1] == '&')) {
				r++;
				continue;
			}
			if (*r == '\\' && r + 1 < eol && r[1] == '-') {
				*w++ = '-';
				r++;
				continue;
			}
			*w++ = *r;
		}
		*w++ = ' ';
		line = eol + 1;
	}
	*w = '\0';
	plain(out);
	return out;
}

/*
 * Whether hay holds needle as a whole (case aside): "15s" or "5sec" does
 * not hold the default "5s".
 */
static bool
contains(const char *hay, const char *needle)
{
	size_t n = strlen(needle);

	for (const char *at = hay; (at = strcasestr(at, needle)) != NULL;
	    at++)
		if ((at == hay || !isalnum((unsigned char)at[-1])) &&
		    !isalnum((unsigned char)at[n]))
			return true;
	return false;
}

/* README: the row of key in one of the key tables; its default column. */
static void
check_readme(const char *table, const struct config_key *k)
{
	char pat[80], *cell;
	const char *row = table, *hit;

	snprintf(pat, sizeof(pat), "`%s`", k->name);
	for (;;) {
		hit = strstr(row, pat);
		if (hit == NULL)
			fail_msg("README: no row for '%s'", k->name);
		row = hit;
		while (row > table && row[-1] != '\n')
			row--;
		/* In the first column: no '|' between the row start and it. */
		if (memchr(row + 1, '|', (size_t)(hit - row - 1)) == NULL)
			break;
		row = hit + 1;
	}
	row = strchr(row + 1, '|');		/* end of the key column */
	cell = strndup(row + 1, strcspn(row + 1, "|"));
	plain(cell);
	if (!contains(cell, config_key_default(k)))
		fail_msg("README: '%s' default is '%s', the table says '%s'",
		    k->name, cell, config_key_default(k));
	free(cell);
}

/* Whether line (up to '\n') is "KEY =" or ";KEY =". */
static bool
is_key_line(const char *line, const char *key)
{
	size_t n = strlen(key);

	if (*line == ';')
		line++;
	return strncmp(line, key, n) == 0 && strncmp(line + n, " =", 2) == 0;
}

/* conf/tlsfwd.ini: the key's line, and the comment lines above it. */
static void
check_example(const char *section, const struct config_key *k)
{
	const char *line = section, *start, *end, *doc = config_key_default(k);
	char *comment, *value;

	while (line != NULL && !is_key_line(line, k->name)) {
		line = strchr(line, '\n');
		line = line != NULL ? line + 1 : NULL;
	}
	if (line == NULL)
		fail_msg("conf/tlsfwd.ini: no line for '%s'", k->name);
	/*
	 * The prose comment above: lines "; ...", past the other keys of a
	 * group (";mode = 0660" above ";owner = app" shares its comment).
	 */
	start = line;
	end = line;
	while (start > section + 1) {
		const char *prev = start - 1;

		while (prev > section && prev[-1] != '\n')
			prev--;
		if (strncmp(prev, "; ", 2) == 0)
			start = prev;
		else if (*prev == ';' && islower((unsigned char)prev[1]) &&
		    start == end)
			start = end = prev;	/* a key of the same group */
		else
			break;
	}
	comment = strndup(start, (size_t)(end - start));
	value = strndup(strstr(line, "= ") + 2, strcspn(strstr(line, "= ") + 2,
	    "\n"));
	plain(comment);
	if (strcmp(doc, "required") == 0) {
		if (*line == ';')
			fail_msg("conf/tlsfwd.ini: required '%s' is commented "
			    "out", k->name);
	} else if (strcmp(doc, "none") == 0) {
		if (*line != ';')
			fail_msg("conf/tlsfwd.ini: '%s' has no default but is "
			    "set", k->name);
	} else if (strcmp(value, doc) != 0 && !contains(comment, doc)) {
		fail_msg("conf/tlsfwd.ini: '%s' shows '%s' and its comment "
		    "does not say the default '%s'", k->name, value, doc);
	}
	free(comment);
	free(value);
}

/* conf/tlsfwd.ini.5: the key's .TP item, its "Default:" sentence. */
static void
check_man(const char *section, const struct config_key *k)
{
	const char *item = section, *end;
	char *text;

	for (;;) {
		item = strstr(item, "\n.TP\n.B");
		if (item == NULL)
			fail_msg("tlsfwd.ini.5: no item for '%s'", k->name);
		item += 7;
		if (*item == 'I' || *item == 'R')
			item++;
		if (*item == ' ' && strncmp(item + 1, k->name,
		    strlen(k->name)) == 0 && !isalnum((unsigned char)
		    item[1 + strlen(k->name)]) && item[1 + strlen(k->name)] !=
		    '_')
			break;
	}
	item = strstr(item, "Default:");
	if (item == NULL)
		fail_msg("tlsfwd.ini.5: '%s' has no Default:", k->name);
	end = strstr(item + 8, "\n.br");
	text = roff_text(item + 8, end != NULL ? (size_t)(end - item - 8) :
	    strlen(item + 8));
	if (!contains(text, config_key_default(k)))
		fail_msg("tlsfwd.ini.5: '%s' default is '%s', the table says "
		    "'%s'", k->name, text, config_key_default(k));
	free(text);
}

/*
 * daemon/tlsfwd.8: a key named in passing, ".B key" (or ".B \%key"), with
 * "(default X)" on the next line; X must hold the table's default. Returns
 * how many it checked.
 */
static int
check_daemon_man(const char *page, const struct config_key *table)
{
	int checked = 0;

	for (const char *at = page; (at = strstr(at, "\n.B ")) != NULL; at++) {
		const char *name = at + 4, *eol = strchr(name, '\n'), *close;
		char *text;

		if (strncmp(name, "\\%", 2) == 0)
			name += 2;
		if (eol == NULL || strncmp(eol + 1, "(default ", 9) != 0)
			continue;
		for (const struct config_key *k = table; k->name != NULL;
		    k++) {
			if (strlen(k->name) != (size_t)(eol - name) ||
			    strncmp(name, k->name, strlen(k->name)) != 0)
				continue;
			close = strchr(eol + 10, ')');
			assert_non_null(close);
			text = strndup(eol + 10, (size_t)(close - eol - 10));
			if (!contains(text, config_key_default(k)))
				fail_msg("tlsfwd.8: '%s' default is '%s', the "
				    "table says '%s'", k->name, text,
				    config_key_default(k));
			free(text);
			checked++;
		}
	}
	return checked;
}

/*
 * Every key of table in its part of each document: the README's table
 * between readme_from and readme_to, the example's section between
 * ini_from and ini_to (NULL: the end), the man page's section man_section.
 */
static void
check_documents(const struct config_key *table, const char *readme_from,
    const char *readme_to, const char *ini_from, const char *ini_to,
    const char *man_section)
{
	char *readme = slurp("README.md"), *ini = slurp("conf/tlsfwd.ini");
	char *man = slurp("conf/tlsfwd.ini.5");
	char *rt = between(readme, readme_from, readme_to);
	char *it = between(ini, ini_from, ini_to);
	char *mt = between(man, man_section, "\n.SH ");

	for (const struct config_key *k = table; k->name != NULL; k++) {
		assert_non_null(config_key_default(k));
		check_readme(rt, k);
		check_example(it, k);
		check_man(mt, k);
	}
	free(rt), free(it), free(mt), free(readme), free(ini), free(man);
}

static void
test_global_keys_documented_with_their_defaults(void **state)
{
	(void)state;
	check_documents(config_global_keys, "### `[global]`",
	    "### `[SERVICE]`", "\n[global]\n", "\n[example]\n",
	    "\n.SH GLOBAL SECTION");
}

static void
test_service_keys_documented_with_their_defaults(void **state)
{
	(void)state;
	check_documents(config_service_keys, "### `[SERVICE]`",
	    "### TLS policy", "\n[example]\n", NULL,
	    "\n.SH SERVICE SECTIONS");
}

static void
test_daemon_man_page_defaults(void **state)
{
	char *page = slurp("daemon/tlsfwd.8");

	(void)state;
	if (check_daemon_man(page, config_global_keys) +
	    check_daemon_man(page, config_service_keys) == 0)
		fail_msg("tlsfwd.8: no key named with '(default ...)': has the "
		    "page's format changed?");
	free(page);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_global_keys_documented_with_their_defaults),
		cmocka_unit_test(test_service_keys_documented_with_their_defaults),
		cmocka_unit_test(test_daemon_man_page_defaults),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
