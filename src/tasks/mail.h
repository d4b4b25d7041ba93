/* SPDX-License-Identifier: MIT
 *
 * mail.h: the e-mail message an email output sends (RFC 5322 with MIME, RFC
 * 2047 for non-ASCII header text, RFC 2045 quoted-printable bodies) and the
 * address lists it is sent to. Pure functions over buffers: outputs.c hands
 * the result to libcurl's SMTP client. Thread-safe.
 */
#ifndef AG_TASKS_MAIL_H
#define AG_TASKS_MAIL_H

#include <stddef.h>
#include <stdint.h>

#include "util/buf.h"
#include "util/str.h"

/** Most addresses one To list may hold. */
#define AG_MAIL_MAX_RCPT 32

/** One parsed address: "Name <user@host>" or "user@host". */
typedef struct ag_mail_addr {
    ag_str_t display; /* the display name, trimmed, without quotes; empty when none */
    ag_str_t spec;    /* the addr-spec, "user@host", for the SMTP envelope */
} ag_mail_addr_t;

/** Parses a comma-separated list of addresses (display names may not hold a
 *  comma, a quote, '<' or '>'; addr-specs are printable ASCII with one '@',
 *  at most 254 bytes; no CR, LF or other control character anywhere). The
 *  views in addrs[] point into `list`, borrowed: they live as long as it.
 *  @return the number of addresses (1..max), or AG_EINVALID for an empty or
 *  malformed list or one with more than `max` addresses. */
int ag_mail_parse_list(ag_str_t list, ag_mail_addr_t *addrs, size_t max);

/** The message to build. Every pointer is borrowed for the call. */
typedef struct ag_mail_msg {
    const ag_mail_addr_t *from; /* one address */
    const ag_mail_addr_t *to;   /* the To header, in order */
    size_t nto;
    ag_str_t subject;    /* UTF-8; control characters become spaces */
    ag_str_t body;       /* UTF-8 text, any line endings */
    int64_t date_ms;     /* the Date header, epoch ms */
    ag_str_t message_id; /* "<...@...>", with the angle brackets */
    ag_str_t task;       /* the X-Aigate-Task header; empty for none */
} ag_mail_msg_t;

/** Appends the whole message to out: the headers Date, From, To, Subject,
 *  Message-ID, MIME-Version, Content-Type (text/plain; charset=utf-8),
 *  Content-Transfer-Encoding, Auto-Submitted (auto-generated, RFC 3834) and
 *  X-Aigate-Task, then a blank line and the body, every line ending in CRLF.
 *  The body goes as 7bit when it is ASCII with lines of at most 998 bytes,
 *  else as quoted-printable (so no server needs 8BITMIME). Dot-stuffing is
 *  left to the SMTP client (libcurl does it).
 *  @return 0, or a buffer error (AG_ETOOBIG past out's cap, -ENOMEM). */
int ag_mail_build(const ag_mail_msg_t *m, ag_buf_t *out);

/** Appends `text` as header text: as it is when it is printable ASCII that
 *  does not look like an encoded word, else as RFC 2047 "B" encoded words of
 *  whole UTF-8 characters, each at most 75 bytes, folded with CRLF SP.
 *  Control characters become spaces first. @return 0 or a buffer error. */
int ag_mail_append_header_text(ag_buf_t *out, ag_str_t text);

/** Appends `body` as quoted-printable (RFC 2045 6.7): encoded lines of at most
 *  76 bytes, soft breaks "=" CRLF, line breaks (LF, CRLF or CR) as CRLF.
 *  @return 0 or a buffer error. */
int ag_mail_append_qp(ag_buf_t *out, ag_str_t body);

/** Formats epoch ms as an RFC 5322 date in UTC ("Mon, 16 Mar 2026 09:00:00
 *  +0000") into out[40], whatever the locale. */
void ag_mail_format_date(int64_t ms, char out[40]);

#endif
