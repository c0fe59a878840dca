/*
 * cmd_compact.c — `rewind compact`: fold old history into base and reclaim
 * the journal (restore/compact.c does the work).
 *
 * Runs beside `rewind serve`: the store is opened without STORE/lock
 * (LMDB serialises writers across processes; STORE/compact.lock keeps two
 * compactions apart).  When no server holds the lock, the index is caught
 * up first so the newest records count; the lock is released before
 * compacting, so a server may start meanwhile.
 *
 * Then (unless --no-recompress) the raw WRITE records of the sealed
 * segments that stay are recompressed in place (journal/rewrite.c); with
 * --recompress alone, only that is done.  Text, JSON and the log say how
 * many bytes that freed and the payload compression ratio before/after.
 *
 * Exit status: 0 done (also "nothing to do"), 1 failure, 2 usage, 3 the
 * journal is over --max-journal and --over-budget refuse kept the history.
 */
#include "capture/cap.h"
#include "cli/cli.h"
#include "cli/control.h"
#include "common/rw.h"
#include "index/ix.h"
#include "restore/rs.h"

#include <errno.h>
#include <getopt.h>
#include <sched.h>
#include <sys/syscall.h>
#include <unistd.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void usage(FILE *f)
{
	fprintf(f,
		"usage: rewind compact [--store DIR] [NAME...] (--retain DURATION | --before WHEN)\n"
		"                      [--dry-run] [--drop-marks] [--max-journal SIZE\n"
		"                      [--over-budget compact|refuse]] [--no-recompress]\n"
		"                      [--background] [--json]\n"
		"       rewind compact [--store DIR] [NAME...] --recompress [--dry-run] [--json]\n\n"
		"Fold history older than the retention into each disk's base image and\n"
		"reclaim the journal segments below the new horizon (all disks when no\n"
		"NAME is given).  Points older than the new horizon can no longer be\n"
		"restored; every later point stays exact.  Safe while 'rewind serve' runs\n"
		"and after a crash (run it again to finish).\n\n"
		"  --retain DURATION   keep this much history: 90s, 10m, 24h, 7d\n"
		"  --before WHEN       fold everything before WHEN (as for restore --at)\n"
		"  --dry-run           print what would be folded and freed; change nothing\n"
		"  --drop-marks        compact past marks (they are deleted); without it\n"
		"                      compaction stops at the oldest mark\n"
		"  --max-journal SIZE  journal size budget per disk (e.g. 50G)\n"
		"  --over-budget P     over the budget: 'compact' moves the horizon further\n"
		"                      (history shrinks; reported), 'refuse' keeps history\n"
		"                      and exits 3 (default)\n"
		"  --recompress        only recompress (no --retain/--before: the horizon\n"
		"                      stays); records stored raw when the server was\n"
		"                      busy are compressed in their sealed segments,\n"
		"                      each record at its old place (frees disk blocks)\n"
		"  --no-recompress     fold only; leave raw records as they are\n"
		"  --zstd-level N      level for recompression (default %d)\n"
		"  --background        yield to everything else: idle I/O class and CPU\n"
		"                      policy, paced writeback (implied when started\n"
		"                      under the idle I/O class, as the systemd unit does)\n"
		"  --json              one JSON object per disk\n", JR_ZSTD_LEVEL_DEFAULT);
}

/*
 * Background mode (--background, or started under the idle I/O class as
 * rewind-compact@.service does): the process takes the idle I/O class and
 * the SCHED_IDLE CPU policy, so it runs on what the guest leaves idle
 * (nice 10 still took a share of a busy core: p99 of a concurrent fio
 * 6.9 ms against 4.8 ms with SCHED_IDLE in one interleaved pair), and the
 * fold paces its writeback (restore/compact.c).  Never fatal: returns
 * whether the process is in the idle I/O class now.
 * LMDB's write lock taken by an idle process can delay the server's
 * indexing (not its guest I/O, which never waits for the index).
 */
static bool go_background(bool asked)
{
	bool idle = false;
#ifdef SYS_ioprio_get
	long prio = syscall(SYS_ioprio_get, 1 /* IOPRIO_WHO_PROCESS */, 0);
	idle = prio >= 0 && (prio >> 13) == 3 /* IOPRIO_CLASS_IDLE */;
	if (asked && !idle)
		idle = syscall(SYS_ioprio_set, 1, 0, 3L << 13) == 0;
#endif
	if (asked || idle) {
		struct sched_param sp = { 0 };
		if (sched_setscheduler(0, SCHED_IDLE, &sp) < 0)
			rw_log(RW_LOG_DEBUG, "compact: SCHED_IDLE: %s", strerror(errno));
	}
	return idle;
}

static double rz_ratio(uint64_t logical, uint64_t stored)
{
	return stored ? (double)logical / (double)stored : 1.0;
}

static uint64_t rz_freed(const struct jr_recompress_stats *z)
{
	return z->alloc_before > z->alloc_after ? z->alloc_before - z->alloc_after : 0;
}

static void print_json(const char *name, const struct rs_compact_stats *s,
		       bool dry)
{
	const struct rs_compact_plan *p = &s->plan;

	printf("{\"disk\":");
	cli_json_str(stdout, name);
	printf(",\"dry_run\":%s,\"noop\":%s,\"resumed\":%s"
	       ",\"old_horizon_seq\":%" PRIu64 ",\"horizon_seq\":%" PRIu64
	       ",\"horizon_ts\":%" PRIu64 ",\"old_base_seq\":%" PRIu64
	       ",\"blocks\":%" PRIu64 ",\"versions\":%" PRIu64
	       ",\"records\":%" PRIu64 ",\"segments\":%" PRIu64
	       ",\"bytes\":%" PRIu64 ",\"journal_bytes\":%" PRIu64
	       ",\"clamped_by_mark\":",
	       dry ? "true" : "false", p->noop ? "true" : "false",
	       p->resume ? "true" : "false", p->old_horizon_seq,
	       p->horizon_seq, p->horizon_ts, p->old_base_seq, p->blocks,
	       p->versions, p->records, p->segments, p->bytes,
	       p->journal_bytes);
	if (p->clamped_by_mark)
		cli_json_str(stdout, p->mark);
	else
		printf("null");
	printf(",\"marks_dropped\":%" PRIu64 ",\"over_budget\":%s"
	       ",\"budget_forced\":%s,\"blocks_folded\":%" PRIu64
	       ",\"data_bytes\":%" PRIu64 ",\"hole_bytes\":%" PRIu64
	       ",\"versions_dropped\":%" PRIu64 ",\"segments_freed\":%" PRIu64
	       ",\"bytes_freed\":%" PRIu64 ",\"seconds\":%.3f"
	       ",\"fold_seconds\":%.3f,\"sync_seconds\":%.3f"
	       ",\"drop_seconds\":%.3f",
	       dry ? p->marks_dropped : s->marks_dropped,
	       p->over_budget ? "true" : "false",
	       p->budget_forced ? "true" : "false", s->blocks, s->data_bytes,
	       s->hole_bytes, s->versions_dropped, s->segments_freed,
	       s->bytes_freed, (double)s->elapsed_ns / 1e9,
	       (double)s->fold_ns / 1e9, (double)s->sync_ns / 1e9,
	       (double)s->drop_ns / 1e9);
	printf(",\"recompress\":{\"segments\":%" PRIu64 ",\"rewritten\":%"
	       PRIu64 ",\"records\":%" PRIu64 ",\"raw_records\":%" PRIu64
	       ",\"recompressed\":%" PRIu64 ",\"logical_bytes\":%" PRIu64
	       ",\"stored_before\":%" PRIu64 ",\"stored_after\":%" PRIu64
	       ",\"ratio_before\":%.3f,\"ratio_after\":%.3f"
	       ",\"allocated_before\":%" PRIu64 ",\"allocated_after\":%" PRIu64
	       ",\"bytes_freed\":%" PRIu64 ",\"seconds\":%.3f}}\n",
	       s->rz.segments, s->rz.rewritten, s->rz.writes, s->rz.raw,
	       s->rz.recompressed, s->rz.logical, s->rz.stored_before,
	       s->rz.stored_after, rz_ratio(s->rz.logical, s->rz.stored_before),
	       rz_ratio(s->rz.logical, s->rz.stored_after), s->rz.alloc_before,
	       s->rz.alloc_after, rz_freed(&s->rz), (double)s->rz_ns / 1e9);
}

/* One line on recompression, or nothing when no segment was examined. */
static void print_rz(FILE *f, const char *name, const struct rs_compact_stats *s,
		     bool dry)
{
	char a[32], b[32], c[32];

	if (!s->rz.segments)
		return;
	fprintf(f, "disk '%s': recompression %s %" PRIu64 " of %" PRIu64
		" raw records in %" PRIu64 " segments: payload ratio %.2f -> "
		"%.2f, %s freed (%s -> %s allocated), %.2fs\n", name,
		dry ? "would compress" : "compressed", s->rz.recompressed,
		s->rz.raw, s->rz.segments,
		rz_ratio(s->rz.logical, s->rz.stored_before),
		rz_ratio(s->rz.logical, s->rz.stored_after),
		rw_fmt_size(rz_freed(&s->rz), a, sizeof(a)),
		rw_fmt_size(s->rz.alloc_before, b, sizeof(b)),
		rw_fmt_size(s->rz.alloc_after, c, sizeof(c)),
		(double)s->rz_ns / 1e9);
}

static void print_fold(const char *name, const struct rs_compact_stats *s,
		       bool dry)
{
	const struct rs_compact_plan *p = &s->plan;
	char tb[40], a[32], b[32], c[32];

	if (p->clamped_by_mark)
		printf("disk '%s': stopping at mark '%s' (seq %" PRIu64 "); use "
		       "--drop-marks to compact past it\n", name, p->mark,
		       p->horizon_seq);
	if (p->over_budget)
		printf("disk '%s': journal %s is over the budget%s\n", name,
		       rw_fmt_size(p->journal_bytes, a, sizeof(a)),
		       p->budget_forced ? "; compacting past the retention to "
		       "get under it (history shrinks)" : "");
	if (dry) {
		printf("disk '%s': would move the horizon from seq %" PRIu64
		       " to seq %" PRIu64 " (%s): fold %" PRIu64 " blocks (%"
		       PRIu64 " versions), free %" PRIu64 " records in %" PRIu64
		       " segments (%s of %s)%s\n", name, p->old_horizon_seq,
		       p->horizon_seq, cli_fmt_time(p->horizon_ts, tb),
		       p->blocks, p->versions, p->records, p->segments,
		       rw_fmt_size(p->bytes, a, sizeof(a)),
		       rw_fmt_size(p->journal_bytes, b, sizeof(b)),
		       p->marks_dropped ? " (and drop marks)" : "");
		return;
	}
	if (p->noop && !s->segments_freed) {
		printf("disk '%s': nothing to compact (horizon seq %" PRIu64 ")\n",
		       name, p->horizon_seq);
		return;
	}
	printf("disk '%s': horizon seq %" PRIu64 " -> %" PRIu64 " (%s)%s: folded %"
	       PRIu64 " blocks (%s data, %s holes), freed %" PRIu64
	       " segments (%s), %.2fs\n", name, p->old_horizon_seq,
	       p->horizon_seq, cli_fmt_time(p->horizon_ts, tb),
	       p->resume ? " (finished an interrupted run)" : "", s->blocks,
	       rw_fmt_size(s->data_bytes, a, sizeof(a)),
	       rw_fmt_size(s->hole_bytes, b, sizeof(b)), s->segments_freed,
	       rw_fmt_size(s->bytes_freed, c, sizeof(c)),
	       (double)s->elapsed_ns / 1e9);
}

static void print_text(const char *name, const struct rs_compact_stats *s,
		       bool dry, bool rz_only)
{
	if (!rz_only || !s->plan.noop)
		print_fold(name, s, dry);
	print_rz(stdout, name, s, dry);
	if (rz_only && !s->rz.segments)
		printf("disk '%s': no sealed segment left to recompress\n", name);
}

static int cmd_compact(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "retain", required_argument, NULL, 'r' },
		{ "before", required_argument, NULL, 'b' },
		{ "dry-run", no_argument, NULL, 'n' },
		{ "drop-marks", no_argument, NULL, 'm' },
		{ "max-journal", required_argument, NULL, 'M' },
		{ "over-budget", required_argument, NULL, 'O' },
		{ "json", no_argument, NULL, 'j' },
		{ "recompress", no_argument, NULL, 'R' },
		{ "no-recompress", no_argument, NULL, 'N' },
		{ "zstd-level", required_argument, NULL, 'z' },
		{ "background", no_argument, NULL, 'B' },
		{ "help", no_argument, NULL, 'h' },
		{ 0, 0, 0, 0 },
	};
	const char *store = NULL, *retain = NULL, *before = NULL;
	struct rs_compact_opts o = { 0 };
	struct rw_when w;
	bool json = false;
	struct ix *ix = NULL;
	struct ix_disk *all = NULL;
	int c, err, rc = 1, nall = 0;
	bool over = false, owned = false, rz_flag = false, no_rz = false;
	bool bg = false;
	long lvl;
	char *end;

	while ((c = getopt_long(argc, argv, "s:r:b:nmM:O:jRNz:Bh", opts, NULL)) != -1) {
		switch (c) {
		case 's': store = optarg; break;
		case 'r': retain = optarg; break;
		case 'b': before = optarg; break;
		case 'n': o.dry_run = true; break;
		case 'm': o.drop_marks = true; break;
		case 'M':
			if ((err = rw_parse_size(optarg, &o.max_journal)) || !o.max_journal)
				return cli_usage_error("compact", "bad --max-journal '%s'", optarg);
			break;
		case 'O':
			if (!strcmp(optarg, "compact"))
				o.over_budget = RS_OVER_BUDGET_COMPACT;
			else if (!strcmp(optarg, "refuse"))
				o.over_budget = RS_OVER_BUDGET_REFUSE;
			else
				return cli_usage_error("compact", "--over-budget is 'compact' or 'refuse'");
			break;
		case 'j': json = true; break;
		case 'R': rz_flag = true; break;
		case 'N': no_rz = true; break;
		case 'B': bg = true; break;
		case 'z':
			errno = 0;
			lvl = strtol(optarg, &end, 10);
			if (errno || *end || end == optarg || lvl == 0 ||
			    lvl < JR_ZSTD_LEVEL_MIN || lvl > JR_ZSTD_LEVEL_MAX)
				return cli_usage_error("compact", "bad --zstd-level '%s' "
						       "(%d..%d, not 0)", optarg,
						       JR_ZSTD_LEVEL_MIN, JR_ZSTD_LEVEL_MAX);
			o.zstd_level = (int)lvl;
			break;
		case 'h': usage(stdout); return 0;
		default: return cli_usage_error("compact", "unknown option");
		}
	}
	if (rz_flag && no_rz)
		return cli_usage_error("compact", "--recompress and --no-recompress exclude each other");
	o.recompress = !no_rz;
	o.recompress_only = rz_flag && !retain && !before;
	if (o.recompress_only && (o.drop_marks || o.max_journal))
		return cli_usage_error("compact", "--recompress alone moves no horizon: "
				       "--drop-marks and --max-journal need --retain or --before");
	if (!o.recompress_only && !!retain == !!before)
		return cli_usage_error("compact", "give exactly one of --retain DURATION and --before WHEN"
				       " (or --recompress alone)");
	if (retain && (err = rw_parse_duration(retain, &o.retain_ns)))
		return cli_usage_error("compact", "bad --retain '%s': %s", retain, rw_err_msg());
	if (before) {
		if ((err = rw_parse_when(before, rw_clock_ns(), &w)))
			return cli_fail(err, "--before");
		o.before = &w;
	}
	if (!o.dry_run)
		o.background = go_background(bg) || bg;
	store = cli_store_dir(store);
	/* No server: catch the index up first (then let the lock go). */
	err = ix_open(&ix, store, IX_LOCK);
	if (err == 0) {
		int n = ix_catch_up(ix, NULL, NULL);
		ix_close(ix);
		ix = NULL;
		if (n < 0)
			return cli_fail(n, "cannot catch up the index of store '%s'", store);
	} else if (err != RW_EBUSY) {
		return cli_fail(err, "cannot open store '%s'", store);
	} else {
		/*
		 * A server holds the store: its index trails its journal by a
		 * housekeeping interval.  Have it index everything written, so
		 * --before now (or a retention edge) sees every write made
		 * before this command started.
		 */
		rw_err_clear();
		err = cli_control_index(store);
		if (err < 0)
			return cli_fail(err, "cannot bring the index of store '%s' "
					"up to date", store);
	}
	rw_err_clear();
	if ((err = ix_open(&ix, store, 0)))
		return cli_fail(err, "cannot open store '%s'", store);
	const char **names = NULL;
	int nnames = argc - optind;
	if (nnames) {
		names = (const char **)&argv[optind];
	} else {
		nall = ix_disk_list(ix, &all);
		if (nall < 0) {
			rc = cli_fail(nall, "cannot list the disks of store '%s'", store);
			nall = 0;
			goto out;
		}
		names = calloc((size_t)nall + 1, sizeof(*names));
		if (!names) {
			rc = cli_fail(-ENOMEM, "listing disks");
			goto out;
		}
		owned = true;
		for (int i = 0; i < nall; i++)
			names[i] = all[i].name;
		nnames = nall;
	}
	rc = 0;
	for (int i = 0; i < nnames; i++) {
		struct rs_compact_stats s;
		char a[32], b[32];
		err = rs_compact_run(ix, names[i], &o, &s);
		/* results by disk for rewind stats / metrics (every process) */
		if (!o.dry_run && cap_compact_stats_record(store, names[i], !err,
							   rw_clock_ns()))
			rw_log(RW_LOG_WARN, "compact: cannot record the result in "
			       "'%s/compact.stats'", store);
		if (err) {
			rc = cli_fail(err, "cannot compact disk '%s'", names[i]);
			continue;
		}
		if (json)
			print_json(names[i], &s, o.dry_run);
		else
			print_text(names[i], &s, o.dry_run, o.recompress_only);
		if (!o.dry_run && !s.plan.noop)
			rw_log(RW_LOG_INFO, "compact: disk '%s': horizon seq %" PRIu64
			       " -> %" PRIu64 ", folded %" PRIu64 " blocks (%s), "
			       "freed %" PRIu64 " segments (%s) in %.3fs",
			       names[i], s.plan.old_horizon_seq, s.plan.horizon_seq,
			       s.blocks, rw_fmt_size(s.data_bytes + s.hole_bytes, a, sizeof(a)),
			       s.segments_freed, rw_fmt_size(s.bytes_freed, b, sizeof(b)),
			       (double)s.elapsed_ns / 1e9);
		if (!o.dry_run && s.rz.segments) {
			char a3[32];
			rw_log(RW_LOG_INFO, "compact: disk '%s': recompressed %" PRIu64
			       " of %" PRIu64 " raw records in %" PRIu64 " segments "
			       "(%" PRIu64 " rewritten): payload ratio %.2f -> %.2f, "
			       "freed %s (%s -> %s allocated) in %.3fs", names[i],
			       s.rz.recompressed, s.rz.raw, s.rz.segments,
			       s.rz.rewritten, rz_ratio(s.rz.logical, s.rz.stored_before),
			       rz_ratio(s.rz.logical, s.rz.stored_after),
			       rw_fmt_size(rz_freed(&s.rz), a, sizeof(a)),
			       rw_fmt_size(s.rz.alloc_before, b, sizeof(b)),
			       rw_fmt_size(s.rz.alloc_after, a3, sizeof(a3)),
			       (double)s.rz_ns / 1e9);
		}
		if (s.plan.budget_forced)
			rw_log(RW_LOG_WARN, "compact: disk '%s': journal over budget: "
			       "history shortened past the retention to seq %" PRIu64,
			       names[i], s.plan.horizon_seq);
		if (s.plan.over_budget && o.over_budget == RS_OVER_BUDGET_REFUSE) {
			rw_log(RW_LOG_ERROR, "compact: disk '%s': journal %s is over "
			       "the budget %s; history kept (--over-budget refuse)",
			       names[i], rw_fmt_size(s.plan.journal_bytes, a, sizeof(a)),
			       rw_fmt_size(o.max_journal, b, sizeof(b)));
			over = true;
		}
	}
	if (rc == 0 && over)
		rc = 3;
out:
	if (owned)
		free(names);
	free(all);
	ix_close(ix);
	return rc;
}

CLI_COMMAND(compact, "compact", "fold old history into base and reclaim the journal", cmd_compact)
