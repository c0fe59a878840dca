/*
 * state.c — what a store remembers about a protected domain, in
 * STORE/vm/DOMAIN/:
 *
 *   original.xml   the inactive domain XML before protect (unprotect puts
 *                  its <disk> elements back)
 *   disks          "TARGET\tSTORE-DISK\tFORMAT\tORIGINAL-PATH\n" per disk
 *   xml/T.xml      the domain XML in force from time T (20-digit ns) on
 *   undo           "T\n": the moment just before the last rollback
 *
 * Plain text files, each replaced atomically (tmp + fsync + rename), so a
 * person can read them and a crash leaves one version or the other.
 * Rejected alternative: keeping this in the LMDB index.  The index is
 * derived from the journals and rebuildable; VM configuration is not
 * journaled, and putting it there would make `rewind reindex` lossy.
 */
#include "vm/vm.h"
#include "common/rw.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

char *vm_state_dir(const char *store, const char *domain)
{
	char *p = NULL;

	if (asprintf(&p, "%s/vm/%s", store, domain) < 0)
		return NULL;
	return p;
}

int vm_file_read(const char *path, char **out)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	struct stat st;
	char *buf = NULL;

	*out = NULL;
	if (fd < 0)
		return rw_err_set(-errno, "cannot open '%s': %s", path,
				  strerror(errno));
	if (fstat(fd, &st) || st.st_size > 64 * 1024 * 1024) {
		int e = errno ? -errno : -EFBIG;
		close(fd);
		return rw_err_set(e, "cannot read '%s': %s", path, strerror(-e));
	}
	if (!(buf = malloc((size_t)st.st_size + 1))) {
		close(fd);
		return -ENOMEM;
	}
	size_t got = 0;
	while (got < (size_t)st.st_size) {
		ssize_t r = read(fd, buf + got, (size_t)st.st_size - got);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		got += (size_t)r;
	}
	close(fd);
	buf[got] = '\0';
	*out = buf;
	return 0;
}

int vm_file_write(const char *path, const char *data, size_t len)
{
	char tmp[4200];
	int fd, err = 0;

	if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp))
		return rw_err_set(-ENAMETOOLONG, "path too long: '%s'", path);
	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
	if (fd < 0)
		return rw_err_set(-errno, "cannot create '%s': %s", tmp,
				  strerror(errno));
	size_t done = 0;
	while (done < len) {
		ssize_t w = write(fd, data + done, len - done);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0) {
			err = -(w < 0 ? errno : EIO);
			break;
		}
		done += (size_t)w;
	}
	if (!err && fsync(fd))
		err = -errno;
	close(fd);
	if (!err && rename(tmp, path))
		err = -errno;
	if (err) {
		unlink(tmp);
		return rw_err_set(err, "cannot write '%s': %s", path, strerror(-err));
	}
	/* the rename itself must survive a crash */
	char *dir = strdup(path);
	if (dir) {
		char *slash = strrchr(dir, '/');
		if (slash) {
			*slash = '\0';
			int dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
			if (dfd >= 0) {
				fsync(dfd);
				close(dfd);
			}
		}
		free(dir);
	}
	return 0;
}

static int mkdir_p1(const char *p)
{
	if (mkdir(p, 0755) && errno != EEXIST)
		return rw_err_set(-errno, "cannot create '%s': %s", p,
				  strerror(errno));
	return 0;
}

int vm_state_create(const char *store, const char *domain,
		    const char *orig_xml, const struct vm_pdisk *disks, int n)
{
	char p[4200];
	char *dir = vm_state_dir(store, domain);
	char *list = NULL;
	size_t llen = 0;
	FILE *m = NULL;
	int err;

	if (!dir)
		return -ENOMEM;
	snprintf(p, sizeof(p), "%s/vm", store);
	if ((err = mkdir_p1(p)))
		goto out;
	snprintf(p, sizeof(p), "%s/disks", dir);
	if (!access(p, F_OK)) {
		err = rw_err_set(RW_EEXIST, "domain '%s' is already protected in "
				 "store '%s' (see %s)", domain, store, dir);
		goto out;
	}
	if ((err = mkdir_p1(dir)))
		goto out;
	snprintf(p, sizeof(p), "%s/xml", dir);
	if ((err = mkdir_p1(p)))
		goto out;
	snprintf(p, sizeof(p), "%s/original.xml", dir);
	if ((err = vm_file_write(p, orig_xml, strlen(orig_xml))))
		goto out;
	if (!(m = open_memstream(&list, &llen))) {
		err = -ENOMEM;
		goto out;
	}
	for (int i = 0; i < n; i++)
		fprintf(m, "%s\t%s\t%s\t%s\n", disks[i].target, disks[i].disk,
			disks[i].format, disks[i].path);
	fclose(m);
	/* the disks file last: its presence means "protected" */
	snprintf(p, sizeof(p), "%s/disks", dir);
	err = vm_file_write(p, list, llen);
out:
	free(list);
	free(dir);
	return err;
}

void vm_state_free(struct vm_state *st)
{
	if (!st)
		return;
	free(st->dir);
	free(st->disks);
	free(st);
}

static int field(char **p, char *buf, size_t sz, char end)
{
	char *e = strchr(*p, end);

	if (!e || (size_t)(e - *p) >= sz || e == *p)
		return -1;
	memcpy(buf, *p, (size_t)(e - *p));
	buf[e - *p] = '\0';
	*p = e + 1;
	return 0;
}

int vm_state_load(const char *store, const char *domain, struct vm_state **out)
{
	struct vm_state *st = calloc(1, sizeof(*st));
	char p[4200];
	char *text = NULL;
	int err;

	*out = NULL;
	if (!st || !(st->dir = vm_state_dir(store, domain))) {
		err = -ENOMEM;
		goto out;
	}
	snprintf(p, sizeof(p), "%s/disks", st->dir);
	if (access(p, F_OK)) {
		err = rw_err_set(RW_ENOTFOUND, "domain '%s' is not protected in "
				 "store '%s' (run `rewind vm protect %s`)",
				 domain, store, domain);
		goto out;
	}
	if ((err = vm_file_read(p, &text)))
		goto out;
	int lines = 0;
	for (char *c = text; *c; c++)
		lines += *c == '\n';
	if (!(st->disks = calloc((size_t)lines + 1, sizeof(*st->disks)))) {
		err = -ENOMEM;
		goto out;
	}
	char *c = text;
	for (int i = 0; i < lines; i++) {
		struct vm_pdisk *d = &st->disks[i];
		if (field(&c, d->target, sizeof(d->target), '\t') ||
		    field(&c, d->disk, sizeof(d->disk), '\t') ||
		    field(&c, d->format, sizeof(d->format), '\t') ||
		    field(&c, d->path, sizeof(d->path), '\n')) {
			err = rw_err_set(RW_ECORRUPT, "'%s' line %d is malformed",
					 p, i + 1);
			goto out;
		}
		st->ndisks++;
	}
	if (!st->ndisks) {
		err = rw_err_set(RW_ECORRUPT, "'%s' lists no disk", p);
		goto out;
	}
	*out = st;
	st = NULL;
	err = 0;
out:
	free(text);
	vm_state_free(st);
	return err;
}

/* Lists xml/ version times, ascending; count or error. */
static int versions(const char *dir, uint64_t **out)
{
	char p[4200];
	uint64_t *v = NULL;
	int n = 0, cap = 0;
	DIR *d;
	struct dirent *e;

	*out = NULL;
	snprintf(p, sizeof(p), "%s/xml", dir);
	if (!(d = opendir(p)))
		return rw_err_set(-errno, "cannot list '%s': %s", p, strerror(errno));
	while ((e = readdir(d))) {
		char *end;
		if (strlen(e->d_name) != 24 || strcmp(e->d_name + 20, ".xml"))
			continue;
		uint64_t t = strtoull(e->d_name, &end, 10);
		if (end != e->d_name + 20)
			continue;
		if (n == cap) {
			cap = cap ? cap * 2 : 8;
			uint64_t *nv = realloc(v, (size_t)cap * sizeof(*v));
			if (!nv) {
				free(v);
				closedir(d);
				return -ENOMEM;
			}
			v = nv;
		}
		v[n++] = t;
	}
	closedir(d);
	for (int i = 1; i < n; i++)        /* few versions: insertion sort */
		for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
			uint64_t t = v[j];
			v[j] = v[j - 1];
			v[j - 1] = t;
		}
	*out = v;
	return n;
}

int vm_state_xml_at(const char *dir, uint64_t ts_ns, char **xml,
		    uint64_t *ver_ns)
{
	uint64_t *v = NULL;
	int n = versions(dir, &v), err;

	*xml = NULL;
	if (n < 0)
		return n;
	int best = -1;
	for (int i = 0; i < n; i++)
		if (v[i] <= ts_ns)
			best = i;
	if (best < 0) {
		free(v);
		return rw_err_set(RW_ENOTFOUND, "no domain XML recorded in '%s/xml' "
				  "at or before that time", dir);
	}
	char p[4200];
	snprintf(p, sizeof(p), "%s/xml/%020" PRIu64 ".xml", dir, v[best]);
	if (ver_ns)
		*ver_ns = v[best];
	free(v);
	err = vm_file_read(p, xml);
	return err;
}

int vm_state_xml_put(const char *dir, uint64_t ts_ns, const char *xml)
{
	char *cur = NULL;
	char p[4200];
	int err = vm_state_xml_at(dir, ts_ns, &cur, NULL);

	if (!err && !strcmp(cur, xml)) {
		free(cur);
		return 0;
	}
	free(cur);
	rw_err_clear();
	snprintf(p, sizeof(p), "%s/xml/%020" PRIu64 ".xml", dir, ts_ns);
	return vm_file_write(p, xml, strlen(xml));
}

int vm_state_undo_get(const char *dir, uint64_t *ts_ns)
{
	char p[4200], *text = NULL, *end;
	int err;

	snprintf(p, sizeof(p), "%s/undo", dir);
	if (access(p, F_OK))
		return rw_err_set(RW_ENOTFOUND, "no rollback to undo (no '%s')", p);
	if ((err = vm_file_read(p, &text)))
		return err;
	*ts_ns = strtoull(text, &end, 10);
	if (end == text || (*end && *end != '\n'))
		err = rw_err_set(RW_ECORRUPT, "'%s' is malformed", p);
	free(text);
	return err;
}

int vm_state_undo_put(const char *dir, uint64_t ts_ns)
{
	char p[4200], text[32];
	int n = snprintf(text, sizeof(text), "%" PRIu64 "\n", ts_ns);

	snprintf(p, sizeof(p), "%s/undo", dir);
	return vm_file_write(p, text, (size_t)n);
}

int vm_state_retire(const char *store, const char *domain, uint64_t now_ns)
{
	char *dir = vm_state_dir(store, domain), *to = NULL;
	int err = 0;

	if (!dir || asprintf(&to, "%s.unprotected-%" PRIu64, dir, now_ns) < 0) {
		free(dir);
		return -ENOMEM;
	}
	if (rename(dir, to))
		err = rw_err_set(-errno, "cannot rename '%s' to '%s': %s", dir, to,
				 strerror(errno));
	free(to);
	free(dir);
	return err;
}
