/* driver.c — corpus regression runner for fuzz targets without libFuzzer.
 *
 * Usage: <target> PATH…   where each PATH is a file or a directory of files
 * (dot files are skipped). Every input is copied into a heap block of exactly
 * its size, so ASan reports any read past the end, and passed to
 * LLVMFuzzerTestOneInput; so is every proper prefix of inputs up to
 * PREFIX_MAX bytes, which checks truncated input for free. A crash or an
 * abort() in the target fails the run; a PATH without any input fails too,
 * so a misplaced corpus is noticed. */
#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define PREFIX_MAX 4096

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

static int run_bytes(const unsigned char *data, size_t n)
{
	unsigned char *copy = malloc(n ? n : 1);
	if (!copy)
		return -1;
	if (n)
		memcpy(copy, data, n);
	LLVMFuzzerTestOneInput(copy, n);
	free(copy);
	return 0;
}

/* Runs one file and its prefixes; returns the number of inputs run or -1. */
static long run_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		fprintf(stderr, "%s: %s\n", path, strerror(errno));
		return -1;
	}
	size_t cap = 4096, n = 0;
	unsigned char *buf = malloc(cap);
	size_t got;
	while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
		n += got;
		if (n == cap) {
			unsigned char *nb = realloc(buf, cap * 2);
			if (!nb) {
				free(buf);
				buf = NULL;
				break;
			}
			buf = nb;
			cap *= 2;
		}
	}
	int err = ferror(f);
	fclose(f);
	if (!buf || err) {
		fprintf(stderr, "%s: read failed\n", path);
		free(buf);
		return -1;
	}
	long runs = 0;
	if (run_bytes(buf, n) == 0)
		runs++;
	if (n <= PREFIX_MAX) {
		for (size_t k = 0; k < n; k++)
			if (run_bytes(buf, k) == 0)
				runs++;
	}
	free(buf);
	return runs;
}

static int skip_entry(const struct dirent *d)
{
	return d->d_name[0] != '.';
}

/* Runs every file of a directory in name order; returns files run or -1. */
static long run_dir(const char *dir, long *inputs)
{
	struct dirent **names;
	int n = scandir(dir, &names, skip_entry, alphasort);
	if (n < 0) {
		fprintf(stderr, "%s: %s\n", dir, strerror(errno));
		return -1;
	}
	long files = 0;
	int failed = 0;
	for (int i = 0; i < n; i++) {
		char path[4096];
		int len = snprintf(path, sizeof path, "%s/%s", dir, names[i]->d_name);
		struct stat st;
		if (!failed && len > 0 && (size_t)len < sizeof path && stat(path, &st) == 0 &&
		    S_ISREG(st.st_mode)) {
			long r = run_file(path);
			if (r < 0)
				failed = 1;
			else {
				*inputs += r;
				files++;
			}
		}
		free(names[i]);
	}
	free(names);
	return failed ? -1 : files;
}

int main(int argc, char **argv)
{
	if (LLVMFuzzerInitialize)
		LLVMFuzzerInitialize(&argc, &argv);
	if (argc < 2) {
		fprintf(stderr, "usage: %s CORPUS_DIR_OR_FILE…\n", argv[0]);
		return 2;
	}
	long files = 0, inputs = 0;
	for (int i = 1; i < argc; i++) {
		struct stat st;
		if (stat(argv[i], &st) != 0) {
			fprintf(stderr, "%s: %s\n", argv[i], strerror(errno));
			return 1;
		}
		long r;
		if (S_ISDIR(st.st_mode)) {
			r = run_dir(argv[i], &inputs);
		} else {
			long in = run_file(argv[i]);
			r = in < 0 ? -1 : 1;
			if (in > 0)
				inputs += in;
		}
		if (r < 0)
			return 1;
		if (r == 0) {
			fprintf(stderr, "%s: no inputs\n", argv[i]);
			return 1;
		}
		files += r;
	}
	printf("%s: %ld files, %ld inputs (with prefixes) ran clean\n", argv[0], files, inputs);
	return 0;
}
