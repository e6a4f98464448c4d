/* ckpt.c - writer, rotator and reader of checkpoint files (docs/CHECKPOINT.md).
 *
 * Names are canonical (a fixed 20-digit step), so a file belongs to a prefix exactly when its
 * name parses back to that prefix, and every name is rebuilt from its step instead of being
 * kept. The reader checks a file's real size before it reads a length from it, so the only
 * allocation, the payload, is bounded by the bytes on disk and by CKPT_MAX_PAYLOAD. */
#include "ckpt.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zlib.h>

/* Byte offsets of the header fields (docs/CHECKPOINT.md, "Layout"). */
enum {
    H_MAGIC = 0,
    H_VERSION = 8,
    H_KIND = 12,
    H_STEP = 16,
    H_TIME = 24,
    H_SIZE = 32,
    H_END = 40,
};

enum { STEP_DIGITS = 20, LIST_ATTEMPTS = 3 };

_Static_assert(H_END == CKPT_HEADER_BYTES, "header layout and CKPT_HEADER_BYTES disagree");
_Static_assert(sizeof CKPT_MAGIC - 1 == H_VERSION - H_MAGIC, "the magic is 8 bytes");
_Static_assert(CKPT_TRAILER_BYTES == 4, "the trailer is one u32");
_Static_assert(CKPT_MAX_PAYLOAD <= UINT_MAX, "zlib's crc32 takes the length as uInt");
_Static_assert((uint64_t)CKPT_MAX_PAYLOAD + CKPT_HEADER_BYTES + CKPT_TRAILER_BYTES <= SIZE_MAX,
               "a whole file fits in size_t");
/* "<prefix>-<20 digits>.ckpt.tmp" must fit in a directory entry name. */
_Static_assert(CKPT_PREFIX_MAX + 1 + STEP_DIGITS + sizeof ".ckpt.tmp" <= 256, "file names fit NAME_MAX");

/* ---- little-endian fields ---- */

static void put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static void put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i));
}

static uint32_t get_u32(const uint8_t *p) {
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get_u64(const uint8_t *p) {
    return (uint64_t)get_u32(p) | (uint64_t)get_u32(p + 4) << 32;
}

/* zlib's crc32 returns 0 for a NULL buffer (its way of starting a CRC), so an empty payload
 * must not be passed to it. */
static uint32_t crc_add(uint32_t crc, const void *p, size_t n) {
    return n ? (uint32_t)crc32(crc, (const Bytef *)p, (uInt)n) : crc;
}

/* ---- names ---- */

static int check_args(const char *dir, const char *prefix, auxps_error_t *err) {
    if (dir == NULL || dir[0] == '\0')
        return auxps_error_set(err, AUXPS_EINVAL, "checkpoint: NULL or empty directory");
    if (prefix == NULL || prefix[0] == '\0')
        return auxps_error_set(err, AUXPS_EINVAL, "%s: NULL or empty checkpoint prefix", dir);
    const size_t n = strlen(prefix);
    if (n > CKPT_PREFIX_MAX)
        return auxps_error_set(err, AUXPS_EINVAL, "%s: checkpoint prefix of %zu bytes; the limit is %d",
                               dir, n, CKPT_PREFIX_MAX);
    for (size_t i = 0; i < n; i++) {
        const char c = prefix[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
              c == '_' || c == '-'))
            return auxps_error_set(err, AUXPS_EINVAL,
                                   "%s: checkpoint prefix \"%s\": byte %zu is not one of [A-Za-z0-9._-]",
                                   dir, prefix, i);
    }
    return 0;
}

/* Writes "<dir>/<prefix>-<step>.ckpt" (plus ".tmp" if tmp) into buf; -1 if it does not fit. */
static int make_name(char buf[CKPT_PATH_MAX], const char *dir, const char *prefix, uint64_t step, int tmp) {
    const int n = snprintf(buf, CKPT_PATH_MAX, "%s/%s-%020" PRIu64 ".ckpt%s", dir, prefix, step,
                           tmp ? ".tmp" : "");
    return n >= 0 && n < CKPT_PATH_MAX ? 0 : -1;
}

/* Returns 1 if name is exactly "<prefix>-<20 digits>.ckpt" (*tmp = 0) or the same followed by
 * ".tmp" (*tmp = 1), with *step the digits' value; 0 for any other name, including digits
 * beyond UINT64_MAX. */
static int parse_name(const char *name, const char *prefix, size_t plen, uint64_t *step, int *tmp) {
    if (strncmp(name, prefix, plen) != 0 || name[plen] != '-') return 0;
    const char *d = name + plen + 1;
    uint64_t s = 0;
    for (int i = 0; i < STEP_DIGITS; i++) { /* stops at the terminator, which is no digit */
        if (d[i] < '0' || d[i] > '9') return 0;
        const unsigned v = (unsigned)(d[i] - '0');
        if (s > (UINT64_MAX - v) / 10) return 0;
        s = s * 10 + v;
    }
    if (strcmp(d + STEP_DIGITS, ".ckpt") == 0) *tmp = 0;
    else if (strcmp(d + STEP_DIGITS, ".ckpt.tmp") == 0) *tmp = 1;
    else return 0;
    *step = s;
    return 1;
}

/* ---- listing ---- */

typedef struct {
    uint64_t *v;
    size_t n, cap;
} steps_t;

static int steps_push(steps_t *s, uint64_t step) {
    if (s->n == s->cap) {
        const size_t cap = s->cap ? 2 * s->cap : 16;
        uint64_t *v = realloc(s->v, cap * sizeof *v);
        if (v == NULL) return -1;
        s->v = v;
        s->cap = cap;
    }
    s->v[s->n++] = step;
    return 0;
}

static int newest_first(const void *a, const void *b) {
    const uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return (x < y) - (x > y);
}

/* Collects the steps of the prefix's checkpoints (newest first) and of its temporary files
 * (temps may be NULL). A missing dir is an empty listing. */
static int list_prefix(const char *dir, const char *prefix, steps_t *done, steps_t *temps,
                       auxps_error_t *err) {
    const size_t plen = strlen(prefix);
    DIR *d = opendir(dir);
    if (d == NULL) {
        if (errno == ENOENT) return 0;
        return auxps_error_set(err, AUXPS_EIO, "%s: cannot list the directory: %s", dir, strerror(errno));
    }
    int rc = 0;
    for (;;) {
        errno = 0;
        const struct dirent *e = readdir(d);
        if (e == NULL) {
            if (errno != 0)
                rc = auxps_error_set(err, AUXPS_EIO, "%s: cannot list the directory: %s", dir,
                                     strerror(errno));
            break;
        }
        uint64_t step;
        int tmp;
        if (!parse_name(e->d_name, prefix, plen, &step, &tmp)) continue;
        if (tmp && temps == NULL) continue;
        if (steps_push(tmp ? temps : done, step) != 0) {
            rc = auxps_error_set(err, AUXPS_ENOMEM, "%s: out of memory for the list of checkpoints", dir);
            break;
        }
    }
    closedir(d);
    if (rc == 0 && done->n > 1) qsort(done->v, done->n, sizeof *done->v, newest_first);
    return rc;
}

int ckpt_list(const char *dir, const char *prefix, uint64_t *steps, int max, auxps_error_t *err) {
    int rc;
    if ((rc = check_args(dir, prefix, err)) != 0) return rc;
    if (max < 0 || (max > 0 && steps == NULL))
        return auxps_error_set(err, AUXPS_EINVAL, "%s: ckpt_list with max %d and %s steps", dir, max,
                               steps ? "non-NULL" : "NULL");
    steps_t s = {0};
    if ((rc = list_prefix(dir, prefix, &s, NULL, err)) == 0) {
        for (size_t i = 0; i < s.n && i < (size_t)max; i++) steps[i] = s.v[i];
        rc = s.n > INT_MAX ? INT_MAX : (int)s.n;
    }
    free(s.v);
    return rc;
}

/* ---- writer ---- */

static int write_full(int fd, const void *buf, size_t n) {
    const uint8_t *p = buf;
    while (n > 0) {
        const ssize_t w = write(fd, p, n);
        if (w < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        p += w;
        n -= (size_t)w;
    }
    return 0;
}

/* Makes entries created, renamed or removed in dir durable. Returns 0 or an errno value. A file
 * system that cannot sync directories (EINVAL) has nothing more to do. */
static int sync_dir(const char *dir) {
    const int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return errno;
    const int e = fsync(fd) == 0 || errno == EINVAL ? 0 : errno;
    close(fd);
    return e;
}

/* The directory that holds dir ("." for a relative name of one component). */
static void parent_of(const char *dir, char *parent, size_t len) {
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/') n--;           /* "a/b/" is "a/b" */
    while (n > 0 && dir[n - 1] != '/') n--;           /* drop the last component */
    while (n > 1 && dir[n - 1] == '/') n--;           /* "a//b" has parent "a" */
    if (n == 0) snprintf(parent, len, ".");
    else snprintf(parent, len, "%.*s", (int)n, dir);
}

/* Creates dir and its missing parents (as mkdir -p). A newly created dir is made durable in its
 * parent, best effort: the checkpoint's own sync of dir follows, and a parent that cannot be
 * opened must not stop a node from saving. */
static int ensure_dir(const char *dir, auxps_error_t *err) {
    char parent[CKPT_PATH_MAX];
    parent_of(dir, parent, sizeof parent);
    int made = mkdir(dir, 0755) == 0;
    if (!made && errno == ENOENT && strcmp(parent, dir) != 0 && strcmp(parent, ".") != 0) {
        if (ensure_dir(parent, err) != 0) return err->code;
        made = mkdir(dir, 0755) == 0;
    }
    if (made) {
        (void)sync_dir(parent);
        return 0;
    }
    if (errno != EEXIST)
        return auxps_error_set(err, AUXPS_EIO, "%s: cannot create the checkpoint directory: %s", dir,
                               strerror(errno));
    struct stat st;
    if (stat(dir, &st) != 0)
        return auxps_error_set(err, AUXPS_EIO, "%s: cannot stat the checkpoint directory: %s", dir,
                               strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return auxps_error_set(err, AUXPS_EIO, "%s: not a directory: %s", dir, strerror(ENOTDIR));
    return 0;
}

static uint64_t unix_time_ms(void) {
    struct timespec ts;
    if (clock_gettime(CLOCK_REALTIME, &ts) != 0 || ts.tv_sec < 0) return 0;
    return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* Removes the prefix's checkpoints above step, the oldest beyond keep, and its temporary files;
 * written is the file just committed, for the messages. Every removal is tried; the first
 * failure is returned. */
static int rotate(const char *dir, const char *prefix, uint64_t step, int keep, const char *written,
                  auxps_error_t *err) {
    steps_t done = {0}, temps = {0};
    char path[CKPT_PATH_MAX];
    int rc, removed = 0;
    if ((rc = list_prefix(dir, prefix, &done, &temps, err)) != 0) {
        char why[sizeof err->msg];
        snprintf(why, sizeof why, "%s", err ? err->msg : "");
        rc = auxps_error_set(err, rc, "%s was written, but rotation failed: %s", written, why);
        goto fail;
    }
    size_t kept = 0;
    for (size_t i = 0; i < done.n + temps.n; i++) {
        const int tmp = i >= done.n;
        const uint64_t s = tmp ? temps.v[i - done.n] : done.v[i];
        if (!tmp && s <= step && kept < (size_t)keep) {
            kept++;
            continue;
        }
        if (make_name(path, dir, prefix, s, tmp) != 0) continue; /* longer than the one written */
        if (unlink(path) == 0) removed++;
        else if (errno != ENOENT && rc == 0)
            rc = auxps_error_set(err, AUXPS_EIO, "%s was written, but rotation cannot remove %s: %s",
                                 written, path, strerror(errno));
    }
    int e;
    if (removed && (e = sync_dir(dir)) != 0 && rc == 0)
        rc = auxps_error_set(err, AUXPS_EIO, "%s was written, but %s cannot be synced after rotation: %s",
                             written, dir, strerror(e));

fail:
    free(done.v);
    free(temps.v);
    return rc;
}

int ckpt_write(const char *dir, const char *prefix, uint32_t kind, uint64_t step,
               const void *payload, size_t size, int keep, auxps_error_t *err) {
    char path[CKPT_PATH_MAX], tmp[CKPT_PATH_MAX];
    uint8_t head[CKPT_HEADER_BYTES], tail[CKPT_TRAILER_BYTES];
    int rc, fd = -1, tmp_made = 0;

    if ((rc = check_args(dir, prefix, err)) != 0) return rc;
    if (keep < 1 || keep > CKPT_MAX_KEEP)
        return auxps_error_set(err, AUXPS_EINVAL, "%s: keep %d out of range 1..%d", dir, keep, CKPT_MAX_KEEP);
    if (payload == NULL && size > 0)
        return auxps_error_set(err, AUXPS_EINVAL, "%s: NULL payload of %zu bytes", dir, size);
    if (make_name(path, dir, prefix, step, 0) != 0 || make_name(tmp, dir, prefix, step, 1) != 0)
        return auxps_error_set(err, AUXPS_EINVAL, "%s: checkpoint path longer than %d bytes", dir,
                               CKPT_PATH_MAX - 1);
    if (size > CKPT_MAX_PAYLOAD)
        return auxps_error_set(err, AUXPS_ERANGE, "%s: payload of %zu bytes; the limit is %u", path, size,
                               CKPT_MAX_PAYLOAD);
    if ((rc = ensure_dir(dir, err)) != 0) return rc;

    memcpy(head + H_MAGIC, CKPT_MAGIC, H_VERSION - H_MAGIC);
    put_u32(head + H_VERSION, CKPT_VERSION);
    put_u32(head + H_KIND, kind);
    put_u64(head + H_STEP, step);
    put_u64(head + H_TIME, unix_time_ms());
    put_u64(head + H_SIZE, size);
    uint32_t crc = crc_add((uint32_t)crc32(0L, Z_NULL, 0), head, sizeof head);
    put_u32(tail, crc_add(crc, payload, size));

    /* O_NOFOLLOW: a symlink planted at the temporary name must not redirect the write. */
    if ((fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0644)) < 0) {
        rc = auxps_error_set(err, AUXPS_EIO, "%s: cannot create: %s", tmp, strerror(errno));
        goto fail;
    }
    tmp_made = 1;
    if (write_full(fd, head, sizeof head) != 0 || write_full(fd, payload, size) != 0 ||
        write_full(fd, tail, sizeof tail) != 0 || fsync(fd) != 0) {
        rc = auxps_error_set(err, AUXPS_EIO, "%s: cannot write: %s", tmp, strerror(errno));
        goto fail;
    }
    const int closed = close(fd);
    fd = -1;
    if (closed != 0) {
        rc = auxps_error_set(err, AUXPS_EIO, "%s: cannot write: %s", tmp, strerror(errno));
        goto fail;
    }
    if (rename(tmp, path) != 0) {
        rc = auxps_error_set(err, AUXPS_EIO, "%s: cannot rename %s onto it: %s", path, tmp, strerror(errno));
        goto fail;
    }
    tmp_made = 0;

    /* Committed. Rotation waits for the directory sync: until the new name is durable the old
     * checkpoints are the ones a crash would leave. */
    const int e = sync_dir(dir);
    if (e != 0)
        return auxps_error_set(err, AUXPS_EIO, "%s was written, but %s cannot be synced: %s", path, dir,
                               strerror(e));
    return rotate(dir, prefix, step, keep, path, err);

fail:
    if (fd >= 0) close(fd);
    if (tmp_made) unlink(tmp);
    return rc;
}

/* ---- reader ---- */

/* Reads up to n bytes; returns the count (short only at end of file) or -1 on an error. */
static ssize_t read_full(int fd, void *buf, size_t n) {
    uint8_t *p = buf;
    size_t got = 0;
    while (got < n) {
        const ssize_t r = read(fd, p + got, n - got);
        if (r < 0) {
            if (errno == EINTR) continue;
            return -1;
        }
        if (r == 0) break;
        got += (size_t)r;
    }
    return (ssize_t)got;
}

/* Outcomes of load_one besides 0 (loaded). */
enum { ONE_BAD = 1, ONE_GONE = 2 };

/* Loads and verifies one file into ck. Returns 0; ONE_BAD with *code and reason set when the
 * content is rejected; ONE_GONE when the file vanished after the listing (rotation by a
 * concurrent writer); or a negative code with err set on an I/O or memory error. */
static int load_one(const char *path, uint64_t want_step, uint32_t kind, ckpt_t *ck, int *code,
                    char *reason, size_t rlen, auxps_error_t *err) {
    uint8_t head[CKPT_HEADER_BYTES], tail[CKPT_TRAILER_BYTES];
    uint8_t *payload = NULL;
    struct stat st;
    int rc = ONE_BAD;
    ssize_t got;

    /* O_NONBLOCK: opening a FIFO planted under a checkpoint's name must not hang; it is rejected
     * below as not a regular file. The flag changes nothing for regular files. */
    const int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
        if (errno == ENOENT) return ONE_GONE;
        return auxps_error_set(err, AUXPS_EIO, "%s: cannot open: %s", path, strerror(errno));
    }
    if (fstat(fd, &st) != 0) {
        rc = auxps_error_set(err, AUXPS_EIO, "%s: cannot stat: %s", path, strerror(errno));
        goto fail;
    }
    *code = AUXPS_EFORMAT;
    const uint64_t min = CKPT_HEADER_BYTES + CKPT_TRAILER_BYTES;
    if (!S_ISREG(st.st_mode)) {
        snprintf(reason, rlen, "not a regular file");
        goto fail;
    }
    if ((uint64_t)st.st_size < min) {
        snprintf(reason, rlen, "truncated: %lld bytes, shorter than the %" PRIu64 "-byte minimum",
                 (long long)st.st_size, min);
        goto fail;
    }
    const uint64_t real = (uint64_t)st.st_size - min; /* the payload size the file has room for */
    if (real > CKPT_MAX_PAYLOAD) {
        snprintf(reason, rlen, "too large: %lld bytes, more than a %u-byte payload needs",
                 (long long)st.st_size, CKPT_MAX_PAYLOAD);
        goto fail;
    }
    if ((got = read_full(fd, head, sizeof head)) < 0) {
        rc = auxps_error_set(err, AUXPS_EIO, "%s: cannot read: %s", path, strerror(errno));
        goto fail;
    }
    if ((size_t)got < sizeof head) {
        snprintf(reason, rlen, "truncated: the file shrank while being read");
        goto fail;
    }
    if (memcmp(head + H_MAGIC, CKPT_MAGIC, H_VERSION - H_MAGIC) != 0) {
        snprintf(reason, rlen, "bad magic: not an AuxPS checkpoint (which starts with \"%s\")", CKPT_MAGIC);
        goto fail;
    }
    const uint32_t version = get_u32(head + H_VERSION);
    if (version != CKPT_VERSION) {
        *code = AUXPS_EVERSION;
        snprintf(reason, rlen, "unsupported version: format version %u; this build reads version %d",
                 (unsigned)version, CKPT_VERSION);
        goto fail;
    }
    const uint64_t stated = get_u64(head + H_SIZE);
    if (stated != real) {
        snprintf(reason, rlen, "%s: the header says a %" PRIu64 "-byte payload, the file has room for %" PRIu64,
                 stated > real ? "truncated" : "unexpected trailing bytes", stated, real);
        goto fail;
    }

    /* The size is the file's own, checked above; only now is it allocated. */
    const size_t size = (size_t)real;
    if ((payload = malloc(size ? size : 1)) == NULL) {
        rc = auxps_error_set(err, AUXPS_ENOMEM, "%s: out of memory for a %zu-byte payload", path, size);
        goto fail;
    }
    got = read_full(fd, payload, size);
    const ssize_t got_tail = got == (ssize_t)size ? read_full(fd, tail, sizeof tail) : 0;
    if (got < 0 || got_tail < 0) {
        rc = auxps_error_set(err, AUXPS_EIO, "%s: cannot read: %s", path, strerror(errno));
        goto fail;
    }
    if (got != (ssize_t)size || got_tail != (ssize_t)sizeof tail) {
        snprintf(reason, rlen, "truncated: the file shrank while being read");
        goto fail;
    }
    const uint32_t want = get_u32(tail);
    const uint32_t crc = crc_add(crc_add((uint32_t)crc32(0L, Z_NULL, 0), head, sizeof head), payload, size);
    if (crc != want) {
        *code = AUXPS_ECHECKSUM;
        snprintf(reason, rlen, "checksum mismatch: CRC-32 of the contents is 0x%08x but the file stores 0x%08x",
                 (unsigned)crc, (unsigned)want);
        goto fail;
    }
    /* Kind and step come after the CRC so that a corrupt header reads as corruption, not as a
     * misplaced file. */
    const uint32_t fkind = get_u32(head + H_KIND);
    if (fkind != kind) {
        snprintf(reason, rlen, "wrong kind: the file holds kind %u, the caller wants kind %u", (unsigned)fkind,
                 (unsigned)kind);
        goto fail;
    }
    const uint64_t fstep = get_u64(head + H_STEP);
    if (fstep != want_step) {
        snprintf(reason, rlen, "step mismatch: the header says step %" PRIu64 ", the name says %" PRIu64, fstep,
                 want_step);
        goto fail;
    }

    close(fd);
    ck->step = fstep;
    ck->time_ms = get_u64(head + H_TIME);
    ck->payload = payload;
    ck->size = size;
    return 0;

fail:
    close(fd);
    free(payload);
    return rc;
}

int ckpt_load_newest(const char *dir, const char *prefix, uint32_t kind, ckpt_t *out,
                     ckpt_report_fn report, void *data, auxps_error_t *err) {
    char path[CKPT_PATH_MAX], reason[256], first[256];
    steps_t s = {0};
    int rc;

    if (out == NULL) return auxps_error_set(err, AUXPS_EINVAL, "checkpoint: NULL output of ckpt_load_newest");
    memset(out, 0, sizeof *out);
    if ((rc = check_args(dir, prefix, err)) != 0) return rc;
    /* Every name of the prefix has the same length, so one check covers them all. */
    if (make_name(path, dir, prefix, 0, 0) != 0)
        return auxps_error_set(err, AUXPS_EINVAL, "%s: checkpoint path longer than %d bytes", dir,
                               CKPT_PATH_MAX - 1);

    /* A file that vanished was rotated away by a writer that has just committed a newer one,
     * so when nothing loads and something vanished the directory is listed again (and a file
     * rejected before is reported again). */
    int rejected = 0, first_code = 0, gone = 1;
    uint64_t first_step = 0;
    for (int attempt = 0; attempt < LIST_ATTEMPTS && gone; attempt++) {
        s.n = 0;
        rejected = 0;
        gone = 0;
        if ((rc = list_prefix(dir, prefix, &s, NULL, err)) != 0) goto done;
        for (size_t i = 0; i < s.n; i++) {
            int code = 0;
            (void)make_name(path, dir, prefix, s.v[i], 0);
            rc = load_one(path, s.v[i], kind, out, &code, reason, sizeof reason, err);
            if (rc < 0) goto done;
            if (rc == 0) {
                memcpy(out->path, path, sizeof path);
                goto done;
            }
            if (rc == ONE_GONE) {
                gone = 1;
                continue;
            }
            if (rejected++ == 0) {
                first_code = code;
                first_step = s.v[i];
                snprintf(first, sizeof first, "%s", reason);
            }
            if (report != NULL) report(data, path, reason);
        }
    }
    if (rejected == 0) {
        rc = CKPT_NONE;
        goto done;
    }
    (void)make_name(path, dir, prefix, first_step, 0);
    rc = auxps_error_set(err, first_code,
                         "%s: all %d checkpoint%s of prefix %s were rejected; the newest, %s: %s", dir,
                         rejected, rejected == 1 ? "" : "s", prefix, path, first);

done:
    free(s.v);
    if (rc != 0) memset(out, 0, sizeof *out);
    return rc;
}

void ckpt_release(ckpt_t *ck) {
    if (ck == NULL) return;
    free(ck->payload);
    memset(ck, 0, sizeof *ck);
}

void ckpt_put_u64(unsigned char *p, uint64_t v) { put_u64(p, v); }

uint64_t ckpt_get_u64(const unsigned char *p) { return get_u64(p); }
