/*
 * test_vm.c — vm/: domain XML disks, protectability, the protected XML,
 * per-domain state, and the libvirt wrappers against libvirt's in-process
 * test driver (test:///default: no daemon).
 *
 * The protected XML is defined back into the test driver, so libvirt's own
 * parser proves it is a valid NBD network disk on a unix socket.
 */
#include "common/rw.h"
#include "tests/testutil.h"
#include "vm/vm.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define URI "test:///default"

static const char *dom_xml =
	"<domain type='test'>\n"
	"  <name>rwvm</name>\n"
	"  <memory unit='KiB'>65536</memory>\n"
	"  <vcpu>1</vcpu>\n"
	"  <os><type arch='x86_64'>hvm</type></os>\n"
	"  <devices>\n"
	"    <disk type='file' device='disk'>\n"
	"      <driver name='qemu' type='raw' cache='none'/>\n"
	"      <source file='/var/lib/img/a.raw'/>\n"
	"      <target dev='vda' bus='virtio'/>\n"
	"      <boot order='1'/>\n"
	"    </disk>\n"
	"    <disk type='file' device='disk'>\n"
	"      <driver name='qemu' type='qcow2'/>\n"
	"      <source file='/var/lib/img/b.qcow2'/>\n"
	"      <target dev='vdb' bus='virtio'/>\n"
	"    </disk>\n"
	"    <disk type='block' device='disk'>\n"
	"      <driver name='qemu' type='raw'/>\n"
	"      <source dev='/dev/sdz'/>\n"
	"      <target dev='vdc' bus='virtio'/>\n"
	"    </disk>\n"
	"    <disk type='file' device='cdrom'>\n"
	"      <driver name='qemu' type='raw'/>\n"
	"      <source file='/var/lib/img/x.iso'/>\n"
	"      <target dev='hdc' bus='ide'/>\n"
	"      <readonly/>\n"
	"    </disk>\n"
	"    <disk type='network' device='disk'>\n"
	"      <driver name='qemu' type='raw'/>\n"
	"      <source protocol='nbd' name='other'>\n"
	"        <host name='10.0.0.1' port='10809'/>\n"
	"      </source>\n"
	"      <target dev='vdd' bus='virtio'/>\n"
	"    </disk>\n"
	"    <disk type='file' device='disk'>\n"
	"      <driver name='qemu' type='raw'/>\n"
	"      <source file='/var/lib/img/ro.raw'/>\n"
	"      <target dev='vde' bus='virtio'/>\n"
	"      <readonly/>\n"
	"    </disk>\n"
	"    <disk type='file' device='disk'>\n"
	"      <driver name='qemu' type='vmdk'/>\n"
	"      <source file='/var/lib/img/c.vmdk'/>\n"
	"      <target dev='vdf' bus='virtio'/>\n"
	"    </disk>\n"
	"  </devices>\n"
	"</domain>\n";

/* The disk with target t; a "(missing)" sentinel and a failure if none. */
static const struct vm_disk *find(const struct vm_disks *ds, const char *t)
{
	static struct vm_disk missing = { .target = "(missing)",
					  .source = (char *)(uintptr_t)"(missing)" };

	for (int i = 0; i < ds->n; i++)
		if (!strcmp(ds->v[i].target, t))
			return &ds->v[i];
	CU_FAIL("disk not found");
	return &missing;
}

static void test_parse_disks(void)
{
	struct vm_disks *ds = NULL;

	CU_ASSERT_EQUAL_FATAL(vm_xml_disks(dom_xml, &ds), 0);
	CU_ASSERT_EQUAL(ds->n, 7);
	const struct vm_disk *a = find(ds, "vda"), *b = find(ds, "vdb");
	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	CU_ASSERT_PTR_NOT_NULL_FATAL(b);
	CU_ASSERT_STRING_EQUAL(a->type, "file");
	CU_ASSERT_STRING_EQUAL(a->device, "disk");
	CU_ASSERT_STRING_EQUAL(a->format, "raw");
	CU_ASSERT_STRING_EQUAL(a->bus, "virtio");
	CU_ASSERT_STRING_EQUAL(a->source, "/var/lib/img/a.raw");
	CU_ASSERT_STRING_EQUAL(b->format, "qcow2");
	CU_ASSERT_STRING_EQUAL(find(ds, "vdc")->source, "/dev/sdz");
	CU_ASSERT_STRING_EQUAL(find(ds, "vdd")->source, "nbd:other");
	CU_ASSERT(find(ds, "hdc")->readonly);
	vm_disks_free(ds);
	vm_disks_free(NULL);

	CU_ASSERT_EQUAL(vm_xml_disks("<domain><devices>", &ds), RW_EPARSE);
	CU_ASSERT_PTR_NULL(ds);
	CU_ASSERT_EQUAL(vm_xml_disks("<network/>", &ds), RW_EPARSE);
	/* a domain without devices has no disks, which is not an error */
	CU_ASSERT_EQUAL_FATAL(vm_xml_disks("<domain><name>x</name></domain>", &ds), 0);
	CU_ASSERT_EQUAL(ds->n, 0);
	vm_disks_free(ds);
}

/* Each refusal names the disk and says why. */
static void test_check_refusals(void)
{
	static const struct {
		const char *target, *words;
	} cases[] = {
		{ "vdc", "disk 'vdc': type 'block'" },
		{ "hdc", "disk 'hdc': device 'cdrom'" },
		{ "vdd", "disk 'vdd': type 'network'" },
		{ "vde", "disk 'vde': read-only" },
		{ "vdf", "disk 'vdf': format 'vmdk'" },
	};
	struct vm_disks *ds = NULL;

	CU_ASSERT_EQUAL_FATAL(vm_xml_disks(dom_xml, &ds), 0);
	CU_ASSERT_EQUAL(vm_disk_check(find(ds, "vda")), 0);
	CU_ASSERT_EQUAL(vm_disk_check(find(ds, "vdb")), 0);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		CU_ASSERT_EQUAL(vm_disk_check(find(ds, cases[i].target)), -EOPNOTSUPP);
		if (!strstr(rw_err_msg(), cases[i].words)) {
			fprintf(stderr, "message '%s' lacks '%s'\n", rw_err_msg(),
				cases[i].words);
			CU_FAIL("refusal message");
		}
	}
	vm_disks_free(ds);

	struct vm_disk sh = { .target = "vdz", .type = "file", .device = "disk",
			      .source = (char *)(uintptr_t)"/x", .shareable = true };
	CU_ASSERT_EQUAL(vm_disk_check(&sh), -EOPNOTSUPP);
	CU_ASSERT_PTR_NOT_NULL(strstr(rw_err_msg(), "shareable"));
	struct vm_disk empty = { .target = "vdy", .type = "file", .device = "disk" };
	CU_ASSERT_EQUAL(vm_disk_check(&empty), -EOPNOTSUPP);
	CU_ASSERT_PTR_NOT_NULL(strstr(rw_err_msg(), "no source"));
}

static void test_names(void)
{
	char buf[80];

	CU_ASSERT_EQUAL(vm_disk_name("web1", "vda", buf, sizeof(buf)), 0);
	CU_ASSERT_STRING_EQUAL(buf, "web1-vda");
	CU_ASSERT_EQUAL(vm_disk_name("bad name", "vda", buf, sizeof(buf)), -EINVAL);
	CU_ASSERT(vm_domain_name_valid("web-1.example"));
	CU_ASSERT(!vm_domain_name_valid("a/b"));
	CU_ASSERT(!vm_domain_name_valid(".."));
	CU_ASSERT(!vm_domain_name_valid(""));
}

static void test_protect_xml(void)
{
	const char *targets[] = { "vda", "vdb" };
	const char *names[] = { "rwvm-vda", "rwvm-vdb" };
	char *out = NULL, *back = NULL;
	struct vm_disks *ds = NULL;

	CU_ASSERT_EQUAL_FATAL(vm_xml_protect(dom_xml, targets, names, 2,
					     "/s/rewind.sock", &out), 0);
	CU_ASSERT_PTR_NULL(strstr(out, "a.raw"));
	CU_ASSERT_PTR_NULL(strstr(out, "b.qcow2"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "<boot order=\"1\"/>"));
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "cache=\"none\""));
	CU_ASSERT_EQUAL_FATAL(vm_xml_disks(out, &ds), 0);
	CU_ASSERT_EQUAL(ds->n, 7);
	const struct vm_disk *a = find(ds, "vda"), *b = find(ds, "vdb");
	CU_ASSERT_STRING_EQUAL(a->type, "network");
	CU_ASSERT_STRING_EQUAL(a->source, "nbd:rwvm-vda");
	CU_ASSERT_STRING_EQUAL(a->format, "raw");
	CU_ASSERT_STRING_EQUAL(b->format, "raw");
	CU_ASSERT_STRING_EQUAL(b->source, "nbd:rwvm-vdb");
	CU_ASSERT_STRING_EQUAL(find(ds, "vdc")->type, "block");  /* untouched */
	CU_ASSERT_PTR_NOT_NULL(strstr(out, "socket=\"/s/rewind.sock\""));
	vm_disks_free(ds);

	/* and back: the original <disk> elements return */
	CU_ASSERT_EQUAL_FATAL(vm_xml_restore_disks(out, dom_xml, targets, 2,
						   &back), 0);
	CU_ASSERT_EQUAL_FATAL(vm_xml_disks(back, &ds), 0);
	CU_ASSERT_STRING_EQUAL(find(ds, "vda")->source, "/var/lib/img/a.raw");
	CU_ASSERT_STRING_EQUAL(find(ds, "vdb")->format, "qcow2");
	CU_ASSERT_PTR_NULL(strstr(back, "rewind.sock"));
	vm_disks_free(ds);
	free(back);
	free(out);

	const char *bad[] = { "vdq" };
	CU_ASSERT_EQUAL(vm_xml_protect(dom_xml, bad, names, 1, "/s", &out),
			RW_ENOTFOUND);
	CU_ASSERT_PTR_NOT_NULL(strstr(rw_err_msg(), "vdq"));
	CU_ASSERT_PTR_NULL(out);
	char *nm = NULL;
	CU_ASSERT_EQUAL(vm_xml_name(dom_xml, &nm), 0);
	CU_ASSERT_STRING_EQUAL(nm, "rwvm");
	free(nm);
}

/* The real libvirt, in process: define, read back, protect, redefine. */
static void test_libvirt_test_driver(void)
{
	struct vm_conn *c = NULL;
	char *xml = NULL, *pxml = NULL, *again = NULL;
	struct vm_disks *ds = NULL;
	enum vm_dom_state st;
	char desc[64];

	CU_ASSERT_EQUAL_FATAL(vm_conn_open(&c, URI), 0);
	CU_ASSERT_EQUAL(vm_dom_state(c, "no-such-domain", &st, desc, sizeof(desc)),
			RW_ENOTFOUND);
	CU_ASSERT_PTR_NOT_NULL(strstr(rw_err_msg(), "no-such-domain"));
	CU_ASSERT_EQUAL_FATAL(vm_dom_define(c, dom_xml), 0);
	CU_ASSERT_EQUAL(vm_dom_state(c, "rwvm", &st, desc, sizeof(desc)), 0);
	CU_ASSERT_EQUAL(st, VM_DOM_OFF);
	CU_ASSERT_STRING_EQUAL(desc, "shut off");
	CU_ASSERT_EQUAL_FATAL(vm_dom_xml(c, "rwvm", &xml), 0);
	CU_ASSERT_EQUAL_FATAL(vm_xml_disks(xml, &ds), 0);
	CU_ASSERT_EQUAL(ds->n, 7);
	CU_ASSERT_EQUAL(vm_disk_check(find(ds, "vda")), 0);
	CU_ASSERT_EQUAL(vm_disk_check(find(ds, "vdc")), -EOPNOTSUPP);
	vm_disks_free(ds);
	ds = NULL;

	const char *targets[] = { "vda" }, *names[] = { "rwvm-vda" };
	CU_ASSERT_EQUAL_FATAL(vm_xml_protect(xml, targets, names, 1,
					     "/tmp/store/rewind.sock", &pxml), 0);
	CU_ASSERT_EQUAL_FATAL(vm_dom_define(c, pxml), 0);
	CU_ASSERT_EQUAL_FATAL(vm_dom_xml(c, "rwvm", &again), 0);
	CU_ASSERT_EQUAL_FATAL(vm_xml_disks(again, &ds), 0);
	const struct vm_disk *a = find(ds, "vda");
	CU_ASSERT_PTR_NOT_NULL_FATAL(a);
	CU_ASSERT_STRING_EQUAL(a->type, "network");
	CU_ASSERT_STRING_EQUAL(a->source, "nbd:rwvm-vda");
	CU_ASSERT_PTR_NOT_NULL(strstr(again, "transport='unix'"));
	CU_ASSERT_PTR_NOT_NULL(strstr(again, "socket='/tmp/store/rewind.sock'"));
	/* libvirt now refuses it as already protected */
	CU_ASSERT_EQUAL(vm_disk_check(a), -EOPNOTSUPP);
	vm_disks_free(ds);

	/* start / shutdown / destroy through the wrappers */
	CU_ASSERT_EQUAL(vm_dom_start(c, "rwvm"), 0);
	CU_ASSERT_EQUAL(vm_dom_state(c, "rwvm", &st, NULL, 0), 0);
	CU_ASSERT_EQUAL(st, VM_DOM_RUNNING);
	CU_ASSERT_EQUAL(vm_dom_shutdown_wait(c, "rwvm", 5000), 0);
	CU_ASSERT_EQUAL(vm_dom_state(c, "rwvm", &st, NULL, 0), 0);
	CU_ASSERT_EQUAL(st, VM_DOM_OFF);
	CU_ASSERT_EQUAL(vm_dom_start(c, "rwvm"), 0);
	CU_ASSERT_EQUAL(vm_dom_destroy(c, "rwvm"), 0);
	CU_ASSERT_EQUAL(vm_dom_state(c, "rwvm", &st, NULL, 0), 0);
	CU_ASSERT_EQUAL(st, VM_DOM_OFF);

	free(again);
	free(pxml);
	free(xml);
	vm_conn_close(c);
	vm_conn_close(NULL);
}

static void test_unreachable_uri(void)
{
	struct vm_conn *c = NULL;

	CU_ASSERT_EQUAL(vm_conn_open(&c, "qemu+unix:///system?socket=/nonexistent/sock"),
			RW_EFAILED);
	CU_ASSERT_PTR_NULL(c);
	CU_ASSERT_PTR_NOT_NULL(strstr(rw_err_msg(), "cannot connect to libvirt"));
}

static void test_state(void)
{
	char *dir = tu_tmpdir("vm");
	struct vm_pdisk pd[2] = {
		{ .target = "vda", .disk = "d-vda", .format = "raw", .path = "/a b/x.raw" },
		{ .target = "vdb", .disk = "d-vdb", .format = "qcow2", .path = "/y.qcow2" },
	};
	struct vm_state *st = NULL;
	char *xml = NULL;
	uint64_t ver = 0, u = 0;

	CU_ASSERT_EQUAL(vm_state_load(dir, "d", &st), RW_ENOTFOUND);
	CU_ASSERT_EQUAL_FATAL(vm_state_create(dir, "d", "<orig/>", pd, 2), 0);
	CU_ASSERT_EQUAL(vm_state_create(dir, "d", "<orig/>", pd, 2), RW_EEXIST);
	CU_ASSERT_EQUAL_FATAL(vm_state_load(dir, "d", &st), 0);
	CU_ASSERT_EQUAL(st->ndisks, 2);
	CU_ASSERT_STRING_EQUAL(st->disks[0].path, "/a b/x.raw");
	CU_ASSERT_STRING_EQUAL(st->disks[1].format, "qcow2");
	CU_ASSERT_STRING_EQUAL(st->disks[1].disk, "d-vdb");

	/* XML versions: the one in force at T is the newest at or before T */
	CU_ASSERT_EQUAL(vm_state_xml_at(st->dir, 50, &xml, &ver), RW_ENOTFOUND);
	CU_ASSERT_EQUAL(vm_state_xml_put(st->dir, 100, "<v1/>"), 0);
	CU_ASSERT_EQUAL(vm_state_xml_put(st->dir, 200, "<v2/>"), 0);
	CU_ASSERT_EQUAL(vm_state_xml_put(st->dir, 300, "<v2/>"), 0); /* no change */
	CU_ASSERT_EQUAL(vm_state_xml_put(st->dir, 1000000000000000000ull, "<v3/>"), 0);
	CU_ASSERT_EQUAL(vm_state_xml_at(st->dir, 150, &xml, &ver), 0);
	CU_ASSERT_STRING_EQUAL(xml, "<v1/>");
	CU_ASSERT_EQUAL(ver, 100);
	free(xml);
	CU_ASSERT_EQUAL(vm_state_xml_at(st->dir, 999, &xml, &ver), 0);
	CU_ASSERT_STRING_EQUAL(xml, "<v2/>");
	CU_ASSERT_EQUAL(ver, 200);               /* 300 was not recorded */
	free(xml);
	CU_ASSERT_EQUAL(vm_state_xml_at(st->dir, UINT64_MAX, &xml, &ver), 0);
	CU_ASSERT_STRING_EQUAL(xml, "<v3/>");
	free(xml);

	CU_ASSERT_EQUAL(vm_state_undo_get(st->dir, &u), RW_ENOTFOUND);
	CU_ASSERT_EQUAL(vm_state_undo_put(st->dir, 12345), 0);
	CU_ASSERT_EQUAL(vm_state_undo_get(st->dir, &u), 0);
	CU_ASSERT_EQUAL(u, 12345);
	vm_state_free(st);
	vm_state_free(NULL);

	CU_ASSERT_EQUAL(vm_state_retire(dir, "d", 7), 0);
	CU_ASSERT_EQUAL(vm_state_load(dir, "d", &st), RW_ENOTFOUND);
	char p[4200];
	snprintf(p, sizeof(p), "%s/vm/d.unprotected-7/original.xml", dir);
	CU_ASSERT_EQUAL(access(p, F_OK), 0);

	/* a damaged disks file is corrupt, not a crash */
	CU_ASSERT_EQUAL_FATAL(vm_state_create(dir, "e", "<o/>", pd, 1), 0);
	snprintf(p, sizeof(p), "%s/vm/e/disks", dir);
	CU_ASSERT_EQUAL(vm_file_write(p, "vda\tonly-two\n", 13), 0);
	CU_ASSERT_EQUAL(vm_state_load(dir, "e", &st), RW_ECORRUPT);
	tu_rmrf(dir);
	free(dir);
}

/* qcow2 -> raw -> qcow2 through qemu-img, when it is installed. */
static void test_images(void)
{
	if (system("command -v qemu-img >/dev/null 2>&1")) {
		fprintf(stderr, "(qemu-img not installed: image test skipped) ");
		return;
	}
	char *dir = tu_tmpdir("vmimg");
	char cmd[9000], q[4200], r[4200];
	snprintf(q, sizeof(q), "%s/a.qcow2", dir);
	snprintf(r, sizeof(r), "%s/a.raw", dir);
	snprintf(cmd, sizeof(cmd), "qemu-img create -q -f qcow2 %s 1M && "
		 "qemu-io -f qcow2 -c 'write -P 0x5a 4096 4096' %s >/dev/null", q, q);
	CU_ASSERT_EQUAL_FATAL(system(cmd), 0);
	CU_ASSERT_EQUAL(vm_image_to_raw(q, "qcow2", r), 0);
	FILE *f = fopen(r, "rb");
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	unsigned char buf[8192];
	CU_ASSERT_EQUAL(fread(buf, 1, sizeof(buf), f), sizeof(buf));
	fclose(f);
	CU_ASSERT_EQUAL(buf[0], 0);
	CU_ASSERT_EQUAL(buf[4096], 0x5a);
	CU_ASSERT_EQUAL(buf[8191], 0x5a);
	/* write back changed contents into the qcow2 */
	f = fopen(r, "r+b");
	CU_ASSERT_PTR_NOT_NULL_FATAL(f);
	fputc(0x77, f);
	fclose(f);
	CU_ASSERT_EQUAL(vm_image_from_raw(r, q, "qcow2"), 0);
	snprintf(cmd, sizeof(cmd), "qemu-io -f qcow2 -c 'read -P 0x77 0 1' %s "
		 "| grep -q 'read 1/1'", q);
	CU_ASSERT_EQUAL(system(cmd), 0);
	/* a failure carries qemu-img's message */
	CU_ASSERT_EQUAL(vm_image_to_raw("/nonexistent.qcow2", "qcow2", r), RW_EFAILED);
	CU_ASSERT_PTR_NOT_NULL(strstr(rw_err_msg(), "/nonexistent.qcow2"));
	tu_rmrf(dir);
	free(dir);
}

int main(void)
{
	tu_add_suite("vm",
		     "parse disks", test_parse_disks,
		     "refusals name disk and reason", test_check_refusals,
		     "names", test_names,
		     "protected XML and back", test_protect_xml,
		     "libvirt test driver", test_libvirt_test_driver,
		     "unreachable libvirt", test_unreachable_uri,
		     "per-domain state", test_state,
		     "qcow2 through qemu-img", test_images,
		     NULL);
	return tu_run();
}
