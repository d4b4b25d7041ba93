/* SPDX-License-Identifier: MIT
 *
 * mail.c: building the RFC 5322 message of an email output: address lists,
 * RFC 2047 encoded words for non-ASCII header text, quoted-printable bodies.
 * The SMTP conversation itself is libcurl's (outputs.c).
 */
#include "util/platform.h"

#include "tasks/mail.h"

#include <time.h>

#include "util/errors.h"
#include "util/utf.h"

/* Header text bytes per encoded word: 42 bytes are 56 base64 characters, a
 * 68-byte word, so "Subject: " plus the first word stays within 78. */
#define WORD_BYTES 42
/* RFC 5322 2.1.1: a line is at most 998 bytes; we fold headers well before. */
#define LINE_MAX_7BIT 998
#define QP_LINE 76

static bool is_ws(char c)
{
    return c == ' ' || c == '\t';
}

static ag_str_t trim(ag_str_t s)
{
    while (s.len && is_ws(s.ptr[0]))
        s.ptr++, s.len--;
    while (s.len && is_ws(s.ptr[s.len - 1]))
        s.len--;
    return s;
}

/* An addr-spec as we accept it: printable ASCII without the specials that
 * would need quoting, one '@' with text on both sides. */
static bool spec_valid(ag_str_t s)
{
    if (s.len < 3 || s.len > 254)
        return false;
    size_t at = 0, nat = 0;
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c <= 0x20 || c >= 0x7f || strchr("<>()[]\\,;:\"", c) != NULL)
            return false;
        if (c == '@')
            at = i, nat++;
    }
    return nat == 1 && at > 0 && at < s.len - 1;
}

static bool display_valid(ag_str_t s)
{
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c < 0x20 || c == 0x7f || c == '"' || c == '<' || c == '>' || c == '\\')
            return false;
    }
    return ag_utf8_valid(s.ptr, s.len);
}

static int parse_one(ag_str_t e, ag_mail_addr_t *a)
{
    e = trim(e);
    const char *lt = memchr(e.ptr, '<', e.len);
    if (lt == NULL) {
        a->display = ag_str(e.ptr, 0);
        a->spec = e;
    } else {
        const char *gt = memchr(lt, '>', e.len - (size_t)(lt - e.ptr));
        if (gt == NULL || trim(ag_str(gt + 1, e.len - (size_t)(gt + 1 - e.ptr))).len != 0)
            return AG_EINVALID;
        a->display = trim(ag_str(e.ptr, (size_t)(lt - e.ptr)));
        if (a->display.len >= 2 && a->display.ptr[0] == '"' &&
            a->display.ptr[a->display.len - 1] == '"')
            a->display = trim(ag_str(a->display.ptr + 1, a->display.len - 2));
        a->spec = ag_str(lt + 1, (size_t)(gt - lt - 1));
    }
    if (!spec_valid(a->spec) || !display_valid(a->display))
        return AG_EINVALID;
    return 0;
}

int ag_mail_parse_list(ag_str_t list, ag_mail_addr_t *addrs, size_t max)
{
    size_t n = 0, start = 0;
    if (list.ptr == NULL)
        return AG_EINVALID;
    for (size_t i = 0; i <= list.len; i++) {
        if (i < list.len && list.ptr[i] != ',')
            continue;
        if (n == max)
            return AG_EINVALID;
        int rc = parse_one(ag_str(list.ptr + start, i - start), &addrs[n]);
        if (rc < 0)
            return rc;
        n++;
        start = i + 1;
    }
    return n ? (int)n : AG_EINVALID;
}

static int append_base64(ag_buf_t *out, const unsigned char *p, size_t n)
{
    static const char tab[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    int rc = ag_buf_reserve(out, (n + 2) / 3 * 4);
    if (rc < 0)
        return rc;
    char *o = out->data + out->len;
    size_t i = 0;
    for (; i + 3 <= n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (unsigned)p[i + 1] << 8 | p[i + 2];
        *o++ = tab[v >> 18], *o++ = tab[(v >> 12) & 63], *o++ = tab[(v >> 6) & 63];
        *o++ = tab[v & 63];
    }
    if (i < n) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0);
        *o++ = tab[v >> 18], *o++ = tab[(v >> 12) & 63];
        *o++ = i + 1 < n ? tab[(v >> 6) & 63] : '=';
        *o++ = '=';
    }
    out->len = (size_t)(o - out->data);
    return 0;
}

/* Printable ASCII that no decoder would take for an encoded word. */
static bool plain_ascii(ag_str_t s)
{
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (c < 0x20 || c >= 0x7f)
            return false;
        if (c == '=' && i + 1 < s.len && s.ptr[i + 1] == '?')
            return false;
    }
    return s.len <= 900;
}

int ag_mail_append_header_text(ag_buf_t *out, ag_str_t text)
{
    /* A rendered template may hold newlines: a header cannot. */
    ag_buf_t clean;
    ag_buf_init(&clean, 0);
    int rc = ag_buf_append(&clean, text.ptr ? text.ptr : "", text.len);
    for (size_t i = 0; rc == 0 && i < clean.len; i++) {
        unsigned char c = (unsigned char)clean.data[i];
        if (c < 0x20 || c == 0x7f)
            clean.data[i] = ' ';
    }
    ag_str_t s = ag_str(clean.data, clean.len);
    if (rc == 0 && plain_ascii(s)) {
        rc = ag_buf_append(out, s.ptr, s.len);
        ag_buf_fini(&clean);
        return rc;
    }
    const unsigned char *p = (const unsigned char *)s.ptr;
    size_t i = 0;
    bool first = true;
    while (rc == 0 && i < s.len) {
        /* Whole characters only (RFC 2047 5): an invalid byte counts as one. */
        size_t start = i;
        while (i < s.len) {
            unsigned cp;
            size_t adv = ag_utf8_decode(p + i, s.len - i, &cp);
            if (adv == 0)
                adv = 1;
            if (i + adv - start > WORD_BYTES && i > start)
                break;
            i += adv;
        }
        if (!first)
            rc = ag_buf_append(out, "\r\n ", 3);
        if (rc == 0)
            rc = ag_buf_append(out, "=?UTF-8?B?", 10);
        if (rc == 0)
            rc = append_base64(out, p + start, i - start);
        if (rc == 0)
            rc = ag_buf_append(out, "?=", 2);
        first = false;
    }
    ag_buf_fini(&clean);
    return rc;
}

/* A display name that may go unquoted: atext (RFC 5322 3.2.3) and spaces. */
static bool atext_phrase(ag_str_t s)
{
    for (size_t i = 0; i < s.len; i++) {
        unsigned char c = (unsigned char)s.ptr[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              strchr(" !#$%&'*+-/=?^_`{|}~", c) != NULL) ||
            c == 0)
            return false;
    }
    return true;
}

static bool ascii_printable(ag_str_t s)
{
    for (size_t i = 0; i < s.len; i++) {
        if ((unsigned char)s.ptr[i] < 0x20 || (unsigned char)s.ptr[i] >= 0x7f)
            return false;
    }
    return true;
}

static int append_addr(ag_buf_t *out, const ag_mail_addr_t *a)
{
    int rc = 0;
    if (a->display.len == 0)
        return ag_buf_append_str(out, a->spec);
    if (atext_phrase(a->display))
        rc = ag_buf_append_str(out, a->display);
    else if (ascii_printable(a->display) &&
             !(a->display.len > 1 && a->display.ptr[0] == '=' && a->display.ptr[1] == '?'))
        rc = ag_buf_printf(out, "\"%.*s\"", (int)a->display.len, a->display.ptr);
    else
        rc = ag_mail_append_header_text(out, a->display);
    if (rc == 0)
        rc = ag_buf_printf(out, " <%.*s>", (int)a->spec.len, a->spec.ptr);
    return rc;
}

static int append_addr_list(ag_buf_t *out, const char *name, const ag_mail_addr_t *a, size_t n)
{
    int rc = ag_buf_printf(out, "%s: ", name);
    size_t line_start = out->len - strlen(name) - 2;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        size_t before = out->len;
        if (i > 0)
            rc = ag_buf_append(out, ", ", 2);
        if (rc == 0)
            rc = append_addr(out, &a[i]);
        /* Fold before an address that would take the line past 78. */
        if (rc == 0 && i > 0 && out->len - line_start > 78) {
            out->len = before;
            rc = ag_buf_append(out, ",\r\n ", 4);
            line_start = out->len - 1;
            if (rc == 0)
                rc = append_addr(out, &a[i]);
        }
        if (rc == 0) {
            /* An encoded display name may itself have folded. */
            for (size_t j = before; j + 1 < out->len; j++) {
                if (out->data[j] == '\r' && out->data[j + 1] == '\n')
                    line_start = j + 2;
            }
        }
    }
    if (rc == 0)
        rc = ag_buf_append(out, "\r\n", 2);
    return rc;
}

/* 7bit when every byte is ASCII (no NUL) and no line is over 998 bytes. */
static bool body_7bit(ag_str_t b)
{
    size_t line = 0;
    for (size_t i = 0; i < b.len; i++) {
        unsigned char c = (unsigned char)b.ptr[i];
        if (c == 0 || c >= 0x80)
            return false;
        if (c == '\n' || c == '\r')
            line = 0;
        else if (++line > LINE_MAX_7BIT)
            return false;
    }
    return true;
}

/* Appends the body with every line break (LF, CRLF, CR) as CRLF, ending in one. */
static int append_crlf_body(ag_buf_t *out, ag_str_t b)
{
    int rc = 0;
    size_t start = 0, i = 0;
    while (rc == 0 && i < b.len) {
        char c = b.ptr[i];
        if (c != '\n' && c != '\r') {
            i++;
            continue;
        }
        rc = ag_buf_append(out, b.ptr + start, i - start);
        if (rc == 0)
            rc = ag_buf_append(out, "\r\n", 2);
        i += (c == '\r' && i + 1 < b.len && b.ptr[i + 1] == '\n') ? 2 : 1;
        start = i;
    }
    if (rc == 0 && start < b.len) {
        rc = ag_buf_append(out, b.ptr + start, b.len - start);
        if (rc == 0)
            rc = ag_buf_append(out, "\r\n", 2);
    }
    return rc;
}

int ag_mail_append_qp(ag_buf_t *out, ag_str_t body)
{
    static const char hex[] = "0123456789ABCDEF";
    const unsigned char *p = (const unsigned char *)body.ptr;
    size_t col = 0, i = 0;
    int rc = 0;
    while (rc == 0 && i < body.len) {
        unsigned char c = p[i];
        if (c == '\n' || c == '\r') {
            rc = ag_buf_append(out, "\r\n", 2);
            col = 0;
            i += (c == '\r' && i + 1 < body.len && p[i + 1] == '\n') ? 2 : 1;
            continue;
        }
        bool last = i + 1 == body.len || p[i + 1] == '\n' || p[i + 1] == '\r';
        char tok[3];
        size_t tlen = 1;
        if ((c >= 33 && c <= 126 && c != '=') || ((c == ' ' || c == '\t') && !last)) {
            tok[0] = (char)c;
        } else {
            tok[0] = '=', tok[1] = hex[c >> 4], tok[2] = hex[c & 15];
            tlen = 3;
        }
        /* Room for the token and, unless it ends the line, a soft break's '='. */
        if (col + tlen > (last ? QP_LINE : QP_LINE - 1)) {
            rc = ag_buf_append(out, "=\r\n", 3);
            col = 0;
        }
        if (rc == 0)
            rc = ag_buf_append(out, tok, tlen);
        col += tlen;
        i++;
    }
    if (rc == 0 && col > 0)
        rc = ag_buf_append(out, "\r\n", 2);
    return rc;
}

void ag_mail_format_date(int64_t ms, char out[40])
{
    static const char days[7][4] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static const char months[12][4] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                       "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL) {
        t = 0;
        gmtime_r(&t, &tm);
    }
    snprintf(out, 40, "%s, %02d %s %04d %02d:%02d:%02d +0000", days[tm.tm_wday % 7], tm.tm_mday,
             months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
}

int ag_mail_build(const ag_mail_msg_t *m, ag_buf_t *out)
{
    char date[40];
    ag_mail_format_date(m->date_ms, date);
    bool seven = body_7bit(m->body);
    int rc = ag_buf_printf(out, "Date: %s\r\n", date);
    if (rc == 0)
        rc = append_addr_list(out, "From", m->from, 1);
    if (rc == 0)
        rc = append_addr_list(out, "To", m->to, m->nto);
    if (rc == 0)
        rc = ag_buf_append_cstr(out, "Subject: ");
    if (rc == 0)
        rc = ag_mail_append_header_text(out, m->subject);
    if (rc == 0)
        rc = ag_buf_printf(out,
                           "\r\nMessage-ID: %.*s\r\n"
                           "MIME-Version: 1.0\r\n"
                           "Content-Type: text/plain; charset=utf-8\r\n"
                           "Content-Transfer-Encoding: %s\r\n"
                           "Auto-Submitted: auto-generated\r\n",
                           (int)m->message_id.len, m->message_id.ptr,
                           seven ? "7bit" : "quoted-printable");
    if (rc == 0 && m->task.len) {
        rc = ag_buf_append_cstr(out, "X-Aigate-Task: ");
        if (rc == 0)
            rc = ag_mail_append_header_text(out, m->task);
        if (rc == 0)
            rc = ag_buf_append(out, "\r\n", 2);
    }
    if (rc == 0)
        rc = ag_buf_append(out, "\r\n", 2);
    if (rc == 0)
        rc = seven ? append_crlf_body(out, m->body) : ag_mail_append_qp(out, m->body);
    return rc;
}
