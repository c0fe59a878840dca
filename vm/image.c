/*
 * image.c — qcow2 (and raw) images in and out of a store through
 * `qemu-img convert`, run as a child process.
 *
 * qemu-img is the one tool that reads every qcow2 feature (compression,
 * encryption headers, backing chains, extended L2) correctly; linking a
 * qcow2 reader of our own would be a second, less tested implementation
 * of the format.  Its output goes to a pipe and becomes the error detail:
 * library code does not print.
 */
#include "vm/vm.h"
#include "common/rw.h"

#include <errno.h>
#include <fcntl.h>
#include <spawn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

static int run_qemu_img(const char *const argv[], const char *what)
{
	int pfd[2];
	posix_spawn_file_actions_t fa;
	pid_t pid;
	char out[1024];
	size_t got = 0;
	int err, status;

	if (pipe2(pfd, O_CLOEXEC))
		return rw_err_set(-errno, "%s: pipe: %s", what, strerror(errno));
	posix_spawn_file_actions_init(&fa);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], 1);
	posix_spawn_file_actions_adddup2(&fa, pfd[1], 2);
	posix_spawn_file_actions_addopen(&fa, 0, "/dev/null", O_RDONLY, 0);
	err = posix_spawnp(&pid, "qemu-img", &fa, NULL,
			   (char *const *)(uintptr_t)argv, environ);
	posix_spawn_file_actions_destroy(&fa);
	close(pfd[1]);
	if (err) {
		close(pfd[0]);
		return rw_err_set(RW_EFAILED, "%s: cannot run qemu-img: %s "
				  "(install qemu-utils)", what, strerror(err));
	}
	for (;;) {
		char tmp[512];
		ssize_t r = read(pfd[0], tmp, sizeof(tmp));
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		for (ssize_t i = 0; i < r && got + 1 < sizeof(out); i++)
			out[got++] = tmp[i];
	}
	out[got] = '\0';
	close(pfd[0]);
	while (waitpid(pid, &status, 0) < 0)
		if (errno != EINTR)
			return rw_err_set(-errno, "%s: waitpid", what);
	if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
		return 0;
	while (got && (out[got - 1] == '\n' || out[got - 1] == '\r'))
		out[--got] = '\0';
	return rw_err_set(RW_EFAILED, "%s: qemu-img failed: %s", what,
			  got ? out : "(no output)");
}

int vm_image_to_raw(const char *src, const char *fmt, const char *dst)
{
	char what[4200];
	const char *const argv[] = { "qemu-img", "convert", "-f", fmt, "-O", "raw",
			 "-S", "4k", src, dst, NULL };

	snprintf(what, sizeof(what), "cannot convert '%s' (%s) to raw", src, fmt);
	return run_qemu_img(argv, what);
}

int vm_image_from_raw(const char *src, const char *dst, const char *fmt)
{
	char what[4200];
	const char *const argv[] = { "qemu-img", "convert", "-n", "-f", "raw", "-O",
			 fmt, src, dst, NULL };

	snprintf(what, sizeof(what), "cannot write '%s' back into '%s' (%s)",
		 src, dst, fmt);
	return run_qemu_img(argv, what);
}
