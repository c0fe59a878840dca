/*
 * dl.c — loading an optional library's functions at first use.
 *
 * What: dlopen a shared library by soname and resolve a table of symbols
 * into the caller's function pointer slots, or say why not.  libvirt,
 * libxml2 and libmicrohttpd are loaded this way (vm/virt.c, vm/xml.c,
 * capture/metrics.c): linked, their loading and constructors cost every
 * start of the binary ~18 ms, for commands that never touch a VM or
 * serve metrics.  Each module keeps its own X-macro list of functions
 * (typed from the library's headers) and its own pthread_once; this file
 * is the part they share.
 *
 * Rejected: linking them weakly (-Wl,--as-needed does not defer the
 * loading of a library whose symbols are referenced at all).
 */
#include "rw.h"

#include <dlfcn.h>
#include <stdio.h>

void rw_dl_load(const char *soname, const struct rw_dlsym *syms, size_t n,
		char *err, size_t errlen)
{
	void *h = dlopen(soname, RTLD_NOW | RTLD_LOCAL);

	err[0] = '\0';
	if (!h) {
		snprintf(err, errlen, "%s", dlerror());
		return;
	}
	for (size_t i = 0; i < n; i++) {
		void *f = dlsym(h, syms[i].name);
		if (!f) {
			snprintf(err, errlen, "no %s in %s", syms[i].name, soname);
			return;
		}
		*syms[i].slot = f;
	}
}
