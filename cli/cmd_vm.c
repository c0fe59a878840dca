/*
 * cmd_vm.c — `rewind vm`: protect a libvirt domain's disks, list its
 * restore points, mark it, roll it back (and undo), unprotect it.
 *
 * The library (vm/) parses and rewrites domain XML, keeps the per-domain
 * state and talks to libvirt; this file sequences the steps and decides
 * what to tell the user.  Each subcommand validates everything it can
 * before it changes anything (domain state, disks, store lock, target
 * time, XML version), so a refusal leaves the domain and the store as
 * they were.
 *
 * Rollback of each disk runs `rewind rollback NAME --at @T` as a child
 * process (the per-disk command owns the journaled in-place rewrite); one
 * instant T, resolved once, is used for every disk, so the domain's disks
 * come back consistent on the store's single seq clock.
 */
#include "cli/cli.h"
#include "common/rw.h"
#include "index/ix.h"
#include "restore/rs.h"
#include "vm/vm.h"

#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <limits.h>
#include <spawn.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define MAX_DISKS 64

static void vm_usage(FILE *f)
{
	fprintf(f,
		"usage: rewind vm SUBCOMMAND [OPTIONS] DOMAIN ...\n\n"
		"Protect libvirt domains with rewind.\n\n"
		"  protect DOMAIN [--disk TARGET]... [--live]   put the domain's disks on rewind\n"
		"  unprotect DOMAIN                  write the disks back to their images, restore the XML\n"
		"  points DOMAIN [--json]            restorable range, marks and activity of all its disks\n"
		"  mark DOMAIN LABEL [--json]        mark every protected disk at one instant\n"
		"  rollback DOMAIN --at WHEN | --undo [--force] [--timeout DUR]\n"
		"                                    shut down, roll every disk back, start again\n\n"
		"Common options: --store DIR, --connect URI (libvirt; default: libvirt's\n"
		"default URI), --json.  Every subcommand takes --help.\n");
}

/* Exits-status helper for refusals that have a ready message. */
static int vm_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int vm_fail(const char *fmt, ...)
{
	va_list ap;
	char msg[2048];

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	rw_log(RW_LOG_ERROR, "%s", msg);
	return 1;
}

/* Absolute path of the store's default socket into buf. */
static int store_socket(const char *store, char *buf, size_t n)
{
	char abs[PATH_MAX];

	if (!realpath(store, abs))
		return rw_err_set(-errno, "cannot resolve store '%s': %s", store,
				  strerror(errno));
	if ((size_t)snprintf(buf, n, "%s/rewind.sock", abs) >= n)
		return rw_err_set(-ENAMETOOLONG, "store path too long");
	return 0;
}

static int open_locked(const char *store, struct ix **ix, const char *why)
{
	int err = ix_open(ix, store, IX_LOCK);

	if (err == RW_EBUSY) {
		rw_err_clear();
		return vm_fail("store '%s' is in use (is `rewind serve` running? "
			       "stop it first: %s)", store, why);
	}
	if (err == RW_ENOTFOUND) {
		rw_err_clear();
		return vm_fail("'%s' is not a rewind store (create it with "
			       "`rewind init`)", store);
	}
	if (err)
		return cli_fail(err, "cannot open store '%s'", store);
	if ((err = ix_catch_up(*ix, NULL, NULL)) < 0) {
		ix_close(*ix);
		*ix = NULL;
		return cli_fail(err, "cannot catch up the index of '%s'", store);
	}
	return 0;
}

/* -------------------------------------------------------------- protect */

static void protect_usage(FILE *f)
{
	fprintf(f,
		"usage: rewind vm protect [--store DIR] [--connect URI] [--disk TARGET]...\n"
		"                         [--socket PATH] [--json] DOMAIN\n\n"
		"Imports the disks of the shut-off domain DOMAIN into the store (as\n"
		"disks DOMAIN-TARGET) and redefines the domain so each disk is the\n"
		"rewind NBD export on the store's unix socket.  Raw images are copied;\n"
		"qcow2 images are flattened with `qemu-img convert -O raw` (backing\n"
		"chain included).  The original images are left untouched and the\n"
		"original XML is kept in STORE/vm/DOMAIN/ for `rewind vm unprotect`.\n\n"
		"  --disk TARGET  protect only this disk (repeatable; default: all)\n"
		"  --socket PATH  the socket QEMU connects to (default STORE/rewind.sock)\n"
		"  --live         protect a running domain: create empty disks of the\n"
		"                 same sizes, start `rewind serve` for the store (it\n"
		"                 must keep running), block-copy each disk onto its\n"
		"                 export with synchronous writes, pivot, redefine the\n"
		"                 persistent XML, and fold the initial copy into the\n"
		"                 disks' base (`rewind compact --before`)\n"
		"  --timeout DUR  --live: how long a copy may take to be ready (600s)\n\n"
		"The store must not be served meanwhile; start `rewind serve` before\n"
		"starting the domain (--live starts it).\n");
}

/* Runs this binary (args[0] ignored) quietly or not; exit status or -errno. */
static int run_self(const char *const *args, bool quiet);

/*
 * Starts `rewind serve` for the store, detached (own session, output to
 * STORE/vm/serve.log, pid in STORE/vm/serve.pid), and waits up to 60 s
 * for its socket.  Returns the pid or a negative error.
 */
static pid_t serve_detached(const char *store, const char *sock)
{
	char self[PATH_MAX], logp[PATH_MAX + 32], pidp[PATH_MAX + 32];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	posix_spawn_file_actions_t fa;
	posix_spawnattr_t at;
	pid_t pid;
	int err;

	if (n <= 0)
		return -errno;
	self[n] = '\0';
	snprintf(logp, sizeof(logp), "%s/vm/serve.log", store);
	snprintf(pidp, sizeof(pidp), "%s/vm/serve.pid", store);
	/* --skip-unchanged: the block copy's rewrites of identical data
	 * must not grow the journal. */
	const char *args[] = { self, "serve", "--store", store, "--socket", sock,
			       "--skip-unchanged", NULL };
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	posix_spawn_file_actions_addopen(&fa, 1, logp,
					 O_WRONLY | O_CREAT | O_APPEND, 0644);
	posix_spawn_file_actions_adddup2(&fa, 1, 2);
	posix_spawnattr_init(&at);
	posix_spawnattr_setflags(&at, POSIX_SPAWN_SETSID);
	unlink(sock);
	err = posix_spawn(&pid, self, &fa, &at,
			  (char *const *)(uintptr_t)args, environ);
	posix_spawn_file_actions_destroy(&fa);
	posix_spawnattr_destroy(&at);
	if (err)
		return rw_err_set(-err, "cannot start rewind serve: %s",
				  strerror(err));
	char text[32];
	int len = snprintf(text, sizeof(text), "%d\n", (int)pid);
	vm_file_write(pidp, text, (size_t)len);
	for (int i = 0; i < 3000; i++) {
		struct stat sb;
		if (!stat(sock, &sb) && S_ISSOCK(sb.st_mode))
			return pid;
		if (waitpid(pid, NULL, WNOHANG) == pid)
			return rw_err_set(RW_EFAILED, "rewind serve exited at "
					  "start (see %s)", logp);
		usleep(20000);
	}
	return rw_err_set(-ETIMEDOUT, "rewind serve did not create '%s' within "
			  "60 s (see %s)", sock, logp);
}

/*
 * vm protect --live.  The order keeps every refusal before the first
 * change; after the first pivot a failure is reported with what was done
 * (the domain keeps running either way: on its image or on rewind).
 */
static int protect_live(struct vm_conn *vc, const char *dom, const char *store,
			const char *const *want, int nwant, const char *sock_opt,
			uint64_t timeout_ms, bool json)
{
	struct vm_disks *ds = NULL;
	struct ix *ix = NULL;
	char *xml = NULL, *live = NULL, *pxml = NULL, *dir = NULL;
	struct vm_pdisk pd[MAX_DISKS];
	const char *targets[MAX_DISKS], *names[MAX_DISKS];
	uint64_t sizes[MAX_DISKS];
	int np = 0, pivoted = 0, err, rc = 1;
	char sock[PATH_MAX];
	pid_t spid = 0;

	if ((err = vm_dom_xml(vc, dom, &xml)) ||
	    (err = vm_dom_live_xml(vc, dom, &live)) ||
	    (err = vm_xml_disks(live, &ds))) {
		rc = cli_fail(err, "vm protect --live: domain '%s'", dom);
		goto out;
	}
	for (int i = 0; i < (nwant ? nwant : ds->n); i++) {
		const struct vm_disk *d = NULL;
		if (nwant) {
			for (int j = 0; j < ds->n; j++)
				if (!strcmp(ds->v[j].target, want[i]))
					d = &ds->v[j];
			if (!d) {
				rc = vm_fail("domain '%s' has no disk '%s'", dom, want[i]);
				goto out;
			}
		} else {
			d = &ds->v[i];
		}
		for (int j = 0; j < np; j++)
			if (!strcmp(pd[j].target, d->target)) {
				rc = vm_fail("disk '%s' given twice", d->target);
				goto out;
			}
		if ((err = vm_disk_check(d))) {
			rc = cli_fail(err, "cannot protect domain '%s'%s", dom,
				      nwant ? "" : " (choose disks with --disk)");
			goto out;
		}
		if (strlen(d->source) >= sizeof(pd[np].path)) {
			rc = vm_fail("disk '%s': path too long", d->target);
			goto out;
		}
		memset(&pd[np], 0, sizeof(pd[np]));
		snprintf(pd[np].target, sizeof(pd[np].target), "%s", d->target);
		snprintf(pd[np].format, sizeof(pd[np].format), "%s",
			 d->format[0] ? d->format : "raw");
		snprintf(pd[np].path, sizeof(pd[np].path), "%s", d->source);
		if ((err = vm_disk_name(dom, d->target, pd[np].disk,
					sizeof(pd[np].disk))) ||
		    (err = vm_dom_disk_size(vc, dom, d->target, &sizes[np]))) {
			rc = cli_fail(err, "cannot protect domain '%s'", dom);
			goto out;
		}
		targets[np] = pd[np].target;
		names[np] = pd[np].disk;
		np++;
	}
	if (!np) {
		rc = vm_fail("domain '%s' has no disk to protect", dom);
		goto out;
	}
	if (sock_opt)
		snprintf(sock, sizeof(sock), "%s", sock_opt);
	else if ((err = store_socket(store, sock, sizeof(sock)))) {
		rc = cli_fail(err, "vm protect");
		goto out;
	}
	/* the persistent definition, built from the inactive XML */
	if ((err = vm_xml_protect(xml, targets, names, np, sock, &pxml))) {
		rc = cli_fail(err, "vm protect --live: cannot build the protected "
			      "XML (is every disk in the persistent definition?)");
		goto out;
	}
	if (open_locked(store, &ix, "--live starts its own server for the "
			"new disks; a running server cannot add disks yet"))
		goto out;
	for (int i = 0; i < np; i++) {
		struct ix_disk d;
		if (!ix_disk_get(ix, pd[i].disk, &d)) {
			rc = vm_fail("store '%s' already has a disk '%s': nothing "
				     "was changed", store, pd[i].disk);
			goto out;
		}
		rw_err_clear();
	}
	uint64_t t_protect = rw_clock_ns();
	if (!(dir = vm_state_dir(store, dom))) {
		rc = cli_fail(-ENOMEM, "vm protect");
		goto out;
	}
	for (int i = 0; i < np; i++) {
		struct ix_disk d;
		if ((err = ix_disk_create(ix, pd[i].disk, sizes[i],
					  IX_BLOCK_SIZE_DEFAULT, NULL, &d))) {
			rc = cli_fail(err, "cannot create disk '%s'", pd[i].disk);
			goto out;
		}
	}
	if ((err = vm_state_create(store, dom, xml, pd, np)) ||
	    (err = vm_state_xml_put(dir, t_protect, pxml))) {
		rc = cli_fail(err, "vm protect: cannot record the domain's state");
		goto out;
	}
	ix_close(ix);
	ix = NULL;
	if ((spid = serve_detached(store, sock)) < 0) {
		rc = cli_fail((int)spid, "vm protect --live");
		goto out;
	}
	for (int i = 0; i < np; i++) {
		char *dest = NULL;
		if (asprintf(&dest, "<disk type='network' device='disk'>"
			     "<driver name='qemu' type='raw'/>"
			     "<source protocol='nbd' name='%s'>"
			     "<host transport='unix' socket='%s'/></source>"
			     "</disk>", pd[i].disk, sock) < 0) {
			rc = cli_fail(-ENOMEM, "vm protect");
			goto out;
		}
		err = vm_dom_block_copy_pivot(vc, dom, pd[i].target, dest,
					      timeout_ms);
		free(dest);
		if (err) {
			rc = cli_fail(err, "vm protect --live: %d of %d disks run "
				      "on rewind", pivoted, np);
			goto out;
		}
		pivoted++;
	}
	if ((err = vm_dom_define(vc, pxml))) {
		rc = cli_fail(err, "vm protect --live: the domain runs on rewind "
			      "but its persistent XML could not be redefined");
		goto out;
	}
	/* the initial copy is not history: fold it into the disks' base */
	char before[48];
	uint64_t now = rw_clock_ns();
	snprintf(before, sizeof(before), "@%" PRIu64 ".%09" PRIu64,
		 now / UINT64_C(1000000000), now % UINT64_C(1000000000));
	for (int i = 0; i < np; i++) {
		const char *args[] = { "rewind", "compact", "--store", store,
				       pd[i].disk, "--before", before, NULL };
		if (run_self(args, true))
			rw_log(RW_LOG_WARN, "could not fold the initial copy of "
			       "'%s' into its base (run `rewind compact %s "
			       "--before %s`)", pd[i].disk, pd[i].disk, before);
	}
	if (json) {
		printf("{\"domain\":");
		cli_json_str(stdout, dom);
		printf(",\"live\":true,\"server_pid\":%d,\"socket\":", (int)spid);
		cli_json_str(stdout, sock);
		printf(",\"disks\":[");
		for (int i = 0; i < np; i++) {
			printf("%s{\"target\":", i ? "," : "");
			cli_json_str(stdout, pd[i].target);
			printf(",\"disk\":");
			cli_json_str(stdout, pd[i].disk);
			printf(",\"original\":");
			cli_json_str(stdout, pd[i].path);
			printf(",\"size\":%" PRIu64 "}", sizes[i]);
		}
		printf("]}\n");
	} else {
		char sz[32];
		for (int i = 0; i < np; i++)
			printf("disk %s: '%s' (%s) copied live -> store disk '%s'\n",
			       pd[i].target, pd[i].path,
			       rw_fmt_size(sizes[i], sz, sizeof(sz)), pd[i].disk);
		printf("protected running domain '%s': it now runs on rewind.\n"
		       "Started `rewind serve` (pid %d, log %s/vm/serve.log): "
		       "keep it running while the domain runs.\n", dom,
		       (int)spid, store);
	}
	rc = 0;
out:
	ix_close(ix);
	free(dir);
	free(pxml);
	free(live);
	free(xml);
	vm_disks_free(ds);
	return rc;
}

static int cmd_protect(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "connect", required_argument, NULL, 'c' },
		{ "disk", required_argument, NULL, 'd' },
		{ "socket", required_argument, NULL, 'S' },
		{ "live", no_argument, NULL, 'l' },
		{ "timeout", required_argument, NULL, 't' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0, 0, 0, 0 },
	};
	const char *store = NULL, *uri = NULL, *sock_opt = NULL;
	uint64_t timeout_ns = 600ull * 1000000000ull;
	const char *want[MAX_DISKS];
	int nwant = 0, c, err, rc = 1;
	bool live = false, json = false;

	while ((c = getopt_long(argc, argv, "s:c:d:S:lt:jh", opts, NULL)) != -1) {
		switch (c) {
		case 's': store = optarg; break;
		case 'c': uri = optarg; break;
		case 'd':
			if (nwant == MAX_DISKS)
				return cli_usage_error("vm protect", "too many --disk");
			want[nwant++] = optarg;
			break;
		case 'S': sock_opt = optarg; break;
		case 'l': live = true; break;
		case 't':
			if (rw_parse_duration(optarg, &timeout_ns))
				return cli_usage_error("vm protect", "%s", rw_err_msg());
			break;
		case 'j': json = true; break;
		case 'h': protect_usage(stdout); return 0;
		default: return cli_usage_error("vm protect", "unknown option");
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("vm protect", "expected one DOMAIN");
	const char *dom = argv[optind];
	if (!vm_domain_name_valid(dom))
		return cli_usage_error("vm protect", "invalid domain name '%s'", dom);
	store = cli_store_dir(store);

	struct vm_conn *vc = NULL;
	struct vm_disks *ds = NULL;
	struct ix *ix = NULL;
	char *xml = NULL, *pxml = NULL, *dir = NULL;
	struct vm_pdisk pd[MAX_DISKS];
	const char *targets[MAX_DISKS], *names[MAX_DISKS];
	uint64_t sizes[MAX_DISKS];
	int np = 0, imported = 0;
	char sock[PATH_MAX], tmp[PATH_MAX + 64];

	if (!(dir = vm_state_dir(store, dom)))
		return cli_fail(-ENOMEM, "vm protect");
	snprintf(tmp, sizeof(tmp), "%s/disks", dir);
	if (!access(tmp, F_OK)) {
		rc = vm_fail("domain '%s' is already protected in store '%s' (see "
			     "`rewind vm points %s`)", dom, store, dom);
		goto out;
	}
	if ((err = vm_conn_open(&vc, uri))) {
		rc = cli_fail(err, "vm protect");
		goto out;
	}
	enum vm_dom_state st;
	char sdesc[64];
	if ((err = vm_dom_state(vc, dom, &st, sdesc, sizeof(sdesc)))) {
		rc = cli_fail(err, "vm protect");
		goto out;
	}
	if (live) {
		if (st != VM_DOM_RUNNING) {
			rc = vm_fail("domain '%s' is %s: --live protects running "
				     "domains (protect it without --live)", dom,
				     sdesc);
			goto out;
		}
		rc = protect_live(vc, dom, store, want, nwant, sock_opt,
				  timeout_ns / 1000000, json);
		goto out;
	}
	if (st != VM_DOM_OFF) {
		rc = vm_fail("domain '%s' is %s: vm protect works on shut-off "
			     "domains (shut it down first, or use --live)", dom,
			     sdesc);
		goto out;
	}
	if ((err = vm_dom_xml(vc, dom, &xml)) || (err = vm_xml_disks(xml, &ds))) {
		rc = cli_fail(err, "vm protect: domain '%s'", dom);
		goto out;
	}
	/* choose and check every disk before touching anything */
	for (int i = 0; i < (nwant ? nwant : ds->n); i++) {
		const struct vm_disk *d = NULL;
		if (nwant) {
			for (int j = 0; j < ds->n; j++)
				if (!strcmp(ds->v[j].target, want[i]))
					d = &ds->v[j];
			if (!d) {
				rc = vm_fail("domain '%s' has no disk '%s'", dom, want[i]);
				goto out;
			}
		} else {
			d = &ds->v[i];
		}
		for (int j = 0; j < np; j++)
			if (!strcmp(pd[j].target, d->target)) {
				rc = vm_fail("disk '%s' given twice", d->target);
				goto out;
			}
		if ((err = vm_disk_check(d))) {
			rc = cli_fail(err, "cannot protect domain '%s'%s", dom,
				      nwant ? "" : " (choose disks with --disk)");
			goto out;
		}
		struct stat sb;
		if (stat(d->source, &sb)) {
			rc = vm_fail("cannot protect domain '%s': disk '%s': cannot "
				     "read image '%s': %s", dom, d->target,
				     d->source, strerror(errno));
			goto out;
		}
		if (!S_ISREG(sb.st_mode)) {
			rc = vm_fail("cannot protect domain '%s': disk '%s': '%s' is "
				     "not a regular file", dom, d->target, d->source);
			goto out;
		}
		memset(&pd[np], 0, sizeof(pd[np]));
		snprintf(pd[np].target, sizeof(pd[np].target), "%s", d->target);
		snprintf(pd[np].format, sizeof(pd[np].format), "%s",
			 d->format[0] ? d->format : "raw");
		if (strlen(d->source) >= sizeof(pd[np].path)) {
			rc = vm_fail("disk '%s': path too long", d->target);
			goto out;
		}
		snprintf(pd[np].path, sizeof(pd[np].path), "%s", d->source);
		if ((err = vm_disk_name(dom, d->target, pd[np].disk,
					sizeof(pd[np].disk)))) {
			rc = cli_fail(err, "cannot protect domain '%s'", dom);
			goto out;
		}
		targets[np] = pd[np].target;
		names[np] = pd[np].disk;
		np++;
	}
	if (!np) {
		rc = vm_fail("domain '%s' has no disk to protect", dom);
		goto out;
	}
	if (open_locked(store, &ix, "vm protect imports the disks"))
		goto out;
	for (int i = 0; i < np; i++) {
		struct ix_disk d;
		err = ix_disk_get(ix, pd[i].disk, &d);
		if (!err) {
			rc = vm_fail("store '%s' already has a disk '%s' (from an "
				     "earlier protection?): nothing was changed",
				     store, pd[i].disk);
			goto out;
		}
		rw_err_clear();
	}
	if (sock_opt)
		snprintf(sock, sizeof(sock), "%s", sock_opt);
	else if ((err = store_socket(store, sock, sizeof(sock)))) {
		rc = cli_fail(err, "vm protect");
		goto out;
	}
	/* the new XML is built (and so validated) before the first import */
	if ((err = vm_xml_protect(xml, targets, names, np, sock, &pxml))) {
		rc = cli_fail(err, "vm protect: cannot build the protected XML");
		goto out;
	}
	/*
	 * The protected XML is in force from before the disks exist, so every
	 * restorable point (the oldest is a disk's creation) has a version.
	 */
	uint64_t t_protect = rw_clock_ns();
	snprintf(tmp, sizeof(tmp), "%s/vm", store);
	if (mkdir(tmp, 0755) && errno != EEXIST) {
		rc = cli_fail(-errno, "cannot create '%s'", tmp);
		goto out;
	}
	for (int i = 0; i < np; i++) {
		const char *src = pd[i].path;
		struct ix_disk d;
		if (strcmp(pd[i].format, "raw")) {
			snprintf(tmp, sizeof(tmp), "%s/vm/.import-%s.raw", store,
				 pd[i].disk);
			if ((err = vm_image_to_raw(pd[i].path, pd[i].format, tmp))) {
				unlink(tmp);
				rc = cli_fail(err, "vm protect: disk '%s'", pd[i].target);
				goto undo_imports;
			}
			src = tmp;
		}
		struct stat sb;
		if (stat(src, &sb)) {
			rc = cli_fail(-errno, "cannot read '%s'", src);
			goto undo_imports;
		}
		err = ix_disk_create(ix, pd[i].disk, (uint64_t)sb.st_size,
				     IX_BLOCK_SIZE_DEFAULT, src, &d);
		if (src == tmp)
			unlink(tmp);
		if (err) {
			rc = cli_fail(err, "cannot import '%s' as disk '%s'",
				      pd[i].path, pd[i].disk);
			goto undo_imports;
		}
		sizes[i] = d.size;
		imported++;
	}
	if ((err = vm_state_create(store, dom, xml, pd, np)) ||
	    (err = vm_state_xml_put(dir, t_protect, pxml))) {
		rc = cli_fail(err, "vm protect: cannot record the domain's state");
		goto undo_state;
	}
	if ((err = vm_dom_define(vc, pxml))) {
		rc = cli_fail(err, "vm protect: domain '%s'", dom);
		goto undo_state;
	}
	char sz[32];
	if (json) {
		printf("{\"domain\":");
		cli_json_str(stdout, dom);
		printf(",\"socket\":");
		cli_json_str(stdout, sock);
		printf(",\"disks\":[");
		for (int i = 0; i < np; i++) {
			printf("%s{\"target\":", i ? "," : "");
			cli_json_str(stdout, pd[i].target);
			printf(",\"disk\":");
			cli_json_str(stdout, pd[i].disk);
			printf(",\"format\":");
			cli_json_str(stdout, pd[i].format);
			printf(",\"original\":");
			cli_json_str(stdout, pd[i].path);
			printf(",\"size\":%" PRIu64 "}", sizes[i]);
		}
		printf("]}\n");
	} else {
		for (int i = 0; i < np; i++)
			printf("disk %s: '%s' (%s, %s) -> store disk '%s'\n",
			       pd[i].target, pd[i].path, pd[i].format,
			       rw_fmt_size(sizes[i], sz, sizeof(sz)), pd[i].disk);
		printf("protected domain '%s': its disks are now NBD exports on "
		       "'%s'.\nStart `rewind serve --store %s` before starting "
		       "the domain.\n", dom, sock, store);
	}
	rc = 0;
	goto out;
undo_state:
	rw_err_clear();
	vm_state_retire(store, dom, rw_clock_ns());
undo_imports:
	if (imported)
		rw_log(RW_LOG_ERROR, "the domain was not changed; %d disk(s) "
		       "already imported stay in the store (%s ...)", imported,
		       pd[0].disk);
out:
	ix_close(ix);
	free(dir);
	free(pxml);
	free(xml);
	vm_disks_free(ds);
	vm_conn_close(vc);
	return rc;
}

/* ------------------------------------------------------------ unprotect */

static void unprotect_usage(FILE *f)
{
	fprintf(f,
		"usage: rewind vm unprotect [--store DIR] [--connect URI] [--json] DOMAIN\n\n"
		"Writes each protected disk's current contents (as-of now, exactly\n"
		"`rewind restore --at now`) back into its original image (raw: the\n"
		"file is replaced atomically, mode and owner kept; qcow2: written\n"
		"into the existing image with `qemu-img convert -n`), puts the\n"
		"original <disk> elements back into the domain's current XML, and\n"
		"moves STORE/vm/DOMAIN aside.  The store keeps the disks and their\n"
		"history.  The domain must be shut off and the store not served.\n");
}

static int write_back(struct ix *ix, const struct vm_state *vs,
		      const struct vm_pdisk *p)
{
	struct ix_disk d;
	struct rw_when w;
	uint64_t seq, ts;
	struct stat sb;
	char tmp[PATH_MAX + 64];
	int err;

	if ((err = ix_disk_get(ix, p->disk, &d)))
		return err;
	if ((err = rw_parse_when("now", rw_clock_ns(), &w)) ||
	    (err = rs_resolve(ix, &d, &w, &seq, &ts)))
		return err;
	bool have = !stat(p->path, &sb);
	if (!strcmp(p->format, "raw")) {
		err = rs_restore_file(ix, &d, seq, p->path,
				      RS_ALLOW_BACKWARD | RS_OVERWRITE, NULL,
				      NULL, NULL);
		if (!err && have) {
			if (chmod(p->path, sb.st_mode & 07777) ||
			    chown(p->path, sb.st_uid, sb.st_gid))
				err = rw_err_set(-errno, "cannot restore mode/owner "
						 "of '%s': %s", p->path,
						 strerror(errno));
		}
		return err;
	}
	snprintf(tmp, sizeof(tmp), "%s/%s.raw", vs->dir, p->disk);
	err = rs_restore_file(ix, &d, seq, tmp, RS_ALLOW_BACKWARD | RS_OVERWRITE,
			      NULL, NULL, NULL);
	if (!err)
		err = vm_image_from_raw(tmp, p->path, p->format);
	unlink(tmp);
	return err;
}

static int cmd_unprotect(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "connect", required_argument, NULL, 'c' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0, 0, 0, 0 },
	};
	const char *store = NULL, *uri = NULL;
	bool json = false;
	int c, err, rc = 1;

	while ((c = getopt_long(argc, argv, "s:c:jh", opts, NULL)) != -1) {
		switch (c) {
		case 's': store = optarg; break;
		case 'c': uri = optarg; break;
		case 'j': json = true; break;
		case 'h': unprotect_usage(stdout); return 0;
		default: return cli_usage_error("vm unprotect", "unknown option");
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("vm unprotect", "expected one DOMAIN");
	const char *dom = argv[optind];
	if (!vm_domain_name_valid(dom))
		return cli_usage_error("vm unprotect", "invalid domain name '%s'", dom);
	store = cli_store_dir(store);

	struct vm_conn *vc = NULL;
	struct vm_state *vs = NULL;
	struct ix *ix = NULL;
	char *cur = NULL, *orig = NULL, *nxml = NULL;
	const char *targets[MAX_DISKS];
	char p[PATH_MAX + 64];

	if ((err = vm_state_load(store, dom, &vs)))
		return cli_fail(err, "vm unprotect");
	if ((err = vm_conn_open(&vc, uri))) {
		rc = cli_fail(err, "vm unprotect");
		goto out;
	}
	enum vm_dom_state st;
	char sdesc[64];
	if ((err = vm_dom_state(vc, dom, &st, sdesc, sizeof(sdesc)))) {
		rc = cli_fail(err, "vm unprotect");
		goto out;
	}
	if (st != VM_DOM_OFF) {
		rc = vm_fail("domain '%s' is %s: shut it down before vm unprotect",
			     dom, sdesc);
		goto out;
	}
	snprintf(p, sizeof(p), "%s/original.xml", vs->dir);
	if ((err = vm_file_read(p, &orig)) || (err = vm_dom_xml(vc, dom, &cur))) {
		rc = cli_fail(err, "vm unprotect");
		goto out;
	}
	for (int i = 0; i < vs->ndisks && i < MAX_DISKS; i++)
		targets[i] = vs->disks[i].target;
	if ((err = vm_xml_restore_disks(cur, orig, targets, vs->ndisks, &nxml))) {
		rc = cli_fail(err, "vm unprotect: cannot rebuild the XML");
		goto out;
	}
	if (open_locked(store, &ix, "vm unprotect reads the disks' final state"))
		goto out;
	for (int i = 0; i < vs->ndisks; i++) {
		if ((err = write_back(ix, vs, &vs->disks[i]))) {
			rc = cli_fail(err, "vm unprotect: cannot write disk '%s' back "
				      "to '%s' (the domain still runs on rewind)",
				      vs->disks[i].disk, vs->disks[i].path);
			goto out;
		}
	}
	if ((err = vm_dom_define(vc, nxml))) {
		rc = cli_fail(err, "vm unprotect: domain '%s'", dom);
		goto out;
	}
	if ((err = vm_state_retire(store, dom, rw_clock_ns())))
		rw_log(RW_LOG_WARN, "%s", rw_err_msg());
	if (json) {
		printf("{\"domain\":");
		cli_json_str(stdout, dom);
		printf(",\"disks\":[");
		for (int i = 0; i < vs->ndisks; i++) {
			printf("%s{\"target\":", i ? "," : "");
			cli_json_str(stdout, vs->disks[i].target);
			printf(",\"disk\":");
			cli_json_str(stdout, vs->disks[i].disk);
			printf(",\"image\":");
			cli_json_str(stdout, vs->disks[i].path);
			printf("}");
		}
		printf("]}\n");
	} else {
		for (int i = 0; i < vs->ndisks; i++)
			printf("disk %s: store disk '%s' written back to '%s'\n",
			       vs->disks[i].target, vs->disks[i].disk,
			       vs->disks[i].path);
		printf("unprotected domain '%s' (its original disk definitions "
		       "are back)\n", dom);
	}
	rc = 0;
out:
	ix_close(ix);
	free(nxml);
	free(orig);
	free(cur);
	vm_state_free(vs);
	vm_conn_close(vc);
	return rc;
}

/* --------------------------------------------------------------- points */

static void points_usage(FILE *f)
{
	fprintf(f,
		"usage: rewind vm points [--store DIR] [--json] DOMAIN\n\n"
		"The restorable range of the domain (every disk restorable: from the\n"
		"newest disk horizon to now), its marks (a label on several disks is\n"
		"one point), per-disk activity (records, bytes, last write), the\n"
		"recorded XML versions and the undo point.  Works while `rewind\n"
		"serve` runs.\n");
}

/* A domain mark: a label, its time, and on how many disks it is. */
struct dom_mark {
	const struct ix_mark *m;
	int ndisks;
};

struct disk_info {
	struct ix_disk d;
	struct rs_range r;
	struct ix_mark *marks;
	int nmarks;
	uint64_t records, bytes, last_ts;
};

static int cmd_points(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0, 0, 0, 0 },
	};
	const char *store = NULL;
	bool json = false, locked;
	int c, err, rc = 1;

	while ((c = getopt_long(argc, argv, "s:jh", opts, NULL)) != -1) {
		switch (c) {
		case 's': store = optarg; break;
		case 'j': json = true; break;
		case 'h': points_usage(stdout); return 0;
		default: return cli_usage_error("vm points", "unknown option");
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("vm points", "expected one DOMAIN");
	const char *dom = argv[optind];
	if (!vm_domain_name_valid(dom))
		return cli_usage_error("vm points", "invalid domain name '%s'", dom);
	store = cli_store_dir(store);

	struct vm_state *vs = NULL;
	struct ix *ix = NULL;
	struct ix_read *rd = NULL;
	struct disk_info *di = NULL;
	struct dom_mark *dm = NULL;
	int ndm = 0;
	uint64_t undo = 0;
	bool have_undo;

	if ((err = vm_state_load(store, dom, &vs)))
		return cli_fail(err, "vm points");
	if ((err = cli_open_store_for_read(store, &ix, &locked))) {
		rc = cli_fail(err, "cannot open store '%s'", store);
		goto out;
	}
	if (!(di = calloc((size_t)vs->ndisks, sizeof(*di)))) {
		rc = cli_fail(-ENOMEM, "vm points");
		goto out;
	}
	uint64_t oldest = 0, latest = 0, latest_seq = 0;
	for (int i = 0; i < vs->ndisks; i++) {
		struct disk_info *x = &di[i];
		struct ix_segment *segs = NULL;
		if ((err = ix_disk_get(ix, vs->disks[i].disk, &x->d)) ||
		    (err = rs_range_get(ix, &x->d, &x->r)) ||
		    (err = ix_read_begin(ix, &rd))) {
			rc = cli_fail(err, "disk '%s'", vs->disks[i].disk);
			goto out;
		}
		x->nmarks = ix_mark_list(rd, x->d.id, &x->marks);
		int ns = ix_segment_list(rd, x->d.id, &segs);
		ix_read_end(rd);
		rd = NULL;
		if (x->nmarks < 0 || ns < 0) {
			free(segs);
			rc = cli_fail(x->nmarks < 0 ? x->nmarks : ns,
				      "disk '%s'", vs->disks[i].disk);
			if (x->nmarks < 0)
				x->nmarks = 0;
			goto out;
		}
		for (int s = 0; s < ns; s++) {
			if (segs[s].last_seq < x->r.oldest_seq)
				continue;
			x->records += segs[s].records;
			x->bytes += segs[s].bytes;
			if (segs[s].records && segs[s].last_ts > x->last_ts)
				x->last_ts = segs[s].last_ts;
		}
		free(segs);
		if (x->r.oldest_ts > oldest)
			oldest = x->r.oldest_ts;
		if (x->r.latest_ts > latest) {
			latest = x->r.latest_ts;
			latest_seq = x->r.latest_seq;
		}
	}
	have_undo = !vm_state_undo_get(vs->dir, &undo);
	rw_err_clear();
	/* the domain's marks: distinct labels, first disk's time, in order */
	int total = 0;
	for (int i = 0; i < vs->ndisks; i++)
		total += di[i].nmarks;
	if (!(dm = calloc((size_t)total + 1, sizeof(*dm)))) {
		rc = cli_fail(-ENOMEM, "vm points");
		goto out;
	}
	for (int i = 0; i < vs->ndisks; i++)
		for (int m = 0; m < di[i].nmarks; m++) {
			int j;
			for (j = 0; j < ndm; j++)
				if (!strcmp(dm[j].m->label, di[i].marks[m].label))
					break;
			if (j == ndm)
				dm[ndm++].m = &di[i].marks[m];
			dm[j].ndisks++;
		}
	for (int i = 1; i < ndm; i++)      /* by time; few marks */
		for (int j = i; j > 0 && dm[j - 1].m->ts_ns > dm[j].m->ts_ns; j--) {
			struct dom_mark t = dm[j];
			dm[j] = dm[j - 1];
			dm[j - 1] = t;
		}

	char tb[40], tb2[40], sz[32];
	if (json) {
		printf("{\"domain\":");
		cli_json_str(stdout, dom);
		printf(",\"oldest_ns\":%" PRIu64 ",\"oldest\":\"%s\",\"latest_ns\":%"
		       PRIu64 ",\"latest\":\"%s\",\"latest_seq\":%" PRIu64,
		       oldest, cli_fmt_time(oldest, tb), latest,
		       cli_fmt_time(latest, tb2), latest_seq);
		printf(",\"undo_ns\":");
		if (have_undo)
			printf("%" PRIu64, undo);
		else
			printf("null");
		printf(",\"disks\":[");
		for (int i = 0; i < vs->ndisks; i++) {
			struct disk_info *x = &di[i];
			printf("%s{\"target\":", i ? "," : "");
			cli_json_str(stdout, vs->disks[i].target);
			printf(",\"disk\":");
			cli_json_str(stdout, x->d.name);
			printf(",\"size\":%" PRIu64 ",\"oldest_seq\":%" PRIu64
			       ",\"oldest_ns\":%" PRIu64 ",\"records\":%" PRIu64
			       ",\"bytes\":%" PRIu64 ",\"last_write_ns\":%" PRIu64,
			       x->d.size, x->r.oldest_seq, x->r.oldest_ts,
			       x->records, x->bytes, x->last_ts);
			printf(",\"marks\":[");
			for (int m = 0; m < x->nmarks; m++) {
				printf("%s{\"label\":", m ? "," : "");
				cli_json_str(stdout, x->marks[m].label);
				printf(",\"seq\":%" PRIu64 ",\"ts_ns\":%" PRIu64
				       ",\"time\":\"%s\"}", x->marks[m].seq,
				       x->marks[m].ts_ns,
				       cli_fmt_time(x->marks[m].ts_ns, tb));
			}
			printf("]}");
		}
		printf("],\"marks\":[");
		for (int i = 0; i < ndm; i++) {
			printf("%s{\"label\":", i ? "," : "");
			cli_json_str(stdout, dm[i].m->label);
			printf(",\"ts_ns\":%" PRIu64 ",\"time\":\"%s\","
			       "\"disks\":%d,\"all_disks\":%s}", dm[i].m->ts_ns,
			       cli_fmt_time(dm[i].m->ts_ns, tb), dm[i].ndisks,
			       dm[i].ndisks == vs->ndisks ? "true" : "false");
		}
		printf("]}\n");
	} else {
		printf("domain '%s': restorable from %s to now (latest write %s, "
		       "seq %" PRIu64 ")\n", dom, cli_fmt_time(oldest, tb),
		       cli_fmt_time(latest, tb2), latest_seq);
		printf("%-8s %-24s %-10s %-10s %-10s %s\n", "TARGET", "DISK", "SIZE",
		       "RECORDS", "BYTES", "LAST WRITE");
		for (int i = 0; i < vs->ndisks; i++) {
			char bb[32];
			printf("%-8s %-24s %-10s %-10" PRIu64 " %-10s %s\n",
			       vs->disks[i].target, di[i].d.name,
			       rw_fmt_size(di[i].d.size, sz, sizeof(sz)),
			       di[i].records, rw_fmt_size(di[i].bytes, bb, sizeof(bb)),
			       di[i].last_ts ? cli_fmt_time(di[i].last_ts, tb) : "-");
		}
		printf("marks:\n");
		for (int i = 0; i < ndm; i++)
			printf("  %-28s %s%s\n", cli_fmt_time(dm[i].m->ts_ns, tb),
			       dm[i].m->label, dm[i].ndisks == vs->ndisks ? "" :
			       "  (not on every disk)");
		if (!ndm)
			printf("  (none)\n");
		if (have_undo)
			printf("undo point (before the last rollback): %s\n",
			       cli_fmt_time(undo, tb));
	}
	rc = 0;
out:
	free(dm);
	if (di)
		for (int i = 0; i < vs->ndisks; i++)
			free(di[i].marks);
	free(di);
	ix_read_end(rd);
	ix_close(ix);
	vm_state_free(vs);
	return rc;
}

/* ----------------------------------------------------------------- mark */

static void mark_usage(FILE *f)
{
	fprintf(f,
		"usage: rewind vm mark [--store DIR] [--json] DOMAIN LABEL\n\n"
		"Marks every protected disk of DOMAIN with LABEL at one instant (now,\n"
		"resolved once), so `rewind vm rollback DOMAIN --at mark:LABEL` brings\n"
		"all disks back to the same moment.  Works while `rewind serve` runs.\n");
}

static int cmd_vmmark(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0, 0, 0, 0 },
	};
	const char *store = NULL;
	bool json = false;
	int c, err, rc = 1;

	while ((c = getopt_long(argc, argv, "s:jh", opts, NULL)) != -1) {
		switch (c) {
		case 's': store = optarg; break;
		case 'j': json = true; break;
		case 'h': mark_usage(stdout); return 0;
		default: return cli_usage_error("vm mark", "unknown option");
		}
	}
	if (optind + 2 != argc)
		return cli_usage_error("vm mark", "expected DOMAIN and LABEL");
	const char *dom = argv[optind], *label = argv[optind + 1];
	if (!vm_domain_name_valid(dom))
		return cli_usage_error("vm mark", "invalid domain name '%s'", dom);
	if (!*label || strlen(label) > IX_LABEL_MAX || strchr(label, '/'))
		return cli_usage_error("vm mark", "invalid label '%s' (1..%d "
				       "printable characters, no '/')", label,
				       IX_LABEL_MAX);
	for (const char *p = label; *p; p++)
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			return cli_usage_error("vm mark", "invalid label: control "
					       "characters are not allowed");
	store = cli_store_dir(store);

	struct vm_state *vs = NULL;
	struct ix *ix = NULL;
	struct ix_mark *ms = NULL;
	struct ix_disk dd[MAX_DISKS];

	if ((err = vm_state_load(store, dom, &vs)))
		return cli_fail(err, "vm mark");
	if ((err = ix_open(&ix, store, 0))) {
		rc = cli_fail(err, "cannot open store '%s'", store);
		goto out;
	}
	/* one instant for every disk: "now" resolved once */
	uint64_t now = rw_clock_ns();
	struct rw_when w = { .kind = RW_WHEN_TIME, .ts_ns = now };
	if (!(ms = calloc((size_t)vs->ndisks, sizeof(*ms)))) {
		rc = cli_fail(-ENOMEM, "vm mark");
		goto out;
	}
	for (int i = 0; i < vs->ndisks && i < MAX_DISKS; i++) {
		if ((err = ix_disk_get(ix, vs->disks[i].disk, &dd[i])) ||
		    (err = rs_resolve(ix, &dd[i], &w, &ms[i].seq, &ms[i].ts_ns))) {
			rc = cli_fail(err, "cannot mark disk '%s'", vs->disks[i].disk);
			goto out;
		}
		snprintf(ms[i].label, sizeof(ms[i].label), "%s", label);
		ms[i].created_ns = now;
	}
	for (int i = 0; i < vs->ndisks && i < MAX_DISKS; i++)
		if ((err = ix_mark_put(ix, dd[i].id, &ms[i]))) {
			rc = cli_fail(err, "cannot store mark '%s' of disk '%s'%s",
				      label, vs->disks[i].disk,
				      i ? " (the disks before it are marked)" : "");
			goto out;
		}
	char tb[40];
	if (json) {
		printf("{\"domain\":");
		cli_json_str(stdout, dom);
		printf(",\"label\":");
		cli_json_str(stdout, label);
		printf(",\"ts_ns\":%" PRIu64 ",\"time\":\"%s\",\"disks\":[", now,
		       cli_fmt_time(now, tb));
		for (int i = 0; i < vs->ndisks; i++) {
			printf("%s{\"disk\":", i ? "," : "");
			cli_json_str(stdout, vs->disks[i].disk);
			printf(",\"seq\":%" PRIu64 "}", ms[i].seq);
		}
		printf("]}\n");
	} else {
		printf("marked domain '%s' at %s as '%s' (%d disk%s)\n", dom,
		       cli_fmt_time(now, tb), label, vs->ndisks,
		       vs->ndisks == 1 ? "" : "s");
	}
	rc = 0;
out:
	free(ms);
	ix_close(ix);
	vm_state_free(vs);
	return rc;
}

/* ------------------------------------------------------------- rollback */

static void rollback_usage(FILE *f)
{
	fprintf(f,
		"usage: rewind vm rollback [--store DIR] [--connect URI] DOMAIN --at WHEN\n"
		"                          [--force] [--timeout DURATION] [--no-start] [--json]\n"
		"       rewind vm rollback [...] DOMAIN --undo\n\n"
		"Shuts DOMAIN down (ACPI; waits up to --timeout, default 120s; then\n"
		"powers it off only with --force), rolls every protected disk back to\n"
		"WHEN with `rewind rollback DISK --at @T` (one instant T for all\n"
		"disks), redefines the domain with the XML version in force at T, and\n"
		"starts it again if it was running.  The moment just before the\n"
		"rollback is recorded: --undo rolls back to it (and can itself be\n"
		"undone).  WHEN: ISO 8601, @EPOCH, '10m ago', seq:N, mark:LABEL.\n"
		"QEMU reads the disks through `rewind serve`: keep it running if the\n"
		"domain is to start.\n");
}

/* Runs this binary with args (args[0] is ignored); exit status or -errno. */
static int run_self(const char *const *args, bool quiet)
{
	char self[PATH_MAX];
	ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
	posix_spawn_file_actions_t fa;
	pid_t pid;
	int status, err;

	if (n <= 0)
		return -errno;
	self[n] = '\0';
	posix_spawn_file_actions_init(&fa);
	if (quiet) {
		posix_spawn_file_actions_addopen(&fa, 1, "/dev/null", O_WRONLY, 0);
		posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
	} else {
		posix_spawn_file_actions_adddup2(&fa, 2, 1); /* reports to stderr */
	}
	fflush(NULL);
	err = posix_spawn(&pid, self, &fa, NULL,
			  (char *const *)(uintptr_t)args, environ);
	posix_spawn_file_actions_destroy(&fa);
	if (err)
		return -err;
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return -errno;
	return WIFEXITED(status) ? WEXITSTATUS(status) : 128;
}

static int cmd_rollback(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "store", required_argument, NULL, 's' },
		{ "connect", required_argument, NULL, 'c' },
		{ "at", required_argument, NULL, 'a' },
		{ "undo", no_argument, NULL, 'u' },
		{ "force", no_argument, NULL, 'f' },
		{ "timeout", required_argument, NULL, 't' },
		{ "no-start", no_argument, NULL, 'n' },
		{ "json", no_argument, NULL, 'j' },
		{ "help", no_argument, NULL, 'h' },
		{ 0, 0, 0, 0 },
	};
	const char *store = NULL, *uri = NULL, *at = NULL;
	bool undo = false, force = false, nostart = false, json = false, locked;
	uint64_t timeout_ns = 120ull * 1000000000ull;
	int c, err, rc = 1;

	while ((c = getopt_long(argc, argv, "s:c:a:uft:njh", opts, NULL)) != -1) {
		switch (c) {
		case 's': store = optarg; break;
		case 'c': uri = optarg; break;
		case 'a': at = optarg; break;
		case 'u': undo = true; break;
		case 'f': force = true; break;
		case 't':
			if (rw_parse_duration(optarg, &timeout_ns))
				return cli_usage_error("vm rollback", "%s", rw_err_msg());
			break;
		case 'n': nostart = true; break;
		case 'j': json = true; break;
		case 'h': rollback_usage(stdout); return 0;
		default: return cli_usage_error("vm rollback", "unknown option");
		}
	}
	if (optind + 1 != argc)
		return cli_usage_error("vm rollback", "expected one DOMAIN");
	if (!!at == undo)
		return cli_usage_error("vm rollback", "give exactly one of --at "
				       "WHEN and --undo");
	const char *dom = argv[optind];
	if (!vm_domain_name_valid(dom))
		return cli_usage_error("vm rollback", "invalid domain name '%s'", dom);
	store = cli_store_dir(store);

	struct vm_state *vs = NULL;
	struct vm_conn *vc = NULL;
	struct ix *ix = NULL;
	char *txml = NULL, *cur = NULL;
	uint64_t T = 0, ver = 0;
	char tb[40], tb2[40];
	int done = 0;

	if ((err = vm_state_load(store, dom, &vs)))
		return cli_fail(err, "vm rollback");
	{
		const char *probe[] = { "rewind", "rollback", "--help", NULL };
		if (run_self(probe, true) != 0) {
			rc = vm_fail("vm rollback needs the per-disk command "
				     "`rewind rollback`, which this build does "
				     "not have: nothing was changed");
			goto out;
		}
	}
	/* the target instant, checked against every disk before anything */
	if (undo) {
		if ((err = vm_state_undo_get(vs->dir, &T))) {
			rc = cli_fail(err, "vm rollback --undo");
			goto out;
		}
	}
	if ((err = cli_open_store_for_read(store, &ix, &locked))) {
		rc = cli_fail(err, "cannot open store '%s'", store);
		goto out;
	}
	{
		struct rw_when w;
		if (undo) {
			w.kind = RW_WHEN_TIME;
			w.ts_ns = T;
		} else if ((err = rw_parse_when(at, rw_clock_ns(), &w))) {
			rc = cli_fail(err, "--at");
			goto out;
		}
		for (int i = 0; i < vs->ndisks; i++) {
			struct ix_disk d;
			uint64_t s, t;
			if ((err = ix_disk_get(ix, vs->disks[i].disk, &d)) ||
			    (err = rs_resolve(ix, &d, &w, &s, &t))) {
				rc = cli_fail(err, "cannot roll domain '%s' back to '%s'",
					      dom, undo ? "the undo point" : at);
				goto out;
			}
			if (i == 0) {
				/* mark and seq points become one instant */
				if (!t) {
					rc = vm_fail("cannot tell the time of '%s' "
						     "on disk '%s'", at, d.name);
					goto out;
				}
				T = t;
				w.kind = RW_WHEN_TIME;
				w.ts_ns = T;
			}
		}
	}
	ix_close(ix);
	ix = NULL;
	if ((err = vm_state_xml_at(vs->dir, T, &txml, &ver))) {
		rc = cli_fail(err, "vm rollback: no domain configuration for %s",
			      cli_fmt_time(T, tb));
		goto out;
	}
	if ((err = vm_conn_open(&vc, uri))) {
		rc = cli_fail(err, "vm rollback");
		goto out;
	}
	enum vm_dom_state st;
	char sdesc[64];
	if ((err = vm_dom_state(vc, dom, &st, sdesc, sizeof(sdesc)))) {
		rc = cli_fail(err, "vm rollback");
		goto out;
	}
	bool was_running = st != VM_DOM_OFF;
	if (st == VM_DOM_RUNNING) {
		if (!json)
			printf("shutting domain '%s' down (ACPI, up to %.0f s)\n", dom,
			       (double)timeout_ns / 1e9);
		fflush(stdout);
		err = vm_dom_shutdown_wait(vc, dom, timeout_ns / 1000000);
		if (err == -ETIMEDOUT && force) {
			rw_err_clear();
			if (!json)
				printf("domain '%s' did not shut down: powering it "
				       "off (--force)\n", dom);
			err = vm_dom_destroy(vc, dom);
		} else if (err == -ETIMEDOUT) {
			rc = vm_fail("domain '%s' did not shut down within %.0f s; "
				     "nothing was rolled back (use --force to power "
				     "it off)", dom, (double)timeout_ns / 1e9);
			goto out;
		}
		if (err) {
			rc = cli_fail(err, "vm rollback");
			goto out;
		}
	} else if (st != VM_DOM_OFF) {
		if (!force) {
			rc = vm_fail("domain '%s' is %s: nothing was rolled back "
				     "(use --force to power it off)", dom, sdesc);
			goto out;
		}
		if ((err = vm_dom_destroy(vc, dom))) {
			rc = cli_fail(err, "vm rollback");
			goto out;
		}
	}
	/* the moment just before the rollback, and the config in force then */
	uint64_t before = rw_clock_ns();
	if ((err = vm_dom_xml(vc, dom, &cur)) ||
	    (err = vm_state_xml_put(vs->dir, before, cur)) ||
	    (err = vm_state_undo_put(vs->dir, before))) {
		rc = cli_fail(err, "vm rollback: cannot record the undo point");
		goto out;
	}
	char atarg[48];
	snprintf(atarg, sizeof(atarg), "@%" PRIu64 ".%09" PRIu64,
		 T / UINT64_C(1000000000), T % UINT64_C(1000000000));
	for (int i = 0; i < vs->ndisks; i++) {
		const char *args[] = { "rewind", "rollback", "--store", store,
				       vs->disks[i].disk, "--at", atarg, NULL };
		int r = run_self(args, false);
		if (r != 0) {
			rc = vm_fail("vm rollback: `rewind rollback %s --at %s` "
				     "failed (exit %d); %d of %d disks rolled back; "
				     "the domain stays off (run vm rollback again, "
				     "or --undo)", vs->disks[i].disk, atarg, r, done,
				     vs->ndisks);
			goto out;
		}
		done++;
	}
	if (strcmp(cur, txml)) {
		if ((err = vm_dom_define(vc, txml))) {
			rc = cli_fail(err, "vm rollback: the disks are rolled back "
				      "but the XML of %s could not be defined",
				      cli_fmt_time(ver, tb));
			goto out;
		}
		char *now_xml = NULL;
		if (!vm_dom_xml(vc, dom, &now_xml))
			vm_state_xml_put(vs->dir, rw_clock_ns(), now_xml);
		free(now_xml);
	}
	bool started = false;
	if (was_running && !nostart) {
		if ((err = vm_dom_start(vc, dom))) {
			rc = cli_fail(err, "vm rollback: rolled back, but cannot "
				      "start the domain (is `rewind serve` running?)");
			goto out;
		}
		started = true;
	}
	if (json) {
		printf("{\"domain\":");
		cli_json_str(stdout, dom);
		printf(",\"to_ns\":%" PRIu64 ",\"to\":\"%s\",\"undo_ns\":%" PRIu64
		       ",\"xml_version_ns\":%" PRIu64 ",\"xml_redefined\":%s"
		       ",\"started\":%s,\"disks\":[", T, cli_fmt_time(T, tb), before,
		       ver, strcmp(cur, txml) ? "true" : "false",
		       started ? "true" : "false");
		for (int i = 0; i < vs->ndisks; i++) {
			printf("%s", i ? "," : "");
			cli_json_str(stdout, vs->disks[i].disk);
		}
		printf("]}\n");
	} else {
		printf("rolled domain '%s' back to %s (%d disk%s); domain XML of "
		       "%s%s\n", dom, cli_fmt_time(T, tb), vs->ndisks,
		       vs->ndisks == 1 ? "" : "s", cli_fmt_time(ver, tb2),
		       strcmp(cur, txml) ? " redefined" : " (unchanged)");
		printf("undo with: rewind vm rollback %s --undo  (back to %s)\n",
		       dom, cli_fmt_time(before, tb));
		printf("%s\n", started ? "domain started" :
		       was_running ? "domain left off (--no-start)" :
		       "domain left off (it was not running)");
	}
	rc = 0;
out:
	ix_close(ix);
	free(cur);
	free(txml);
	vm_conn_close(vc);
	vm_state_free(vs);
	return rc;
}

/* ------------------------------------------------------------- dispatch */

static int cmd_vm(int argc, char **argv)
{
	static const struct {
		const char *name;
		int (*fn)(int, char **);
	} subs[] = {
		{ "protect", cmd_protect },
		{ "unprotect", cmd_unprotect },
		{ "points", cmd_points },
		{ "mark", cmd_vmmark },
		{ "rollback", cmd_rollback },
	};

	if (argc < 2) {
		vm_usage(stderr);
		return 2;
	}
	if (!strcmp(argv[1], "--help") || !strcmp(argv[1], "-h") ||
	    !strcmp(argv[1], "help")) {
		vm_usage(stdout);
		return 0;
	}
	for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++)
		if (!strcmp(argv[1], subs[i].name)) {
			optind = 1;
			return subs[i].fn(argc - 1, argv + 1);
		}
	fprintf(stderr, "rewind vm: unknown subcommand '%s' (see rewind vm "
		"--help)\n", argv[1]);
	return 2;
}

CLI_COMMAND(vm, "vm", "protect, mark, roll back libvirt domains (vm --help)",
	    cmd_vm)
