/*
 * cmd_stats.c — `rewind stats [NAME] [--json]`: the figures of
 * README.md (Metrics) (the same ones GET /metrics exposes), for a person or a
 * script, whether or not a server runs.
 *
 * How: when `rewind serve` runs, ask it over STORE/control.sock
 * ("stats json|text [NAME]\n", cli/control.c): the server collects the
 * figures with its own index handle and live counters and formats them
 * with cli_stats_print() below, so the report carries the live-only
 * figures (capture lag, request counters, flush histogram, health against
 * the server's thresholds).  When nothing answers there, open the store
 * read-only beside whoever else uses it and collect the store figures
 * ourselves; the live-only ones are printed "n/a (no server)" (null in
 * JSON).
 *
 * Rejected: scraping the server's HTTP endpoint (it is optional and may
 * not be configured) and parsing its text back (two formats to keep in
 * step instead of one).
 */
#include "capture/cap.h"
#include "cli/cli.h"
#include "cli/control.h"
#include "common/rw.h"
#include "index/ix.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *health_name(enum cap_health h)
{
	return h == CAP_OK ? "ok" : h == CAP_WARN ? "warning" : "critical";
}

static void json_num(FILE *f, const char *key, double v, bool ok)
{
	if (ok)
		fprintf(f, ",\"%s\":%.9g", key, v);
	else
		fprintf(f, ",\"%s\":null", key);
}

static void json_u64(FILE *f, const char *key, uint64_t v, bool ok)
{
	if (ok)
		fprintf(f, ",\"%s\":%" PRIu64, key, v);
	else
		fprintf(f, ",\"%s\":null", key);
}

static void print_json(FILE *f, const struct cap_store_figures *fig,
		       const char *store)
{
	fprintf(f, "{\"store\":");
	cli_json_str(f, store);
	fprintf(f, ",\"server\":%s,\"now\":%.9f,\"disk_free_bytes\":%" PRIu64
		",\"health\":\"%s\",\"disks\":[", fig->live ? "true" : "false",
		(double)fig->now_ns / 1e9, fig->disk_free_bytes,
		health_name(fig->health));
	for (size_t i = 0; i < fig->ndisks; i++) {
		const struct cap_disk_figures *d = &fig->disks[i];
		bool l = d->live;
		fprintf(f, "%s{\"name\":", i ? "," : "");
		cli_json_str(f, d->name);
		fprintf(f, ",\"live\":%s,\"health\":\"%s\",\"reason\":",
			l ? "true" : "false", health_name(d->health));
		if (d->health != CAP_OK)
			cli_json_str(f, d->reason);
		else
			fprintf(f, "null");
		json_num(f, "capture_lag_seconds", d->capture_lag_s, l);
		json_u64(f, "index_lag_records", d->index_lag_records, true);
		json_num(f, "index_lag_seconds", d->index_lag_s, true);
		json_u64(f, "journal_bytes", d->journal_bytes, true);
		json_u64(f, "journal_records", d->journal_records, true);
		json_u64(f, "journal_segments", d->journal_segments, true);
		json_u64(f, "base_bytes", d->base_bytes, true);
		json_u64(f, "head_bytes", d->head_bytes, true);
		json_num(f, "history_seconds", d->history_s, true);
		json_num(f, "oldest_restorable_timestamp_seconds", d->oldest_ts, true);
		json_num(f, "latest_timestamp_seconds", d->latest_ts, true);
		json_u64(f, "compaction_backlog_bytes", d->compaction_backlog_bytes,
			 d->have_retain);
		json_num(f, "compaction_last_success_timestamp_seconds",
			 d->compaction_last_success_ts, d->compaction_ok > 0);
		fprintf(f, ",\"compaction_runs_total\":{\"ok\":%" PRIu64
			",\"failed\":%" PRIu64 "}", d->compaction_ok,
			d->compaction_failed);
		json_u64(f, "writes_total", d->writes, l);
		json_u64(f, "write_bytes_total", d->write_bytes, l);
		json_u64(f, "flushes_total", d->flushes, l);
		json_u64(f, "flushes_anticipated_total", d->flushes_anticipated, l);
		json_u64(f, "zero_bytes_total", d->zero_bytes, l);
		json_u64(f, "trim_bytes_total", d->trim_bytes, l);
		if (l)
			fprintf(f, ",\"errors_total\":{\"journal\":%" PRIu64
				",\"head\":%" PRIu64 "}", d->errors_journal,
				d->errors_head);
		else
			fprintf(f, ",\"errors_total\":null");
		if (l) {
			uint64_t cum = 0;
			fprintf(f, ",\"flush_duration_seconds\":{\"count\":%" PRIu64
				",\"sum\":%.9g,\"buckets\":{", d->flush_count,
				d->flush_sum_s);
			for (size_t k = 0; k <= CAP_FLUSH_NBUCKETS; k++) {
				cum += d->flush_buckets[k];
				if (k < CAP_FLUSH_NBUCKETS)
					fprintf(f, "%s\"%g\":%" PRIu64, k ? "," : "",
						cap_flush_buckets[k], cum);
				else
					fprintf(f, ",\"+Inf\":%" PRIu64, cum);
			}
			fprintf(f, "}}");
		} else {
			fprintf(f, ",\"flush_duration_seconds\":null");
		}
		json_num(f, "compression_ratio", d->compression_ratio, l);
		json_num(f, "journal_over_budget", (double)d->over_budget, l);
		fprintf(f, "}");
	}
	fprintf(f, "]}\n");
}

static const char *na(bool live, const char *s)
{
	return live ? s : "n/a (no server)";
}

static void print_text(FILE *f, const struct cap_store_figures *fig,
		       const char *store)
{
	char a[32], b[32], c[32], t1[40], t2[40], buf[128];

	fprintf(f, "store '%s': %s; %s free\n", store,
		fig->live ? "server running (live figures)" :
		"no server (live figures n/a)",
		rw_fmt_size(fig->disk_free_bytes, a, sizeof(a)));
	for (size_t i = 0; i < fig->ndisks; i++) {
		const struct cap_disk_figures *d = &fig->disks[i];
		bool l = d->live;
		fprintf(f, "disk '%s': %s%s%s\n", d->name, health_name(d->health),
			d->health != CAP_OK ? ": " : "",
			d->health != CAP_OK ? d->reason : "");
		snprintf(buf, sizeof(buf), "%.3f s", d->capture_lag_s);
		fprintf(f, "  capture lag        %s\n", na(l, buf));
		fprintf(f, "  index lag          %" PRIu64 " records, %.3f s\n",
			d->index_lag_records, d->index_lag_s);
		fprintf(f, "  journal            %s in %" PRIu64 " segments, %"
			PRIu64 " records\n", rw_fmt_size(d->journal_bytes, a, sizeof(a)),
			d->journal_segments, d->journal_records);
		fprintf(f, "  allocated          base %s, head %s\n",
			rw_fmt_size(d->base_bytes, a, sizeof(a)),
			rw_fmt_size(d->head_bytes, b, sizeof(b)));
		fprintf(f, "  history            %.0f s: %s .. %s\n", d->history_s,
			cli_fmt_time((uint64_t)(d->oldest_ts * 1e9), t1),
			cli_fmt_time((uint64_t)(d->latest_ts * 1e9), t2));
		if (d->have_retain)
			fprintf(f, "  compaction backlog %s\n",
				rw_fmt_size(d->compaction_backlog_bytes, a, sizeof(a)));
		else
			fprintf(f, "  compaction backlog n/a (no retention configured)\n");
		fprintf(f, "  compaction runs    %" PRIu64 " ok, %" PRIu64
			" failed; last success %s\n", d->compaction_ok,
			d->compaction_failed, d->compaction_ok ?
			cli_fmt_time((uint64_t)(d->compaction_last_success_ts * 1e9), t1)
			: "never");
		snprintf(buf, sizeof(buf), "%" PRIu64 " (%s), zeroes %s, trims %s",
			 d->writes, rw_fmt_size(d->write_bytes, a, sizeof(a)),
			 rw_fmt_size(d->zero_bytes, b, sizeof(b)),
			 rw_fmt_size(d->trim_bytes, c, sizeof(c)));
		fprintf(f, "  writes             %s\n", na(l, buf));
		snprintf(buf, sizeof(buf), "%" PRIu64 " (mean %.3f ms, %" PRIu64
			 " anticipated)", d->flushes,
			 d->flush_count ? d->flush_sum_s * 1e3 /
			 (double)d->flush_count : 0.0, d->flushes_anticipated);
		fprintf(f, "  flushes            %s\n", na(l, buf));
		snprintf(buf, sizeof(buf), "journal %" PRIu64 ", head %" PRIu64,
			 d->errors_journal, d->errors_head);
		fprintf(f, "  errors             %s\n", na(l, buf));
		snprintf(buf, sizeof(buf), "%.2f", d->compression_ratio);
		fprintf(f, "  compression ratio  %s\n", na(l, buf));
		fprintf(f, "  over budget        %s\n",
			na(l, d->over_budget ? "yes: writes refused (ENOSPC)" : "no"));
	}
}

void cli_stats_print(FILE *f, const struct cap_store_figures *fig,
		     const char *store, bool json)
{
	if (json)
		print_json(f, fig, store);
	else
		print_text(f, fig, store);
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: rewind stats [--store DIR] [NAME] [--json] [--retain DURATION]\n\n"
		"Journal, index, capture and compaction figures of every disk (or NAME),\n"
		"the same as 'rewind serve --metrics' exposes (README.md (Metrics)).  While a\n"
		"server runs they come from it (STORE/control.sock), live counters\n"
		"included; otherwise from the store, and the figures only a server\n"
		"knows read 'n/a (no server)' (null in JSON).\n\n"
		"  --json              one JSON object\n"
		"  --retain DURATION   without a server: the retention to measure the\n"
		"                      compaction backlog against\n");
}

static int cmd_stats(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "retain", required_argument, NULL, 'r' },
		{ "help", no_argument, NULL, 'h' },
		{ 0, 0, 0, 0 },
	};
	const char *store = NULL, *name = NULL;
	struct cap_metrics_cfg cfg = { 0 };
	struct cap_store_figures fig;
	struct ix *ix = NULL;
	bool json = false;
	char *resp = NULL, req[256];
	int c, err;

	optind = 1;
	while ((c = getopt_long(argc, argv, "s:jh", opts, NULL)) != -1) {
		switch (c) {
		case 's': store = optarg; break;
		case 'j': json = true; break;
		case 'r':
			if (rw_parse_duration(optarg, &cfg.retain_ns) || !cfg.retain_ns)
				return cli_usage_error("stats", "invalid --retain '%s'", optarg);
			break;
		case 'h': usage(stdout); return 0;
		default: return cli_usage_error("stats", "unknown option");
		}
	}
	if (optind < argc)
		name = argv[optind++];
	if (optind != argc)
		return cli_usage_error("stats", "unexpected argument '%s'", argv[optind]);
	if (name && !ix_name_valid(name))
		return cli_usage_error("stats", "invalid disk name '%s'", name);
	store = cli_store_dir(store);

	snprintf(req, sizeof(req), "stats %s%s%s\n", json ? "json" : "text",
		 name ? " " : "", name ? name : "");
	rw_err_clear();
	err = cli_control_fetch(store, req, &resp);
	if (!err) {
		if (!strncmp(resp, "ok\n", 3)) {
			fputs(resp + 3, stdout);
			free(resp);
			return 0;
		}
		/* "error CODE MESSAGE" */
		int code = RW_EFAILED;
		char *msg = resp;
		if (!strncmp(resp, "error ", 6)) {
			code = (int)strtol(resp + 6, &msg, 10);
			while (*msg == ' ')
				msg++;
		}
		msg[strcspn(msg, "\n")] = '\0';
		rw_err_set(code, "%s", msg);
		err = cli_fail(code, "stats from the server of store '%s'", store);
		free(resp);
		return err;
	}
	if (err != -ENOENT && err != -ECONNREFUSED)
		rw_log(RW_LOG_WARN, "cannot ask the server of store '%s' (%s); "
		       "reading the store", store, rw_strerror(err));
	rw_err_clear();
	if ((err = ix_open(&ix, store, 0)))
		return cli_fail(err, "cannot open store '%s'", store);
	rw_err_clear();
	err = cap_metrics_collect(ix, NULL, name, &cfg, &fig);
	if (err) {
		ix_close(ix);
		return cli_fail(err, "cannot collect the figures of store '%s'", store);
	}
	cli_stats_print(stdout, &fig, store, json);
	cap_store_figures_free(&fig);
	ix_close(ix);
	return 0;
}

CLI_COMMAND(stats, "stats", "journal, index, capture and compaction figures "
	    "(also served by serve --metrics)", cmd_stats)
