/*
 * control.h — the server's control socket (STORE/control.sock) and the
 * rollback it runs.
 *
 * `rewind rollback` must journal its rewrites through the same write path
 * as a guest, which only the process holding the store lock may use.  When
 * `rewind serve` holds it, the CLI asks the server over this socket; when
 * no server runs, the CLI opens the store itself (cap_server with
 * no_listen) and runs the same cli_rollback_exec().
 *
 * Protocol: one request line per connection, "rollback DISK WHEN\n" where
 * WHEN is an absolute form (@SECONDS.NANOS, seq:N or mark:LABEL); the
 * server answers "ok BLOCKS DATA_BYTES ZERO_BYTES SEQ BEFORE_SEQ LAST_SEQ\n"
 * or "error CODE MESSAGE\n".  The socket is mode 0600: only the store's
 * owner may roll disks back.
 */
#ifndef RW_CLI_CONTROL_H
#define RW_CLI_CONTROL_H

#include "capture/cap.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

struct cli_rollback_result {
	uint64_t seq;         /* the point rolled back to */
	uint64_t before_seq;  /* newest record before the rollback: undo point */
	uint64_t last_seq;    /* newest record after it */
	uint64_t blocks, data_bytes, zero_bytes;
};

/*
 * Rolls disk name of the open server s back to when (rw_parse_when form),
 * through s's write path, refusing with RW_EBUSY while clients use it.
 * Returns 0 and fills res, or error with rw_err_msg().
 */
int cli_rollback_exec(struct cap_server *s, const char *name, const char *when,
		      struct cli_rollback_result *res);

/*
 * cap_repair_fn for cap_server_opts.repair_head: rewrites in head_fd every
 * block of d with an index version in (after, upto] as it was at after
 * (restore's rs_undo_lost as the source; zero runs punched as holes, or
 * written as zeroes where the file system cannot punch), and counts them
 * in *blocks.  arg is unused.  0 or error naming head.img.
 */
int cli_repair_head(void *arg, struct ix *ix, const struct ix_disk *d,
		    uint64_t after, uint64_t upto, int head_fd,
		    uint64_t *blocks);

/*
 * Opens the store in store_dir as a server that listens nowhere: that
 * recovers a store a crash or a power loss left unclean, exactly as
 * `rewind serve` would (journal tails, records the journal lost, head
 * replay, index catch-up).  0 and *out (cap_server_close() it), RW_EBUSY
 * when a server holds the store, or error.
 */
int cli_open_offline(struct cap_server **out, const char *store_dir);

struct cli_control;

/* Starts serving STORE/control.sock for s.  0 and *out, or error. */
int cli_control_start(struct cli_control **out, struct cap_server *s,
		      const char *store_dir);
/* Stops and frees (NULL ok). */
void cli_control_stop(struct cli_control *c);

/*
 * Sends one request to the server of store_dir and reads the answer line
 * into resp.  Returns 0, -ECONNREFUSED/-ENOENT when no server listens, or
 * error.
 */
int cli_control_call(const char *store_dir, const char *req, char *resp,
		     size_t respsz);

/*
 * Like cli_control_call() for answers of any length: reads until the
 * server closes the connection; *out is malloc'ed (NUL-terminated, caller
 * frees).  Used by "stats json|text [DISK]\n", answered by "ok\n" and the
 * report as `rewind stats` prints it (cli_stats_print), or "error CODE
 * MESSAGE\n".
 */
int cli_control_fetch(const char *store_dir, const char *req, char **out);

/* cmd_stats.c: prints figures as `rewind stats` does (text or JSON). */
struct cap_store_figures;
void cli_stats_print(FILE *f, const struct cap_store_figures *fig,
		     const char *store, bool json);

/*
 * Asks the server of store_dir (if one runs) to index every record it has
 * written, so that a reader in this process sees every write acknowledged
 * before the call.  Returns 0 when done, 1 when no server answers (the
 * caller must then hold the store lock and catch up itself), or error.
 */
int cli_control_index(const char *store_dir);

#endif
