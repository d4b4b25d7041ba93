/* SPDX-License-Identifier: MIT
 *
 * cmd_secret.c: `aigate secret put|list|delete` over store/secrets.h. A value
 * comes only from stdin (never argv, which other users can read in /proc),
 * with echo off at a terminal, and is never printed back.
 */
#include "util/platform.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <termios.h>
#include <unistd.h>

#include "cli/cli.h"
#include "store/secrets.h"
#include "util/buf.h"
#include "util/errors.h"
#include "util/json.h"

#define COMMON_OPTS "common options: --config FILE  --data-dir DIR  --json  --help\n"

static const char secret_usage[] =
    "usage: aigate secret put NAME   (the value is read from stdin)\n"
    "       aigate secret list\n"
    "       aigate secret delete NAME\n" COMMON_OPTS;
static const char put_usage[] =
    "usage: aigate secret put NAME\n"
    "Stores a secret, read from stdin: at a terminal you are prompted and the value is not\n"
    "echoed; from a pipe, one trailing newline is dropped. It is kept in <data_dir>/secrets\n"
    "(mode 0600) and given to the server like an environment variable (the environment wins).\n"
    "\n" COMMON_OPTS;
static const char list_usage[] =
    "usage: aigate secret list\n"
    "Lists the names of the stored secrets (never values).\n" COMMON_OPTS;
static const char delete_usage[] = "usage: aigate secret delete NAME\n"
                                   "Deletes a secret; exits 1 when there is none of that name.\n"
                                   "\n" COMMON_OPTS;

/* ---- reading the value ----------------------------------------------------------------- */

static struct termios saved_tio;
static volatile sig_atomic_t echo_off;

/* A signal at the prompt must not leave the user's terminal without echo. */
static void restore_and_reraise(int sig)
{
    if (echo_off)
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_tio);
    signal(sig, SIG_DFL);
    raise(sig);
}

/* Reads up to cap bytes into buf: to the first newline at a terminal (echo
 * off), to EOF from a pipe or file. @return bytes read, or -errno, or
 * AG_ETOOBIG when the input does not fit. */
static ssize_t read_value(char *buf, size_t cap)
{
    bool tty = isatty(STDIN_FILENO);
    struct sigaction sa = {0}, old_int, old_term, old_hup;
    if (tty) {
        if (tcgetattr(STDIN_FILENO, &saved_tio) < 0)
            return -errno;
        sa.sa_handler = restore_and_reraise;
        sigemptyset(&sa.sa_mask);
        sigaction(SIGINT, &sa, &old_int);
        sigaction(SIGTERM, &sa, &old_term);
        sigaction(SIGHUP, &sa, &old_hup);
        struct termios quiet = saved_tio;
        quiet.c_lflag &= ~(tcflag_t)(ECHO | ECHOE | ECHOK | ECHONL);
        echo_off = 1;
        if (tcsetattr(STDIN_FILENO, TCSAFLUSH, &quiet) < 0) {
            echo_off = 0;
            return -errno;
        }
        fputs("Enter a secret value: ", stderr);
        fflush(stderr);
    }
    size_t len = 0;
    ssize_t rc = 0;
    for (;;) {
        if (len == cap) {
            rc = AG_ETOOBIG;
            break;
        }
        ssize_t r = read(STDIN_FILENO, buf + len, cap - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            rc = -errno;
            break;
        }
        if (r == 0)
            break;
        len += (size_t)r;
        if (tty && memchr(buf + len - (size_t)r, '\n', (size_t)r) != NULL) {
            len = (size_t)((char *)memchr(buf, '\n', len) - buf) + 1;
            break;
        }
    }
    if (tty) {
        tcsetattr(STDIN_FILENO, TCSAFLUSH, &saved_tio);
        echo_off = 0;
        sigaction(SIGINT, &old_int, NULL);
        sigaction(SIGTERM, &old_term, NULL);
        sigaction(SIGHUP, &old_hup, NULL);
        fputc('\n', stderr); /* the newline the user typed was not echoed */
    }
    return rc < 0 ? rc : (ssize_t)len;
}

static int secret_put(int argc, char **argv)
{
    ag__cli_t c;
    int status;
    if (!ag__cli_parse(&c, put_usage, argc, argv, NULL, 0, 1, 1, &status))
        return status;
    const char *name = c.pos[0];
    /* Room for the largest value plus "\r\n", and one byte to see more. */
    size_t cap = AG_SECRETS_MAX_VALUE_LEN + 3;
    char *buf = NULL;
    ag_buf_t out;
    ag_buf_init(&out, 0);
    int rc = 0;
    if (!ag_secrets_name_valid(name)) {
        rc = ag__cli_fail("%s", ag_strerror(AG_SECRETS_ENAME));
        goto done;
    }
    rc = ag__cli_data_dir(&c);
    if (rc)
        goto done;
    buf = malloc(cap);
    if (buf == NULL) {
        rc = ag__cli_fail("out of memory");
        goto done;
    }
    ssize_t n = read_value(buf, cap);
    if (n == AG_ETOOBIG) {
        rc = ag__cli_fail("%s", ag_strerror(AG_SECRETS_EVALUE_TOO_BIG));
        goto done;
    }
    if (n < 0) {
        rc = ag__cli_fail("cannot read the value from stdin: %s", ag_strerror((int)n));
        goto done;
    }
    size_t len = (size_t)n;
    if (len > 0 && buf[len - 1] == '\n') {
        len--;
        if (len > 0 && buf[len - 1] == '\r')
            len--;
    }
    /* One trailing newline (echo, a file) is trimmed above, as curl and wrangler
     * users expect; a CR or another control byte inside is a pasting mistake
     * that would break a header. Newlines and tabs stay possible (PEM keys). */
    for (size_t i = 0; i < len; i++) {
        unsigned char ch = (unsigned char)buf[i];
        if ((ch < 0x20 && ch != '\n' && ch != '\t') || ch == 0x7f) {
            rc = ag__cli_fail("cannot store secret %s: byte %zu of the value is a control byte "
                              "(0x%02x): only newlines and tabs may appear in a value",
                              name, i + 1, ch);
            goto done;
        }
    }
    int err = ag_secrets_put(c.data_dir, name, buf, len);
    if (err < 0) {
        rc = ag__cli_fail("cannot store secret %s: %s", name, ag_strerror(err));
        goto done;
    }
    if (c.json) {
        ag_buf_append_cstr(&out, "{\"ok\":true,\"name\":");
        ag_json_append_string(&out, ag_str_c(name));
        ag_buf_append_cstr(&out, "}");
        rc = ag__cli_print_json(&out);
    } else {
        printf("Stored secret %s in %s/%s.\n"
               "A running server reads secrets when it starts: restart it to use the new value.\n",
               name, c.data_dir, AG_SECRETS_FILE);
        rc = ag__cli_flush_stdout();
    }
done:
    if (buf) {
        explicit_bzero(buf, cap);
        free(buf);
    }
    ag_buf_fini(&out);
    ag__cli_fini(&c);
    return rc;
}

static int secret_list(int argc, char **argv)
{
    ag__cli_t c;
    int status;
    if (!ag__cli_parse(&c, list_usage, argc, argv, NULL, 0, 0, 0, &status))
        return status;
    int rc = ag__cli_data_dir(&c);
    if (rc) {
        ag__cli_fini(&c);
        return rc;
    }
    char **names;
    size_t n;
    int err = ag_secrets_list(c.data_dir, &names, &n);
    if (err < 0) {
        rc = ag__cli_fail("cannot list secrets in %s: %s", c.data_dir, ag_strerror(err));
        ag__cli_fini(&c);
        return rc;
    }
    /* --json: wrangler secret list's shape. */
    static const char *const fields[] = {"name", NULL};
    rc = ag__cli_print_names(&c, names, n, fields, ",\"type\":\"secret_text\"");
    ag_secrets_list_free(names, n);
    ag__cli_fini(&c);
    return rc;
}

static int secret_delete(int argc, char **argv)
{
    ag__cli_t c;
    int status;
    if (!ag__cli_parse(&c, delete_usage, argc, argv, NULL, 0, 1, 1, &status))
        return status;
    const char *name = c.pos[0];
    int rc = ag__cli_data_dir(&c);
    if (rc)
        goto done;
    int err = ag_secrets_delete(c.data_dir, name);
    if (err == AG_ENOTFOUND) {
        rc = ag__cli_fail("no secret %s in %s", name, c.data_dir);
        goto done;
    }
    if (err < 0) {
        rc = ag__cli_fail("cannot delete secret %s: %s", name, ag_strerror(err));
        goto done;
    }
    if (c.json) {
        ag_buf_t out;
        ag_buf_init(&out, 0);
        ag_buf_append_cstr(&out, "{\"ok\":true,\"name\":");
        ag_json_append_string(&out, ag_str_c(name));
        ag_buf_append_cstr(&out, "}");
        rc = ag__cli_print_json(&out);
        ag_buf_fini(&out);
    } else {
        printf("Deleted secret %s.\n", name);
        rc = ag__cli_flush_stdout();
    }
done:
    ag__cli_fini(&c);
    return rc;
}

int cmd_secret(int argc, char **argv)
{
    static const char *const names[] = {"put", "list", "delete", NULL};
    static int (*const fns[])(int, char **) = {secret_put, secret_list, secret_delete};
    return ag__cli_dispatch(secret_usage, argc, argv, names, fns);
}
