/* The SQL sanitiser and summary: no value survives, and the operation and
 * table come out of what is left. */
#include "sql.h"

#include <criterion/criterion.h>
#include <string.h>

static char out[256];

static const char *clean(const char *sql)
{
	bool cut;

	sql_sanitize(sql, strlen(sql), out, sizeof(out), &cut);
	cr_assert_not(cut, "%s", sql);
	return out;
}

Test(sql, literals_become_placeholders)
{
	cr_expect_str_eq(clean("SELECT * FROM users WHERE name = 'O''Brien' AND id = 42"),
			 "SELECT * FROM users WHERE name = ? AND id = ?");
	cr_expect_str_eq(clean("select 1.5e-3, .5, 0x1F, -7, E'it\\'s', X'ff', B'01', U&'d\\0061t', N'x'"),
			 "select ?, ?, ?, -?, ?, ?, ?, ?, ?");
	cr_expect_str_eq(clean("SELECT $$secret$$, $tag$a $$ b$tag$, $1, t1.c2"),
			 "SELECT ?, ?, $1, t1.c2");
	cr_expect_str_eq(clean("UPDATE flags SET on = TRUE, off = false WHERE x IS NULL"),
			 "UPDATE flags SET on = ?, off = ? WHERE x IS NULL");
	cr_expect_str_eq(clean("SELECT \"Weird 'Name'\" FROM \"T\""), "SELECT \"Weird 'Name'\" FROM \"T\"");
}

Test(sql, comments_and_space_are_dropped)
{
	cr_expect_str_eq(clean("  SELECT /* card 4111 /* nested */ still */ a -- pw=hunter2\n\n\tFROM t  "),
			 "SELECT a FROM t");
}

Test(sql, text_cut_inside_a_literal_hides_the_rest)
{
	bool cut;
	const char *sql = "INSERT INTO t VALUES ('half a secr";

	sql_sanitize(sql, strlen(sql), out, sizeof(out), &cut);
	cr_expect_str_eq(out, "INSERT INTO t VALUES (?");
	sql_sanitize("SELECT 'abc' + 1", 16, out, 10, &cut);
	cr_expect(cut);
	cr_expect_eq(strchr(out, 'a'), NULL, "%s", out);
}

static void summary(const char *sql, const char *op, const char *coll)
{
	char o[32], c[64];

	sql_summarize(clean(sql), o, sizeof(o), c, sizeof(c));
	cr_expect_str_eq(o, op, "%s", sql);
	cr_expect_str_eq(c, coll, "%s", sql);
}

Test(sql, operation_and_single_table)
{
	summary("select * from orders where id = 1", "SELECT", "orders");
	summary("SELECT o.id FROM public.orders AS o WHERE o.x > 2 ORDER BY 1", "SELECT", "public.orders");
	summary("INSERT INTO items (a, b) VALUES (1, 'x') RETURNING id", "INSERT", "items");
	summary("UPDATE accounts SET balance = balance - 5 WHERE id = 7", "UPDATE", "accounts");
	summary("DELETE FROM ONLY sessions WHERE t < now()", "DELETE", "sessions");
	summary("COPY measurements (a, b) FROM STDIN", "COPY", "measurements");
	summary("(SELECT a FROM t)", "SELECT", "t");
	summary("BEGIN", "BEGIN", "");
	summary("SELECT 1", "SELECT", "");
}

Test(sql, several_tables_name_none)
{
	summary("SELECT * FROM a, b WHERE a.id = b.id", "SELECT", "");
	summary("SELECT * FROM a JOIN b ON a.id = b.id", "SELECT", "");
	summary("SELECT * FROM a WHERE id IN (SELECT id FROM b)", "SELECT", "");
	summary("SELECT * FROM (SELECT 1) s", "SELECT", "");
	summary("SELECT * FROM generate_series(1, 3)", "SELECT", "");
	summary("INSERT INTO a SELECT * FROM b", "INSERT", "");
	summary("SELECT a FROM t UNION SELECT a FROM u", "SELECT", "");
}
