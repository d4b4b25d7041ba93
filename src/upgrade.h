/* SPDX-License-Identifier: MIT
 *
 * upgrade.h: the binary upgrade's process mechanics (as nginx's): the old
 * process execs the new binary with its listening sockets inherited and waits
 * for it to say it is ready; the new one takes the sockets from its
 * environment and says so. main.c decides when, and drains the old one.
 */
#ifndef AG_UPGRADE_H
#define AG_UPGRADE_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#define AG_UPGRADE_MAX_FDS 264 /* 256 workers, the admin listener, the lock */

/* What the new process inherited (all -1 / 0 when it was not started so). */
typedef struct ag_upgrade_handover {
    bool active;
    int old_pid;
    int listen[AG_UPGRADE_MAX_FDS];
    unsigned nlisten;
    int admin[8];
    unsigned nadmin;
    int lock_fd;
    int ready_fd;  /* written once the new process serves */
    int stderr_fd; /* the old process's own stderr, fd 2 once ready */
} ag_upgrade_handover_t;

/** Takes the handover from the environment (AIGATE_UPGRADE_FDS and
 *  AIGATE_UPGRADE_HANDOVER) and removes it from there, so nothing this process
 *  starts inherits it. Call before any thread starts (it edits environ).
 *  @return 0 (h->active says whether there was one) or -EINVAL with a reason
 *  on stderr (the old process reports it). */
int ag_upgrade_handover_take(ag_upgrade_handover_t *h);

/** The new process serves: tells the old one, and puts its stderr back. */
void ag_upgrade_handover_ready(ag_upgrade_handover_t *h);

/** Closes whatever of the handover was not used (a failed start). */
void ag_upgrade_handover_fini(ag_upgrade_handover_t *h);

typedef struct ag_upgrade_spawn {
    const char *binary;
    char *const *argv; /* argv[0] is the binary's path */
    const int *listen;
    unsigned nlisten;
    const int *admin;
    unsigned nadmin;
    int lock_fd; /* -1: none */
    unsigned ready_timeout_ms;
} ag_upgrade_spawn_t;

typedef struct ag_upgrade_result {
    pid_t pid;      /* the new process (ready or not) */
    bool ready;     /* it serves */
    char why[2048]; /* not ready: its exit status or the timeout, then its last stderr lines */
    double ready_ms;
} ag_upgrade_result_t;

/** Execs the new binary with the sockets inherited and waits until it is
 *  ready, exits, or the timeout ends (then it is stopped). The child's stderr
 *  is copied to ours as it comes, and kept for the reason. Blocks.
 *  @return 0 when it is ready, else a negative errno (r->why says why). */
int ag_upgrade_spawn(const ag_upgrade_spawn_t *s, ag_upgrade_result_t *r);

#endif
