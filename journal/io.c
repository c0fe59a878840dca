/*
 * io.c — the writer's back ends: io_uring, or pwritev + fdatasync.
 *
 * A batch is one contiguous buffer.  The io_uring back end cuts it into
 * write SQEs of at most 1 MiB, links them in order (IOSQE_IO_LINK) and,
 * when the caller wants durability, links an IORING_FSYNC_DATASYNC after
 * the last write, so one io_uring_enter covers write + sync.  Because the
 * chain runs in order and a short or failed write cancels the rest of it
 * (-ECANCELED), the completed part is always a prefix: the next round
 * resubmits from the first incomplete byte, and the fsync again.  Every
 * submission first asks the fault seam (rw_fault_check), and an injected
 * short write is emulated by submitting fewer bytes than the chunk, so
 * the requeue path is exercised by tests and not only by the kernel.
 *
 * Rejected alternative: one IORING_OP_WRITEV per batch.  It saves SQEs
 * but a 32 MiB record plus headers would still need splitting for the
 * chunk-sized short-write emulation, and the ordered chain gives the same
 * single syscall per batch.  Registered buffers were rejected too: the
 * batch buffers grow with the largest record, and re-registering on
 * growth costs more than it saves at 1 MiB batches.
 */
#include "journal/jr_int.h"

#include <errno.h>
#include <liburing.h>
#include <stdlib.h>
#include <string.h>

#define JR_IO_DEPTH 64u
#define JR_IO_CHUNK (1u << 20)

struct jr_io {
	bool uring;
	struct io_uring ring;
};

int jr_io_open(struct jr_io **out, enum jr_backend b)
{
	struct jr_io *io = calloc(1, sizeof(*io));
	int err = 0;

	*out = NULL;
	if (!io)
		return -ENOMEM;
	if (b != JR_BACKEND_SYNC) {
		err = io_uring_queue_init(JR_IO_DEPTH, &io->ring, 0);
		if (err == 0) {
			io->uring = true;
		} else if (b == JR_BACKEND_URING) {
			err = rw_err_set(err, "io_uring is not available: %s",
					 rw_strerror(err));
			free(io);
			return err;
		}
		err = 0;
	}
	*out = io;
	return err;
}

void jr_io_close(struct jr_io *io)
{
	if (!io)
		return;
	if (io->uring)
		io_uring_queue_exit(&io->ring);
	free(io);
}

bool jr_io_is_uring(const struct jr_io *io)
{
	return io->uring;
}

static int sync_write(int fd, const uint8_t *buf, size_t len, uint64_t off,
		      bool sync)
{
	size_t done = 0;

	while (done < len) {
		struct iovec iov = { (void *)(buf + done), len - done };
		ssize_t n = rw_sys_pwritev(fd, &iov, 1, (off_t)(off + done));
		if (n == -EINTR)
			continue;
		if (n < 0)
			return (int)n;
		if (n == 0)
			return -EIO;
		done += (size_t)n;
	}
	return sync ? rw_sys_fdatasync(fd) : 0;
}

/* Submits n prepared SQEs and reaps exactly n CQEs into res[]. */
static int uring_run(struct io_uring *ring, unsigned n, int *res)
{
	unsigned submitted = 0, reaped = 0;

	while (submitted < n) {
		int r = io_uring_submit_and_wait(ring, n - submitted);
		if (r == -EINTR)
			continue;
		if (r < 0)
			return r;
		if (r == 0)
			return -EIO;
		submitted += (unsigned)r;
	}
	while (reaped < n) {
		struct io_uring_cqe *cqe;
		int r = io_uring_wait_cqe(ring, &cqe);
		if (r == -EINTR)
			continue;
		if (r < 0)
			return r;
		uint64_t i = (uint64_t)(uintptr_t)io_uring_cqe_get_data(cqe);
		if (i < JR_IO_DEPTH)
			res[i] = cqe->res;
		io_uring_cqe_seen(ring, cqe);
		reaped++;
	}
	return 0;
}

static int uring_write(struct io_uring *ring, int fd, const uint8_t *buf,
		       size_t len, uint64_t off, bool sync)
{
	size_t done = 0;
	bool need_sync = sync;
	int err = 0;

	while (done < len || need_sync) {
		size_t want[JR_IO_DEPTH];
		int res[JR_IO_DEPTH];
		struct io_uring_sqe *last = NULL;
		unsigned n = 0;
		size_t pos = done;
		int inject = 0;
		bool with_sync = false;

		while (pos < len && n < JR_IO_DEPTH - 1) {
			size_t sb = 0;
			size_t clen = len - pos;
			if (clen > JR_IO_CHUNK)
				clen = JR_IO_CHUNK;
			inject = rw_fault_check(RW_OP_WRITE, &sb);
			if (inject)
				break;
			struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
			if (!sqe) {
				err = -EBUSY;
				goto out;
			}
			/* An injected short write submits fewer bytes. */
			io_uring_prep_write(sqe, fd, buf + pos,
					    (unsigned)(sb && sb < clen ? sb : clen),
					    off + pos);
			io_uring_sqe_set_data(sqe, (void *)(uintptr_t)n);
			sqe->flags |= IOSQE_IO_LINK;
			want[n++] = clen;
			last = sqe;
			pos += clen;
		}
		if (!inject && need_sync && pos == len) {
			inject = rw_fault_check(RW_OP_FSYNC, NULL);
			if (!inject) {
				struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
				if (!sqe) {
					err = -EBUSY;
					goto out;
				}
				io_uring_prep_fsync(sqe, fd, IORING_FSYNC_DATASYNC);
				io_uring_sqe_set_data(sqe, (void *)(uintptr_t)n);
				want[n++] = 0;
				last = sqe;
				with_sync = true;
			}
		}
		if (last)
			last->flags &= (uint8_t)~IOSQE_IO_LINK;
		for (unsigned i = 0; i < n; i++)
			res[i] = -ECANCELED;
		if (n) {
			err = uring_run(ring, n, res);
			if (err)
				goto out;
		}
		if (inject) {
			/* What was submitted before the injected failure ran;
			 * the failure itself is what the caller sees. */
			err = inject;
			goto out;
		}
		unsigned nw = with_sync ? n - 1 : n;
		bool broken = false;
		for (unsigned i = 0; i < nw && !broken; i++) {
			if (res[i] == -ECANCELED || res[i] == -EINTR ||
			    res[i] == -EAGAIN) {
				broken = true;
			} else if (res[i] < 0) {
				err = res[i];
				goto out;
			} else if (res[i] == 0) {
				err = -EIO;
				goto out;
			} else {
				done += (size_t)res[i];
				if ((size_t)res[i] < want[i])
					broken = true; /* requeue the rest */
			}
		}
		if (with_sync) {
			int r = res[n - 1];
			if (r == 0 && !broken && done == len)
				need_sync = false;
			else if (r < 0 && r != -ECANCELED && r != -EINTR &&
				 r != -EAGAIN) {
				/* Never retried into a success. */
				err = r;
				goto out;
			}
		}
	}
out:
	return err;
}

int jr_io_write(struct jr_io *io, int fd, const void *buf, size_t len,
		uint64_t off, bool sync)
{
	if (io->uring)
		return uring_write(&io->ring, fd, buf, len, off, sync);
	return sync_write(fd, buf, len, off, sync);
}
