/* SPDX-License-Identifier: MIT
 *
 * toml.h: a TOML 1.0.0 parser that builds a read-only value tree. aigate reads
 * its configuration (aigate.toml, wrangler.toml) through it. Every value keeps
 * the 1-based line and column where it was defined, so that config checks can
 * report `file:line:col: message`.
 *
 * Threads: parsing touches no global state, so any thread may parse. A tree is
 * never modified after ag_toml_parse() returns, so readers on several threads
 * may share it; ag_toml_free() must not race with them.
 */
#ifndef AG_CONFIG_TOML_H
#define AG_CONFIG_TOML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/** Deepest nesting accepted: each table, array and value adds one level to
 *  its parent (the root table is level 0). Bounds the parser's recursion and
 *  that of any code that walks a tree. */
#define AG_TOML_MAX_DEPTH 128

typedef enum ag_toml_type {
    AG_TOML_STRING,
    AG_TOML_INTEGER,
    AG_TOML_FLOAT,
    AG_TOML_BOOL,
    AG_TOML_DATETIME,       /* offset date-time: 1979-05-27T07:32:00-07:00 */
    AG_TOML_DATETIME_LOCAL, /* 1979-05-27T07:32:00 */
    AG_TOML_DATE_LOCAL,     /* 1979-05-27 */
    AG_TOML_TIME_LOCAL,     /* 07:32:00 */
    AG_TOML_ARRAY,
    AG_TOML_TABLE,
} ag_toml_type_t;

typedef struct ag_toml_value ag_toml_value_t;

/** Why a parse failed. line and col are 1-based and point at the offending
 *  character; col counts code points, not bytes. Both are 0 only for "out of
 *  memory". message is NUL-terminated, without position or trailing newline. */
typedef struct ag_toml_error {
    uint32_t line;
    uint32_t col;
    char message[256];
} ag_toml_error_t;

/** The fields of the four date/time types. Fields a type does not have are 0:
 *  a local time has no date, a local date no time, only AG_TOML_DATETIME has
 *  an offset. Fractional seconds beyond nanoseconds are truncated (as the spec
 *  asks). */
typedef struct ag_toml_datetime {
    int year, month, day;
    int hour, minute, second; /* second may be 60 (leap second) */
    int nanosecond;
    int offset_minutes; /* east of UTC; "Z" is 0 */
} ag_toml_datetime_t;

/**
 * Parses a whole TOML document.
 * @param text  UTF-8 bytes, need not be NUL-terminated; borrowed for the call
 *              only (the tree copies what it keeps). One leading UTF-8 BOM is
 *              skipped.
 * @param err   may be NULL; filled in when NULL is returned.
 * @return the root table, owned by the caller until ag_toml_free(); NULL on
 *         any syntax or semantic error, or when out of memory.
 * @note Multi-line strings have CRLF normalised to LF (the spec allows it).
 *       Floats are read with strtod(), so LC_NUMERIC must be "C" (the default
 *       for a process that never calls setlocale()).
 */
ag_toml_value_t *ag_toml_parse(const char *text, size_t len, ag_toml_error_t *err);

/** Frees a tree returned by ag_toml_parse(): pass the root, never a value
 *  inside it. Every pointer obtained from the tree dies with it. NULL is a
 *  no-op. */
void ag_toml_free(ag_toml_value_t *root);

/** The type of v (which must not be NULL). */
ag_toml_type_t ag_toml_type(const ag_toml_value_t *v);

/** toml-test's name of a type: "string", "integer", "float", "bool",
 *  "datetime", "datetime-local", "date-local", "time-local", "array", "table".
 *  Static storage. */
const char *ag_toml_type_name(ag_toml_type_t type);

/** Where v was defined: the first character of the value, the '[' of the
 *  header that defined a table, or the key that implied a table (a.b = 1
 *  implies table a at the 'a'). The root table is at 1:1. 0 for NULL. */
uint32_t ag_toml_line(const ag_toml_value_t *v);
uint32_t ag_toml_col(const ag_toml_value_t *v);

/** Number of keys of a table; 0 when t is NULL or not a table. */
size_t ag_toml_table_len(const ag_toml_value_t *t);

/**
 * The i-th key of a table, in document order.
 * @param key, keylen  may be NULL; the key is UTF-8, NUL-terminated, and may
 *                     contain NUL itself (from a \u0000 escape), hence keylen.
 * @return the value, or NULL when t is not a table or i is out of range.
 *         Owned by the tree.
 */
const ag_toml_value_t *ag_toml_table_at(const ag_toml_value_t *t, size_t i, const char **key,
                                        size_t *keylen);

/** Looks up a key (not a dotted path) in a table, in O(1) for big tables.
 *  @return the value, owned by the tree; NULL when absent or t is NULL or not
 *  a table, so lookups can be chained. */
const ag_toml_value_t *ag_toml_table_get(const ag_toml_value_t *t, const char *key);
const ag_toml_value_t *ag_toml_table_getn(const ag_toml_value_t *t, const char *key, size_t keylen);

/** Number of elements of an array; 0 when a is NULL or not an array. */
size_t ag_toml_array_len(const ag_toml_value_t *a);

/** The i-th element, owned by the tree; NULL when out of range or not an array. */
const ag_toml_value_t *ag_toml_array_at(const ag_toml_value_t *a, size_t i);

/* Typed getters: 0 on success; AG_EINVALID when v is NULL or of another type,
 * in which case the outputs are left untouched. No conversions: an integer is
 * not a float. */

/** *ptr is NUL-terminated, owned by the tree; *len counts bytes without the
 *  NUL (the string itself may contain NUL). Either output may be NULL. */
int ag_toml_get_string(const ag_toml_value_t *v, const char **ptr, size_t *len);
int ag_toml_get_int(const ag_toml_value_t *v, int64_t *out);
int ag_toml_get_float(const ag_toml_value_t *v, double *out);
int ag_toml_get_bool(const ag_toml_value_t *v, bool *out);

/**
 * Any of the four date/time types.
 * @param out   the fields; may be NULL.
 * @param text  may be NULL; set to the canonical RFC 3339 text, owned by the
 *              tree: 'T' between date and time, 'Z' for z/Z, other offsets
 *              and fractional digits (up to 9) as written.
 */
int ag_toml_get_datetime(const ag_toml_value_t *v, ag_toml_datetime_t *out, const char **text);

#endif
