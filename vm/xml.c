/*
 * xml.c — domain XML: parse the disks, decide which can be protected,
 * rewrite the chosen ones onto rewind's NBD exports and back.
 *
 * How: libxml2 parses the document (no network, no entity expansion:
 * XML_PARSE_NONET, and DTDs are never loaded), we walk
 * /domain/devices/disk by hand and edit the tree in place, then
 * reserialise.  Only the chosen <disk> elements change; everything else
 * comes out as libxml2 read it, which libvirt accepts (it is libvirt's own
 * output read back).
 *
 * Rejected alternative: string surgery on the XML text.  Attribute order,
 * quoting style, entities and comments make a hand-rolled matcher fragile,
 * and a mistake here redefines someone's VM with a wrong disk.
 */
#include "vm/vm.h"
#include "common/rw.h"
#include "index/ix.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <libxml/parser.h>
#include <libxml/tree.h>

/*
 * libxml2 is opened with dlopen when a domain's XML is first parsed, not
 * linked: with its dependencies (ICU, libstdc++) it cost every start of
 * the rewind binary ~1 ms of dynamic loading, which every command paid
 * and only `rewind vm` uses.  xmlFree is an exported variable holding
 * the free function (or, with LIBXML_THREAD_ALLOC_ENABLED, a macro over
 * __xmlFree()): it is looked up as data, not as a function.
 */
#define LX_FUNCS(X) \
	X(xmlAddChild) \
	X(xmlAddPrevSibling) \
	X(xmlDocCopyNode) \
	X(xmlDocDumpFormatMemory) \
	X(xmlDocGetRootElement) \
	X(xmlFreeDoc) \
	X(xmlFreeNode) \
	X(xmlGetProp) \
	X(xmlNewChild) \
	X(xmlNewNode) \
	X(xmlNodeGetContent) \
	X(xmlReadMemory) \
	X(xmlReplaceNode) \
	X(xmlSetProp) \
	X(xmlUnlinkNode)

static struct {
#define X(f) __typeof__(&f) f;
	LX_FUNCS(X)
#undef X
} lx;
static pthread_once_t lx_once = PTHREAD_ONCE_INIT;
static char lx_error[512];
#ifdef LIBXML_THREAD_ALLOC_ENABLED
static xmlFreeFunc *(*lx_free_slot)(void);    /* __xmlFree */
#define LX_FREE_SYM "__xmlFree"
#else
static xmlFreeFunc *lx_free_var;              /* &xmlFree */
#define LX_FREE_SYM "xmlFree"
#endif

static void lx_load(void)
{
	void *free_sym = NULL;
	const struct rw_dlsym syms[] = {
#define X(f) { #f, (void **)&lx.f },
		LX_FUNCS(X)
#undef X
		{ LX_FREE_SYM, &free_sym },
	};

	rw_dl_load("libxml2.so.2", syms, sizeof(syms) / sizeof(syms[0]),
		   lx_error, sizeof(lx_error));
#ifdef LIBXML_THREAD_ALLOC_ENABLED
	*(void **)&lx_free_slot = free_sym;
#else
	lx_free_var = free_sym;
#endif
}

/* Loads libxml2 once.  0, or RW_EFAILED saying why it cannot be used. */
static int lx_ready(void)
{
	pthread_once(&lx_once, lx_load);
	if (lx_error[0])
		return rw_err_set(RW_EFAILED, "cannot load libxml2: %s", lx_error);
	return 0;
}

/* xmlFree(p) of the loaded libxml2. */
static void xml_free(void *p)
{
#ifdef LIBXML_THREAD_ALLOC_ENABLED
	(*lx_free_slot())(p);
#else
	(*lx_free_var)(p);
#endif
}

static bool is_el(const xmlNode *n, const char *name)
{
	return n && n->type == XML_ELEMENT_NODE &&
	       !strcmp((const char *)n->name, name);
}

static xmlNode *child(xmlNode *n, const char *name)
{
	for (xmlNode *c = n ? n->children : NULL; c; c = c->next)
		if (is_el(c, name))
			return c;
	return NULL;
}

/* Copies attribute name of n into buf ("" when absent). */
static void attr(xmlNode *n, const char *name, char *buf, size_t sz)
{
	xmlChar *v = n ? lx.xmlGetProp(n, (const xmlChar *)name) : NULL;

	snprintf(buf, sz, "%s", v ? (const char *)v : "");
	xml_free(v);
}

static char *attr_dup(xmlNode *n, const char *name)
{
	xmlChar *v = n ? lx.xmlGetProp(n, (const xmlChar *)name) : NULL;
	char *s = v ? strdup((const char *)v) : NULL;

	xml_free(v);
	return s;
}

static int parse(const char *xml, xmlDoc **doc, xmlNode **devices)
{
	int err = lx_ready();

	*doc = NULL;
	if (err)
		return err;
	*doc = lx.xmlReadMemory(xml, (int)strlen(xml), "domain.xml", NULL,
			     XML_PARSE_NONET | XML_PARSE_NOERROR |
			     XML_PARSE_NOWARNING);
	if (!*doc)
		return rw_err_set(RW_EPARSE, "domain XML is not well-formed");
	xmlNode *root = lx.xmlDocGetRootElement(*doc);
	if (!is_el(root, "domain")) {
		lx.xmlFreeDoc(*doc);
		*doc = NULL;
		return rw_err_set(RW_EPARSE, "XML is not a libvirt <domain>");
	}
	*devices = child(root, "devices");
	return 0;
}

void vm_disks_free(struct vm_disks *ds)
{
	if (!ds)
		return;
	for (int i = 0; i < ds->n; i++)
		free(ds->v[i].source);
	free(ds->v);
	free(ds);
}

static int disk_from_node(xmlNode *n, struct vm_disk *d)
{
	memset(d, 0, sizeof(*d));
	attr(n, "type", d->type, sizeof(d->type));
	attr(n, "device", d->device, sizeof(d->device));
	if (!d->device[0])
		snprintf(d->device, sizeof(d->device), "disk");
	xmlNode *t = child(n, "target");
	attr(t, "dev", d->target, sizeof(d->target));
	attr(t, "bus", d->bus, sizeof(d->bus));
	attr(child(n, "driver"), "type", d->format, sizeof(d->format));
	d->readonly = child(n, "readonly") != NULL;
	d->shareable = child(n, "shareable") != NULL;
	xmlNode *s = child(n, "source");
	if (s) {
		if (!strcmp(d->type, "file"))
			d->source = attr_dup(s, "file");
		else if (!strcmp(d->type, "block"))
			d->source = attr_dup(s, "dev");
		else if (!strcmp(d->type, "dir"))
			d->source = attr_dup(s, "dir");
		else if (!strcmp(d->type, "network")) {
			char p[32], nm[1024];
			attr(s, "protocol", p, sizeof(p));
			attr(s, "name", nm, sizeof(nm));
			size_t len = strlen(p) + strlen(nm) + 2;
			if ((d->source = malloc(len)))
				snprintf(d->source, len, "%s:%s", p, nm);
		} else if (!strcmp(d->type, "volume")) {
			char p[256], v[256];
			attr(s, "pool", p, sizeof(p));
			attr(s, "volume", v, sizeof(v));
			size_t len = strlen(p) + strlen(v) + 2;
			if ((d->source = malloc(len)))
				snprintf(d->source, len, "%s/%s", p, v);
		}
	}
	return 0;
}

int vm_xml_disks(const char *xml, struct vm_disks **out)
{
	xmlDoc *doc = NULL;
	xmlNode *devs = NULL;
	struct vm_disks *ds = calloc(1, sizeof(*ds));
	int err;

	*out = NULL;
	if (!ds)
		return -ENOMEM;
	if ((err = parse(xml, &doc, &devs))) {
		free(ds);
		return err;
	}
	int cap = 0;
	for (xmlNode *n = devs ? devs->children : NULL; n; n = n->next) {
		if (!is_el(n, "disk"))
			continue;
		if (ds->n == cap) {
			int nc = cap ? cap * 2 : 4;
			struct vm_disk *v = realloc(ds->v, (size_t)nc * sizeof(*v));
			if (!v) {
				err = -ENOMEM;
				goto out;
			}
			ds->v = v;
			cap = nc;
		}
		disk_from_node(n, &ds->v[ds->n++]);
	}
	*out = ds;
	ds = NULL;
	err = 0;
out:
	vm_disks_free(ds);
	lx.xmlFreeDoc(doc);
	return err;
}

int vm_disk_check(const struct vm_disk *d)
{
	const char *t = d->target[0] ? d->target : "?";

	if (!d->target[0])
		return rw_err_set(-EOPNOTSUPP, "a disk has no <target dev>");
	if (strcmp(d->device, "disk"))
		return rw_err_set(-EOPNOTSUPP, "disk '%s': device '%s' is not a "
				  "disk (removable or pass-through media cannot "
				  "be protected)", t, d->device);
	if (!strcmp(d->type, "block"))
		return rw_err_set(-EOPNOTSUPP, "disk '%s': type 'block' (host "
				  "block device %s) cannot be protected: only "
				  "file-backed images can", t,
				  d->source ? d->source : "?");
	if (!strcmp(d->type, "network"))
		return rw_err_set(-EOPNOTSUPP, "disk '%s': type 'network' (%s) "
				  "cannot be protected: it is not a local image "
				  "(already protected?)", t,
				  d->source ? d->source : "?");
	if (strcmp(d->type, "file"))
		return rw_err_set(-EOPNOTSUPP, "disk '%s': type '%s' cannot be "
				  "protected: only type 'file' images can", t,
				  d->type[0] ? d->type : "(none)");
	if (!d->source || !*d->source)
		return rw_err_set(-EOPNOTSUPP, "disk '%s': no source file", t);
	if (d->readonly)
		return rw_err_set(-EOPNOTSUPP, "disk '%s': read-only disks are "
				  "not protected (nothing to journal)", t);
	if (d->shareable)
		return rw_err_set(-EOPNOTSUPP, "disk '%s': shareable disks "
				  "cannot be protected (several writers)", t);
	if (d->format[0] && strcmp(d->format, "raw") && strcmp(d->format, "qcow2"))
		return rw_err_set(-EOPNOTSUPP, "disk '%s': format '%s' is not "
				  "supported (raw or qcow2)", t, d->format);
	if (strchr(d->source, '\n') || strchr(d->source, '\t'))
		return rw_err_set(-EOPNOTSUPP, "disk '%s': source path contains "
				  "a tab or newline", t);
	return 0;
}

bool vm_domain_name_valid(const char *domain)
{
	size_t n = strlen(domain);

	if (!n || n > 200 || !strcmp(domain, ".") || !strcmp(domain, ".."))
		return false;
	for (const char *p = domain; *p; p++)
		if (*p == '/' || (unsigned char)*p < 0x20 || *p == 0x7f)
			return false;
	return true;
}

int vm_disk_name(const char *domain, const char *target, char *buf, size_t n)
{
	int len = snprintf(buf, n, "%s-%s", domain, target);

	if (len < 0 || (size_t)len >= n || !ix_name_valid(buf))
		return rw_err_set(-EINVAL, "disk name '%s-%s' is not a valid "
				  "store disk name ([A-Za-z0-9._-], at most %d "
				  "characters)", domain, target, IX_NAME_MAX);
	return 0;
}

/* The <disk> under devs whose target is dev, or NULL. */
static xmlNode *find_disk(xmlNode *devs, const char *dev)
{
	for (xmlNode *n = devs ? devs->children : NULL; n; n = n->next) {
		if (!is_el(n, "disk"))
			continue;
		char t[VM_TARGET_MAX];
		attr(child(n, "target"), "dev", t, sizeof(t));
		if (!strcmp(t, dev))
			return n;
	}
	return NULL;
}

static int dump(xmlDoc *doc, char **out)
{
	xmlChar *mem = NULL;
	int len = 0;

	lx.xmlDocDumpFormatMemory(doc, &mem, &len, 0);
	if (!mem)
		return -ENOMEM;
	*out = strdup((const char *)mem);
	xml_free(mem);
	return *out ? 0 : -ENOMEM;
}

/* Replaces (or inserts) child name of n with a fresh empty element. */
static xmlNode *fresh_child(xmlNode *n, const char *name, xmlNode *before)
{
	xmlNode *old = child(n, name);
	xmlNode *e = lx.xmlNewNode(NULL, (const xmlChar *)name);

	if (!e)
		return NULL;
	if (old) {
		lx.xmlReplaceNode(old, e);
		lx.xmlFreeNode(old);
	} else if (before) {
		lx.xmlAddPrevSibling(before, e);
	} else {
		lx.xmlAddChild(n, e);
	}
	return e;
}

int vm_xml_protect(const char *xml, const char *const *targets,
		   const char *const *names, int n, const char *sock,
		   char **out)
{
	xmlDoc *doc = NULL;
	xmlNode *devs = NULL;
	int err;

	*out = NULL;
	if ((err = parse(xml, &doc, &devs)))
		return err;
	for (int i = 0; i < n; i++) {
		xmlNode *d = find_disk(devs, targets[i]);
		if (!d) {
			err = rw_err_set(RW_ENOTFOUND, "the domain has no disk "
					 "'%s'", targets[i]);
			goto out;
		}
		lx.xmlSetProp(d, (const xmlChar *)"type", (const xmlChar *)"network");
		xmlNode *bs;
		while ((bs = child(d, "backingStore"))) {
			lx.xmlUnlinkNode(bs);
			lx.xmlFreeNode(bs);
		}
		xmlNode *drv = child(d, "driver");
		if (!drv) {
			drv = lx.xmlNewNode(NULL, (const xmlChar *)"driver");
			if (!drv) {
				err = -ENOMEM;
				goto out;
			}
			if (d->children)
				lx.xmlAddPrevSibling(d->children, drv);
			else
				lx.xmlAddChild(d, drv);
			lx.xmlSetProp(drv, (const xmlChar *)"name", (const xmlChar *)"qemu");
		}
		lx.xmlSetProp(drv, (const xmlChar *)"type", (const xmlChar *)"raw");
		xmlNode *src = fresh_child(d, "source", child(d, "target"));
		if (!src) {
			err = -ENOMEM;
			goto out;
		}
		lx.xmlSetProp(src, (const xmlChar *)"protocol", (const xmlChar *)"nbd");
		lx.xmlSetProp(src, (const xmlChar *)"name", (const xmlChar *)names[i]);
		xmlNode *h = lx.xmlNewChild(src, NULL, (const xmlChar *)"host", NULL);
		if (!h) {
			err = -ENOMEM;
			goto out;
		}
		lx.xmlSetProp(h, (const xmlChar *)"transport", (const xmlChar *)"unix");
		lx.xmlSetProp(h, (const xmlChar *)"socket", (const xmlChar *)sock);
	}
	err = dump(doc, out);
out:
	lx.xmlFreeDoc(doc);
	return err;
}

int vm_xml_restore_disks(const char *xml, const char *orig_xml,
			 const char *const *targets, int n, char **out)
{
	xmlDoc *doc = NULL, *odoc = NULL;
	xmlNode *devs = NULL, *odevs = NULL;
	int err;

	*out = NULL;
	if ((err = parse(xml, &doc, &devs)))
		return err;
	if ((err = parse(orig_xml, &odoc, &odevs)))
		goto out;
	for (int i = 0; i < n; i++) {
		xmlNode *cur = find_disk(devs, targets[i]);
		xmlNode *orig = find_disk(odevs, targets[i]);
		if (!orig) {
			err = rw_err_set(RW_ENOTFOUND, "the original XML has no "
					 "disk '%s'", targets[i]);
			goto out;
		}
		xmlNode *copy = lx.xmlDocCopyNode(orig, doc, 1);
		if (!copy) {
			err = -ENOMEM;
			goto out;
		}
		if (cur) {
			lx.xmlReplaceNode(cur, copy);
			lx.xmlFreeNode(cur);
		} else if (devs) {
			lx.xmlAddChild(devs, copy);
		} else {
			lx.xmlFreeNode(copy);
			err = rw_err_set(RW_EPARSE, "the domain XML has no <devices>");
			goto out;
		}
	}
	err = dump(doc, out);
out:
	lx.xmlFreeDoc(odoc);
	lx.xmlFreeDoc(doc);
	return err;
}

int vm_xml_name(const char *xml, char **out)
{
	xmlDoc *doc = NULL;
	xmlNode *devs = NULL;
	int err;

	*out = NULL;
	if ((err = parse(xml, &doc, &devs)))
		return err;
	xmlNode *nm = child(lx.xmlDocGetRootElement(doc), "name");
	xmlChar *s = nm ? lx.xmlNodeGetContent(nm) : NULL;
	if (!s)
		err = rw_err_set(RW_EPARSE, "domain XML has no <name>");
	else if (!(*out = strdup((const char *)s)))
		err = -ENOMEM;
	xml_free(s);
	lx.xmlFreeDoc(doc);
	return err;
}
