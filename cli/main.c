/*
 * main.c — the rewind command: dispatches subcommands.
 */
#include "common/rw.h"

#include <stdio.h>
#include <string.h>

int main(int argc, char **argv)
{
	if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
		printf("usage: rewind COMMAND [ARGS]\n");
		return argc < 2 ? 2 : 0;
	}
	fprintf(stderr, "rewind: unknown command '%s' (see rewind --help)\n", argv[1]);
	return 2;
}
