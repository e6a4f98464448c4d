/* fuzz_util.c - scratch files for the libFuzzer harnesses (fuzz_util.h). */
#include "fuzz_util.h"

#include <dirent.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* One directory per harness process; the harness is the only user of this state. */
static char scratch[256];

static void remove_scratch(void) {
    if (scratch[0] == '\0') return;
    fz_clear();
    rmdir(scratch);
}

const char *fz_dir(void) {
    if (scratch[0] != '\0') return scratch;
    /* tests/fuzz/run names a directory it removes itself, so that nothing is left behind when a
     * finding kills the process before atexit runs. */
    struct stat st;
    const char *base = getenv("AUXPS_FUZZ_SCRATCH");
    if (base == NULL || base[0] == '\0')
        base = stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) ? "/dev/shm" : "/tmp";
    snprintf(scratch, sizeof scratch, "%s/auxps-fuzz-XXXXXX", base);
    if (mkdtemp(scratch) == NULL) {
        perror("fuzz: mkdtemp");
        abort();
    }
    atexit(remove_scratch);
    return scratch;
}

void fz_write(char path[4096], const char *name, const void *data, size_t size) {
    snprintf(path, 4096, "%s/%s", fz_dir(), name);
    FILE *f = fopen(path, "wb");
    if (f == NULL || (size > 0 && fwrite(data, 1, size, f) != size) || fclose(f) != 0) {
        perror(path);
        abort();
    }
}

void fz_clear(void) {
    DIR *d = opendir(fz_dir());
    if (d == NULL) return;
    struct dirent *e;
    char path[4096];
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
        snprintf(path, sizeof path, "%s/%s", scratch, e->d_name);
        unlink(path);
    }
    closedir(d);
}

uint32_t fz_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

void fz_put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}
