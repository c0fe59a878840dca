/*
 * vm.h — libvirt domains on rewind: which disks can be protected, the
 * domain XML that puts them on rewind's NBD exports, and the per-domain
 * state a store keeps so a protection can be listed, rolled back and
 * undone.
 *
 * Contract
 * - A domain disk can be protected when it is <disk type='file'
 *   device='disk'> with a source file, read-write, not shareable, in raw
 *   or qcow2 format (qcow2 is flattened to raw on import: the whole chain,
 *   backing files included, becomes the disk's base).  Everything else
 *   (block devices, network/volume/dir disks, cdrom, floppy, lun,
 *   read-only or shareable disks, other formats) is refused with a
 *   message naming the disk's target and the reason.
 * - The protected XML differs from the original only in the chosen
 *   <disk> elements: type becomes 'network', <source> becomes
 *   <source protocol='nbd' name='DISK'><host transport='unix'
 *   socket='SOCK'/></source>, <driver type> becomes 'raw' and any
 *   <backingStore> is dropped.  Targets, buses, addresses, boot order and
 *   every other element are kept byte-for-byte as libxml2 reserialises
 *   them.
 * - Per-domain state lives in STORE/vm/DOMAIN/ (see vm/state.c and
 *   FORMAT.md, "VM state"): original.xml (the inactive XML
 *   before protect), disks (one line per protected disk: target, store
 *   disk, format, original path), xml/NNNNNNNNNNNNNNNNNNNN.xml (the domain
 *   XML in force from that time on, ns since the epoch), undo (the moment
 *   just before the last rollback).  Every file is written to a .tmp,
 *   fsynced and renamed, so a crash leaves the old or the new version.
 *
 * Thread model: no shared state except libvirt's own (thread-safe);
 * struct vm_conn belongs to one thread.
 * Errors: 0 / counts, or -errno / RW_E* with an rw_err_msg() detail that
 * names the domain, disk or file.  Library code never prints: libvirt's
 * default error printer is silenced by vm_conn_open().
 * Ownership: *_new / *_free; strings returned through char ** are
 * malloc'ed and owned by the caller.
 */
#ifndef RW_VM_H
#define RW_VM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VM_TARGET_MAX 32

/* One <disk> of a domain, as parsed from its XML. */
struct vm_disk {
	char target[VM_TARGET_MAX];  /* <target dev>, e.g. "vda" */
	char bus[16];                /* <target bus>, "" if absent */
	char type[16];               /* <disk type>: file, block, network … */
	char device[16];             /* <disk device>: disk, cdrom … ("disk") */
	char format[16];             /* <driver type>, "" if absent */
	char *source;                /* file / dev / protocol:name; may be NULL */
	bool readonly, shareable;
};

/* A parsed list of disks; vm_disks_free(NULL) is a no-op. */
struct vm_disks {
	struct vm_disk *v;
	int n;
};
void vm_disks_free(struct vm_disks *ds);

/*
 * Parses the <devices><disk> elements of domain XML xml.  Returns 0 and
 * *out (caller frees with vm_disks_free), RW_EPARSE for XML that is not a
 * domain, -ENOMEM.
 */
int vm_xml_disks(const char *xml, struct vm_disks **out);

/*
 * Whether disk d can be protected.  Returns 0, or -EOPNOTSUPP with a
 * message "disk 'vdb': <reason>".
 */
int vm_disk_check(const struct vm_disk *d);

/* The store disk name for target of domain: "DOMAIN-TARGET". */
int vm_disk_name(const char *domain, const char *target, char *buf, size_t n);

/* Whether a domain name is usable as a directory name in the store. */
bool vm_domain_name_valid(const char *domain);

/*
 * Rewrites the disks of xml whose targets are targets[0..n) onto NBD
 * exports names[i] served on the unix socket sock.  Returns 0 and *out
 * (malloc'ed XML), RW_ENOTFOUND naming a target that is not in xml,
 * RW_EPARSE, -ENOMEM.
 */
int vm_xml_protect(const char *xml, const char *const *targets,
		   const char *const *names, int n, const char *sock,
		   char **out);

/*
 * Replaces, in xml, each <disk> whose target is one of targets[0..n) with
 * the <disk> element of the same target in orig_xml (unprotect: the
 * current configuration with the original disks put back).  Returns 0 and
 * *out, RW_ENOTFOUND, RW_EPARSE, -ENOMEM.
 */
int vm_xml_restore_disks(const char *xml, const char *orig_xml,
			 const char *const *targets, int n, char **out);

/* The domain's <name> from its XML; 0 and *out, or RW_EPARSE. */
int vm_xml_name(const char *xml, char **out);

/* ------------------------------------------------------------ state */

/* One protected disk as recorded in STORE/vm/DOMAIN/disks. */
struct vm_pdisk {
	char target[VM_TARGET_MAX];
	char disk[72];          /* store disk name */
	char format[16];        /* original image format: raw or qcow2 */
	char path[4096];        /* original image */
};

struct vm_state {
	char *dir;              /* STORE/vm/DOMAIN */
	struct vm_pdisk *disks;
	int ndisks;
};

/*
 * Loads the state of domain in store.  Returns 0 and *out (vm_state_free),
 * RW_ENOTFOUND "domain 'x' is not protected in store 'y'", RW_ECORRUPT
 * for a malformed disks file, -errno.
 */
int vm_state_load(const char *store, const char *domain, struct vm_state **out);
void vm_state_free(struct vm_state *st);

/*
 * Creates STORE/vm/DOMAIN with original.xml and the disks file.  Returns 0,
 * RW_EEXIST when the domain is already protected, -errno.
 */
int vm_state_create(const char *store, const char *domain,
		    const char *orig_xml, const struct vm_pdisk *disks, int n);

/* Path of STORE/vm/DOMAIN (malloc'ed); NULL on ENOMEM. */
char *vm_state_dir(const char *store, const char *domain);

/*
 * Records xml as the domain's configuration from ts_ns on
 * (xml/<ts_ns>.xml), unless it equals the newest version already recorded
 * at or before ts_ns.  Returns 0 or -errno.
 */
int vm_state_xml_put(const char *dir, uint64_t ts_ns, const char *xml);

/*
 * The configuration in force at ts_ns: the newest version recorded at or
 * before it.  Returns 0 and *xml (malloc'ed) and *ver_ns,
 * RW_ENOTFOUND when none is that old, -errno.
 */
int vm_state_xml_at(const char *dir, uint64_t ts_ns, char **xml,
		    uint64_t *ver_ns);

/* Reads / writes the undo point (the moment before the last rollback). */
int vm_state_undo_get(const char *dir, uint64_t *ts_ns);
int vm_state_undo_put(const char *dir, uint64_t ts_ns);

/*
 * Moves STORE/vm/DOMAIN aside to STORE/vm/DOMAIN.unprotected-<ns> (kept
 * for reference: the store's disks and history stay).  0 or -errno.
 */
int vm_state_retire(const char *store, const char *domain, uint64_t now_ns);

/* Reads a whole small file; 0 and *out (malloc'ed, NUL-terminated) or -errno. */
int vm_file_read(const char *path, char **out);
/* Writes data to path atomically (tmp, fsync, rename).  0 or -errno. */
int vm_file_write(const char *path, const char *data, size_t len);

/* ------------------------------------------------------------ images */

/*
 * Converts image src of format fmt to a raw image dst with
 * `qemu-img convert -O raw` (dst is replaced).  Returns 0, or RW_EFAILED
 * with qemu-img's own message.
 */
int vm_image_to_raw(const char *src, const char *fmt, const char *dst);

/*
 * Writes raw image src into the existing image dst of format fmt with
 * `qemu-img convert -n` (dst keeps its format, size and backing file
 * setting; every byte of its contents becomes src's).  0 or RW_EFAILED.
 */
int vm_image_from_raw(const char *src, const char *dst, const char *fmt);

/* ------------------------------------------------------------ libvirt */

struct vm_conn;

enum vm_dom_state { VM_DOM_OFF, VM_DOM_RUNNING, VM_DOM_OTHER };

/*
 * Connects to uri (NULL: libvirt's default).  Returns 0 and *out, or
 * RW_EFAILED "cannot connect to libvirt at 'uri': <libvirt's reason>".
 */
int vm_conn_open(struct vm_conn **out, const char *uri);
void vm_conn_close(struct vm_conn *c);

/*
 * Domain lookups and actions by name.  Each returns 0 or RW_ENOTFOUND
 * ("no domain 'x' at 'uri'") / RW_EFAILED with libvirt's message.
 */
int vm_dom_state(struct vm_conn *c, const char *dom, enum vm_dom_state *st,
		 char *desc, size_t descsz);
/* Inactive (persistent) XML, secure info included; *xml malloc'ed. */
int vm_dom_xml(struct vm_conn *c, const char *dom, char **xml);
int vm_dom_define(struct vm_conn *c, const char *xml);
int vm_dom_start(struct vm_conn *c, const char *dom);
int vm_dom_destroy(struct vm_conn *c, const char *dom);
/*
 * Asks the guest to shut down (ACPI) and waits up to timeout_ms for the
 * domain to be off.  Returns 0, -ETIMEDOUT (still running), or error.
 */
int vm_dom_shutdown_wait(struct vm_conn *c, const char *dom,
			 uint64_t timeout_ms);

/* The live XML of a running domain (secure info included); *xml malloc'ed. */
int vm_dom_live_xml(struct vm_conn *c, const char *dom, char **xml);

/* The guest-visible size of disk target of a running domain.  0 or error. */
int vm_dom_disk_size(struct vm_conn *c, const char *dom, const char *target,
		     uint64_t *bytes);

/*
 * Live protection of one disk: starts a block copy of disk target onto
 * dest_xml (an existing destination of the same size: REUSE_EXT) with
 * SYNCHRONOUS_WRITES (once ready, every guest write completes on both
 * sides) as a TRANSIENT_JOB (allowed on persistent domains; the persistent
 * configuration is not changed by libvirt), waits up to timeout_ms for it
 * to be ready and pivots the domain onto the destination.  Returns 0 (the
 * domain now runs on dest), -ETIMEDOUT (copy cancelled, domain unchanged),
 * or RW_EFAILED with libvirt's message.
 */
int vm_dom_block_copy_pivot(struct vm_conn *c, const char *dom,
			    const char *target, const char *dest_xml,
			    uint64_t timeout_ms);

#endif /* RW_VM_H */
