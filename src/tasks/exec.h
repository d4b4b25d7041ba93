/* SPDX-License-Identifier: MIT
 *
 * exec.h: running one command for a command output: posix_spawn (no shell)
 * in a process group of its own, bytes on its stdin, its stdout and stderr
 * captured (bounded), a deadline after which the group gets SIGTERM and then
 * SIGKILL. Blocking; thread-safe (each call its own child and pipes).
 */
#ifndef AG_TASKS_EXEC_H
#define AG_TASKS_EXEC_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

#include "util/buf.h"
#include "util/str.h"

typedef struct ag_exec_opts {
    /** The program and its arguments, NULL-terminated; argv[0] is looked up
     *  in PATH when it holds no '/'. Borrowed for the call. */
    char *const *argv;
    /** The child's environment, NULL-terminated "NAME=value" strings; NULL
     *  passes this process's. Borrowed for the call. */
    char *const *envp;
    /** Written to the child's stdin, which is then closed. A child that exits
     *  or closes stdin before reading it all is not an error (input_short). */
    ag_str_t input;
    /** The child (its whole process group) gets SIGTERM after timeout_ms
     *  (0: no deadline), then SIGKILL grace_ms later (0: at once). */
    unsigned timeout_ms;
    unsigned grace_ms;
    /** Bytes of stdout and stderr (one stream, interleaved as written) kept in
     *  the result; the rest is read and dropped, so the child never blocks. */
    size_t capture_max;
    /** When it becomes true the child is stopped as at the deadline (checked
     *  every 50 ms); NULL for never. */
    const atomic_bool *stop;
} ag_exec_opts_t;

typedef struct ag_exec_result {
    int exit_status;  /* the exit status when it exited, else -1 */
    int term_signal;  /* the signal that ended it, else 0 */
    bool timed_out;   /* the deadline passed and it was signalled */
    bool stopped;     /* opts->stop ended it */
    bool input_short; /* it did not read all of its input */
    long elapsed_ms;
    ag_buf_t output;     /* the first capture_max bytes; the caller ag_buf_fini()s it */
    size_t output_total; /* bytes it wrote in all */
} ag_exec_result_t;

/** Runs opts->argv to its end (or until it is killed). The child starts with
 *  the default disposition of the usual signals and an empty signal mask,
 *  and inherits no descriptor of ours but stdin, stdout and stderr (glibc's
 *  posix_spawn_file_actions_addclosefrom_np, where it exists; our own
 *  descriptors are close-on-exec in any case).
 *  @return 0 when it ran, whatever its exit status (fills *r; release
 *  r->output); -errno when it could not be started (-ENOENT, -EACCES: the
 *  program; -EMFILE, -ENOMEM ...), with *r zeroed but for exit_status -1. */
int ag_exec_run(const ag_exec_opts_t *opts, ag_exec_result_t *r);

#endif
