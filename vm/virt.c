/*
 * virt.c — the few libvirt calls rewind makes, with libvirt's errors
 * turned into rw_err_set() messages.
 *
 * libvirt prints every error to stderr by default; vm_conn_open()
 * installs a silent handler (library code never prints) and each wrapper
 * copies virGetLastErrorMessage() into the error detail instead.
 * Shutdown is polled (200 ms) rather than waited for with a domain event
 * loop: an event loop needs a thread of its own for one state change.
 */
#include "vm/vm.h"
#include "common/rw.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <libvirt/libvirt.h>
#include <libvirt/virterror.h>

/*
 * libvirt is opened with dlopen on the first connection, not linked: its
 * dependencies (glib, gnutls, curl, krb5, ...) cost every process start
 * of the rewind binary ~15 ms of dynamic loading (perf stat of a program
 * that only links them), which is half the budget of a whole `rewind
 * rollback` of the last minute of a disk.  Only `rewind vm` pays it now.
 */
#define LV_FUNCS(X) \
	X(virDomainCreate) \
	X(virDomainDestroy) \
	X(virDomainShutdown) \
	X(virConnectClose) \
	X(virConnectGetURI) \
	X(virConnectOpen) \
	X(virDomainBlockCopy) \
	X(virDomainBlockJobAbort) \
	X(virDomainDefineXML) \
	X(virDomainFree) \
	X(virDomainGetBlockInfo) \
	X(virDomainGetBlockJobInfo) \
	X(virDomainGetState) \
	X(virDomainGetXMLDesc) \
	X(virDomainLookupByName) \
	X(virGetLastError) \
	X(virGetLastErrorMessage) \
	X(virSetErrorFunc)

static struct {
#define X(f) __typeof__(&f) f;
	LV_FUNCS(X)
#undef X
} lv;
static pthread_once_t lv_once = PTHREAD_ONCE_INIT;
static char lv_error[512];

static void lv_load(void)
{
	static const struct rw_dlsym syms[] = {
#define X(f) { #f, (void **)&lv.f },
		LV_FUNCS(X)
#undef X
	};

	rw_dl_load("libvirt.so.0", syms, sizeof(syms) / sizeof(syms[0]),
		   lv_error, sizeof(lv_error));
}

/* Loads libvirt once.  0, or RW_EFAILED saying why it cannot be used. */
static int lv_ready(void)
{
	pthread_once(&lv_once, lv_load);
	if (lv_error[0])
		return rw_err_set(RW_EFAILED, "cannot load libvirt: %s", lv_error);
	return 0;
}

struct vm_conn {
	virConnectPtr c;
	char uri[512];
};

static void silent(void *arg, virErrorPtr e)
{
	(void)arg;
	(void)e;
}

static int virt_fail(const char *fmt, const char *a, const char *b)
{
	const char *m = lv.virGetLastErrorMessage();
	char what[1024];
	virErrorPtr e = lv.virGetLastError();
	int code = e && (e->code == VIR_ERR_NO_DOMAIN) ? RW_ENOTFOUND : RW_EFAILED;

	snprintf(what, sizeof(what), fmt, a, b);
	return rw_err_set(code, "%s: %s", what, m ? m : "unknown libvirt error");
}

int vm_conn_open(struct vm_conn **out, const char *uri)
{
	struct vm_conn *c = calloc(1, sizeof(*c));

	*out = NULL;
	int err = lv_ready();
	if (err) {
		free(c);
		return err;
	}
	if (!c)
		return -ENOMEM;
	lv.virSetErrorFunc(NULL, silent);
	c->c = lv.virConnectOpen(uri);
	if (!c->c) {
		err = virt_fail("cannot connect to libvirt at '%s'%s",
				    uri ? uri : "(default URI)", "");
		free(c);
		return err;
	}
	char *u = lv.virConnectGetURI(c->c);
	snprintf(c->uri, sizeof(c->uri), "%s", u ? u : (uri ? uri : "?"));
	free(u);
	*out = c;
	return 0;
}

void vm_conn_close(struct vm_conn *c)
{
	if (!c)
		return;
	lv.virConnectClose(c->c);
	free(c);
}

static int lookup(struct vm_conn *c, const char *dom, virDomainPtr *d)
{
	*d = lv.virDomainLookupByName(c->c, dom);
	if (!*d) {
		virErrorPtr e = lv.virGetLastError();
		if (e && e->code == VIR_ERR_NO_DOMAIN)
			return rw_err_set(RW_ENOTFOUND, "no domain '%s' at '%s'",
					  dom, c->uri);
		return virt_fail("cannot look up domain '%s'%s", dom, "");
	}
	return 0;
}

int vm_dom_state(struct vm_conn *c, const char *dom, enum vm_dom_state *st,
		 char *desc, size_t descsz)
{
	static const char *const names[] = {
		"no state", "running", "blocked", "paused", "shutting down",
		"shut off", "crashed", "suspended (pmsuspended)",
	};
	virDomainPtr d;
	int s = 0, reason = 0, err;

	if ((err = lookup(c, dom, &d)))
		return err;
	if (lv.virDomainGetState(d, &s, &reason, 0) < 0) {
		err = virt_fail("cannot get the state of domain '%s'%s", dom, "");
		lv.virDomainFree(d);
		return err;
	}
	lv.virDomainFree(d);
	*st = s == VIR_DOMAIN_SHUTOFF ? VM_DOM_OFF :
	      s == VIR_DOMAIN_RUNNING ? VM_DOM_RUNNING : VM_DOM_OTHER;
	if (desc)
		snprintf(desc, descsz, "%s", s >= 0 && s < 8 ? names[s] : "unknown");
	return 0;
}

int vm_dom_xml(struct vm_conn *c, const char *dom, char **xml)
{
	virDomainPtr d;
	int err;

	*xml = NULL;
	if ((err = lookup(c, dom, &d)))
		return err;
	*xml = lv.virDomainGetXMLDesc(d, VIR_DOMAIN_XML_INACTIVE |
				   VIR_DOMAIN_XML_SECURE);
	if (!*xml)
		err = virt_fail("cannot get the XML of domain '%s'%s", dom, "");
	lv.virDomainFree(d);
	return err;
}

int vm_dom_define(struct vm_conn *c, const char *xml)
{
	virDomainPtr d = lv.virDomainDefineXML(c->c, xml);

	if (!d)
		return virt_fail("cannot define the domain%s%s", "", "");
	lv.virDomainFree(d);
	return 0;
}

static int act(struct vm_conn *c, const char *dom, const char *what,
	       int (*fn)(virDomainPtr))
{
	virDomainPtr d;
	int err;

	if ((err = lookup(c, dom, &d)))
		return err;
	if (fn(d) < 0)
		err = virt_fail("cannot %s domain '%s'", what, dom);
	lv.virDomainFree(d);
	return err;
}

int vm_dom_start(struct vm_conn *c, const char *dom)
{
	return act(c, dom, "start", lv.virDomainCreate);
}

int vm_dom_destroy(struct vm_conn *c, const char *dom)
{
	return act(c, dom, "destroy", lv.virDomainDestroy);
}

int vm_dom_shutdown_wait(struct vm_conn *c, const char *dom,
			 uint64_t timeout_ms)
{
	enum vm_dom_state st;
	int err;

	if ((err = vm_dom_state(c, dom, &st, NULL, 0)))
		return err;
	if (st == VM_DOM_OFF)
		return 0;
	if ((err = act(c, dom, "shut down", lv.virDomainShutdown)))
		return err;
	for (uint64_t waited = 0;; waited += 200) {
		if ((err = vm_dom_state(c, dom, &st, NULL, 0)))
			return err;
		if (st == VM_DOM_OFF)
			return 0;
		if (waited >= timeout_ms)
			return rw_err_set(-ETIMEDOUT, "domain '%s' did not shut down "
					  "within %llu ms", dom,
					  (unsigned long long)timeout_ms);
		struct timespec ts = { 0, 200 * 1000000L };
		nanosleep(&ts, NULL);
	}
}

int vm_dom_live_xml(struct vm_conn *c, const char *dom, char **xml)
{
	virDomainPtr d;
	int err;

	*xml = NULL;
	if ((err = lookup(c, dom, &d)))
		return err;
	*xml = lv.virDomainGetXMLDesc(d, VIR_DOMAIN_XML_SECURE);
	if (!*xml)
		err = virt_fail("cannot get the live XML of domain '%s'%s", dom, "");
	lv.virDomainFree(d);
	return err;
}

int vm_dom_disk_size(struct vm_conn *c, const char *dom, const char *target,
		     uint64_t *bytes)
{
	virDomainPtr d;
	virDomainBlockInfo info;
	int err;

	if ((err = lookup(c, dom, &d)))
		return err;
	if (lv.virDomainGetBlockInfo(d, target, &info, 0) < 0)
		err = virt_fail("cannot get the size of disk '%s' of domain '%s'",
				target, dom);
	else
		*bytes = info.capacity;
	lv.virDomainFree(d);
	return err;
}

int vm_dom_block_copy_pivot(struct vm_conn *c, const char *dom,
			    const char *target, const char *dest_xml,
			    uint64_t timeout_ms)
{
	virDomainPtr d;
	int err;
	unsigned flags = VIR_DOMAIN_BLOCK_COPY_REUSE_EXT |
			 VIR_DOMAIN_BLOCK_COPY_SYNCHRONOUS_WRITES |
			 VIR_DOMAIN_BLOCK_COPY_TRANSIENT_JOB;

	if ((err = lookup(c, dom, &d)))
		return err;
	if (lv.virDomainBlockCopy(d, target, dest_xml, NULL, 0, flags) < 0) {
		err = virt_fail("cannot start the block copy of disk '%s' of "
				"domain '%s'", target, dom);
		goto out;
	}
	/*
	 * Ready = the mirror has caught up and every new guest write goes to
	 * both sides (synchronously, with SYNCHRONOUS_WRITES).  Polled: a
	 * pivot before ready fails, so a failed pivot with a job still at
	 * cur < end is simply retried.
	 */
	for (uint64_t waited = 0;; waited += 100) {
		virDomainBlockJobInfo info;
		int r = lv.virDomainGetBlockJobInfo(d, target, &info, 0);
		if (r < 0) {
			err = virt_fail("block copy of disk '%s' of domain '%s' "
					"failed", target, dom);
			goto out;
		}
		if (r == 0) {
			err = rw_err_set(RW_EFAILED, "block copy of disk '%s' of "
					 "domain '%s' ended before the pivot",
					 target, dom);
			goto out;
		}
		if (info.end > 0 && info.cur == info.end &&
		    lv.virDomainBlockJobAbort(d, target,
					   VIR_DOMAIN_BLOCK_JOB_ABORT_PIVOT) == 0)
			break;
		if (waited >= timeout_ms) {
			lv.virDomainBlockJobAbort(d, target, 0);
			err = rw_err_set(-ETIMEDOUT, "block copy of disk '%s' of "
					 "domain '%s' was not ready within %llu ms "
					 "(cancelled; the domain still runs on its "
					 "image)", target, dom,
					 (unsigned long long)timeout_ms);
			goto out;
		}
		struct timespec ts = { 0, 100 * 1000000L };
		nanosleep(&ts, NULL);
	}
	/* the job is gone once the pivot completes */
	for (int i = 0; i < 100; i++) {
		virDomainBlockJobInfo info;
		if (lv.virDomainGetBlockJobInfo(d, target, &info, 0) == 0)
			break;
		struct timespec ts = { 0, 50 * 1000000L };
		nanosleep(&ts, NULL);
	}
out:
	lv.virDomainFree(d);
	return err;
}
