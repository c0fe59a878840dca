/*
 * cmd_rollback.c — `rewind rollback`: set a disk back to a moment, in place.
 *
 * Only blocks written after the moment are rewritten, and the rewrites are
 * journaled like guest writes, so a rollback is itself history: rolling
 * back to the moment just before it (printed as the undo command) undoes
 * it exactly.  With `rewind serve` running the request goes over the
 * server's control socket (refused while a client uses the disk).  Without
 * one, this process does the work: in place (restore/inplace.c: no server
 * start-up, one journal sync per window) when the store was shut down
 * cleanly, else by opening the store as a server does — which recovers
 * it — and rolling back through that.
 */
#include "cli/cli.h"
#include "cli/control.h"
#include "capture/cap.h"
#include "common/rw.h"
#include "restore/rs.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
	fprintf(f,
		"usage: rewind rollback [--store DIR] NAME --at WHEN [--json]\n\n"
		"Set disk NAME's current contents back to WHEN, in place, rewriting only\n"
		"the blocks written after WHEN.  The rewrites are journaled, so the\n"
		"rollback can be undone with the command it prints.\n\n"
		"  --at WHEN   ISO 8601, @EPOCH_SECONDS, '10m ago', now, seq:N or mark:LABEL\n"
		"  --json      print the result as JSON\n\n"
		"Works while 'rewind serve' runs, as long as no client is connected to\n"
		"the disk (shut the VM down first); the server never has to stop.\n");
}

/* Rewrites a user's WHEN into an absolute form the server resolves alike. */
static int absolute_when(const char *at, char *buf, size_t n)
{
	struct rw_when w;
	int err = rw_parse_when(at, rw_clock_ns(), &w);

	if (err)
		return err;
	switch (w.kind) {
	case RW_WHEN_TIME:
		snprintf(buf, n, "@%" PRIu64 ".%09" PRIu64, (uint64_t)(w.ts_ns / 1000000000u),
			 (uint64_t)(w.ts_ns % 1000000000u));
		break;
	case RW_WHEN_SEQ:
		snprintf(buf, n, "seq:%" PRIu64, w.seq);
		break;
	case RW_WHEN_MARK:
		if (strpbrk(w.mark, "\n\r"))
			return rw_err_set(RW_EPARSE, "mark labels cannot hold "
					  "line breaks");
		snprintf(buf, n, "mark:%s", w.mark);
		break;
	}
	return 0;
}

static int cmd_rollback(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "at", required_argument, NULL, 'a' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0, 0, 0, 0 },
	};
	const char *store = NULL, *at = NULL;
	bool json = false;
	int c, err;

	while ((c = getopt_long(argc, argv, "s:a:jh", opts, NULL)) != -1) {
		switch (c) {
		case 's': store = optarg; break;
		case 'a': at = optarg; break;
		case 'j': json = true; break;
		case 'h': usage(stdout); return 0;
		default: return cli_usage_error("rollback", "unknown option");
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("rollback", "expected one disk NAME");
	if (!at)
		return cli_usage_error("rollback", "--at WHEN is required");
	const char *name = argv[optind];
	if (!*name || strpbrk(name, " \n\r/"))
		return cli_usage_error("rollback", "invalid disk name '%s'", name);
	char when[200];
	if ((err = absolute_when(at, when, sizeof(when))))
		return cli_fail(err, "--at");
	store = cli_store_dir(store);

	struct cli_rollback_result r = { 0 };
	char req[512], resp[1200];
	bool via_server = false;
	uint64_t t0 = rw_mono_ns();
	snprintf(req, sizeof(req), "rollback %s %s\n", name, when);
	err = cli_control_call(store, req, resp, sizeof(resp));
	if (!err) {
		via_server = true;
		int code;
		if (sscanf(resp, "ok %" SCNu64 " %" SCNu64 " %" SCNu64 " %" SCNu64
			   " %" SCNu64 " %" SCNu64, &r.blocks, &r.data_bytes,
			   &r.zero_bytes, &r.seq, &r.before_seq, &r.last_seq) == 6) {
			err = 0;
		} else if (sscanf(resp, "error %d", &code) == 1) {
			char *msg = strchr(resp + 6, ' ');
			char *nl = strchr(resp, '\n');
			if (nl)
				*nl = '\0';
			err = rw_err_set(code < 0 ? code : -EIO, "%s",
					 msg ? msg + 1 : "server error");
		} else {
			err = rw_err_set(-EIO, "unexpected answer from the server");
		}
	} else if (err == -ENOENT || err == -ECONNREFUSED) {
		/* No server: do it here, in place when the store is clean. */
		struct rw_when w;
		struct rs_rollback_result rr;
		rw_err_clear();
		if ((err = rw_parse_when(when, rw_clock_ns(), &w)))
			return cli_fail(err, "--at");
		err = rs_rollback_store(store, name, &w, &rr);
		if (err == RW_EBUSY)
			return cli_fail(err, "cannot roll back disk '%s' (a server "
					"holds the store but does not answer on "
					"'%s/control.sock')", name, store);
		if (err != 1) {
			r.seq = rr.seq;
			r.before_seq = rr.before_seq;
			r.last_seq = rr.last_seq;
			r.blocks = rr.st.blocks;
			r.data_bytes = rr.st.data_bytes;
			r.zero_bytes = rr.st.zero_bytes;
			goto done;
		}
		/* Not shut down cleanly: recover it as a server would. */
		struct cap_server *s = NULL;
		rw_err_clear();
		err = cli_open_offline(&s, store);
		if (err == RW_EBUSY)
			return cli_fail(err, "cannot roll back disk '%s' (a server "
					"holds the store but does not answer on "
					"'%s/control.sock')", name, store);
		if (err)
			return cli_fail(err, "cannot open store '%s'", store);
		rw_err_clear();
		err = cli_rollback_exec(s, name, when, &r);
		char keep[1024];
		snprintf(keep, sizeof(keep), "%s", rw_err_msg());
		int cerr = cap_server_close(s);
		if (!err && cerr)
			err = cerr;
		else if (err)
			rw_err_set(err, "%s", keep);
	}
done:
	if (err)
		return cli_fail(err, "cannot roll disk '%s' back to '%s'", name, at);
	double secs = (double)(rw_mono_ns() - t0) / 1e9;
	if (json) {
		printf("{\"disk\":");
		cli_json_str(stdout, name);
		printf(",\"seq\":%" PRIu64 ",\"blocks\":%" PRIu64 ",\"data_bytes\":%"
		       PRIu64 ",\"zero_bytes\":%" PRIu64 ",\"undo_seq\":%" PRIu64
		       ",\"first_new_seq\":%" PRIu64 ",\"last_seq\":%" PRIu64
		       ",\"via_server\":%s,\"seconds\":%.3f}\n", r.seq, r.blocks,
		       r.data_bytes, r.zero_bytes, r.before_seq,
		       r.blocks ? r.before_seq + 1 : 0, r.last_seq,
		       via_server ? "true" : "false", secs);
	} else {
		char a[32], b[32];
		printf("rolled disk '%s' back to seq %" PRIu64 ": %" PRIu64
		       " blocks rewritten (%s of data, %s of zeroes), %.2fs\n",
		       name, r.seq, r.blocks, rw_fmt_size(r.data_bytes, a, sizeof(a)),
		       rw_fmt_size(r.zero_bytes, b, sizeof(b)), secs);
		printf("undo with: rewind rollback %s --at seq:%" PRIu64 "\n", name,
		       r.before_seq);
	}
	return 0;
}

CLI_COMMAND(rollback, "rollback", "set a disk back to a moment in place (undoable)", cmd_rollback)
