/* data.c - IDX dataset loading through zlib, the image cache an opened dataset reads from, and
 * the batch builder with crop/flip augmentation. */
#include "data.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

enum {
    IDX_MAGIC_LABELS = 0x00000801,  /* unsigned bytes, rank 1: n */
    IDX_MAGIC_IMAGES3 = 0x00000803, /* unsigned bytes, rank 3: n, h, w */
    IDX_MAGIC_IMAGES4 = 0x00000804, /* unsigned bytes, rank 4: n, c, h, w */
};

#define BODY_FIRST_CHUNK ((size_t)1 << 20)
#define GZ_MAX_READ (1u << 30) /* gzread takes an unsigned length but returns an int */

/* An open IDX file and the shape its header declared (labels read as c = h = w = 1). */
typedef struct {
    gzFile f;
    const char *path;
    int n, c, h, w;
} idx_file_t;

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* Explains a failed or short gzread. Only an OS read error is EIO; a plain file that ends early
 * or a gzip stream that is cut (Z_BUF_ERROR) or damaged means the file itself is malformed. */
static int read_fail(const idx_file_t *x, const char *what, auxps_error_t *err) {
    int zerr = Z_OK;
    const char *zmsg = gzerror(x->f, &zerr);
    if (zerr == Z_ERRNO)
        return auxps_error_set(err, AUXPS_EIO, "%s: cannot read the %s: %s", x->path, what,
                               strerror(errno));
    if (zerr == Z_MEM_ERROR)
        return auxps_error_set(err, AUXPS_ENOMEM, "%s: out of memory while decompressing",
                               x->path);
    if (zerr != Z_OK && zerr != Z_BUF_ERROR) {
        /* zlib prefixes its message with the path, which ours already starts with. */
        size_t len = strlen(x->path);
        if (strncmp(zmsg, x->path, len) == 0 && strncmp(zmsg + len, ": ", 2) == 0) zmsg += len + 2;
        return auxps_error_set(err, AUXPS_EFORMAT, "%s: corrupt gzip data in the %s (%s)",
                               x->path, what, zmsg);
    }
    return auxps_error_set(err, AUXPS_EFORMAT, "%s: truncated: the file ends inside the %s",
                           x->path, what);
}

static int read_exact(const idx_file_t *x, void *buf, size_t len, const char *what,
                      auxps_error_t *err) {
    uint8_t *p = buf;
    while (len > 0) {
        unsigned want = len > GZ_MAX_READ ? GZ_MAX_READ : (unsigned)len;
        int got = gzread(x->f, p, want);
        if (got <= 0) return read_fail(x, what, err);
        p += got;
        len -= (size_t)got;
    }
    return 0;
}

/* Opens path and checks its IDX header against the limits in data.h. On failure x->f may still
 * be open; the caller closes it. */
static int idx_open(idx_file_t *x, const char *path, int labels, auxps_error_t *err) {
    static const char *const dim_names[2][4] = {
        {"image count", "channel count", "height", "width"},
        {"label count", "", "", ""},
    };
    x->path = path;
    errno = 0;
    x->f = gzopen(path, "rb");
    if (x->f == NULL) {
        int e = errno;
        return auxps_error_set(err, e == 0 || e == ENOMEM ? AUXPS_ENOMEM : AUXPS_EIO,
                               "%s: cannot open: %s", path, e ? strerror(e) : "out of memory");
    }
    gzbuffer(x->f, 1u << 17); /* the default 8 KiB makes decompressing 47 MB needlessly slow */

    uint8_t raw[20];
    int rc = read_exact(x, raw, 4, "header", err);
    if (rc != 0) return rc;
    uint32_t magic = be32(raw);
    int rank = magic == IDX_MAGIC_IMAGES3 ? 3 : magic == IDX_MAGIC_IMAGES4 ? 4 : 1;
    if (labels ? magic != IDX_MAGIC_LABELS : rank == 1)
        return auxps_error_set(err, AUXPS_EFORMAT,
                               "%s: bad magic 0x%08x; an IDX %s file starts with %s", path,
                               (unsigned)magic, labels ? "label" : "image",
                               labels ? "0x00000801" : "0x00000803 or 0x00000804");
    if ((rc = read_exact(x, raw + 4, 4 * (size_t)rank, "header", err)) != 0) return rc;

    /* Rank 3 images have no channel dim; slot it in as 1 so every shape reads n, c, h, w. */
    uint32_t dims[4] = {be32(raw + 4), 1, 1, 1};
    for (int i = 1; i < rank; i++) dims[i + (rank == 3)] = be32(raw + 4 + 4 * i);
    for (int i = 0; i < 4; i++) {
        uint32_t max = i == 0 ? DATA_MAX_SAMPLES : DATA_MAX_DIM;
        if (dims[i] < 1 || dims[i] > max)
            return auxps_error_set(err, AUXPS_EFORMAT, "%s: %s is %u; it must be 1..%u", path,
                                   dim_names[labels][i], (unsigned)dims[i], (unsigned)max);
    }
    uint64_t sample = (uint64_t)dims[1] * dims[2] * dims[3];
    if (sample > DATA_MAX_SAMPLE_BYTES)
        return auxps_error_set(err, AUXPS_EFORMAT,
                               "%s: %ux%ux%u images are %llu bytes each; the limit is %d",
                               path, (unsigned)dims[1], (unsigned)dims[2], (unsigned)dims[3],
                               (unsigned long long)sample, DATA_MAX_SAMPLE_BYTES);
    x->n = (int)dims[0];
    x->c = (int)dims[1];
    x->h = (int)dims[2];
    x->w = (int)dims[3];
    return 0;
}

/* One more read must hit a clean end: it catches extra bytes, and for gzip it is the read that
 * checks the CRC and length trailer. */
static int idx_expect_end(const idx_file_t *x, auxps_error_t *err) {
    uint8_t extra;
    int got = gzread(x->f, &extra, 1);
    int zerr = Z_OK;
    gzerror(x->f, &zerr);
    if (got > 0)
        return auxps_error_set(err, AUXPS_EFORMAT, "%s: trailing bytes after the %d samples its header declares",
                               x->path, x->n);
    if (got < 0 || zerr != Z_OK) return read_fail(x, "gzip trailer", err);
    return 0;
}

/* Reads the whole body (n * c * h * w bytes) into a new buffer, then insists on end of file.
 * The buffer doubles as bytes arrive instead of being sized from the header, so a header that
 * claims gigabytes the file does not hold costs only what is really there. */
static int idx_read_body(const idx_file_t *x, const char *what, uint8_t **out,
                         auxps_error_t *err) {
    size_t len = (size_t)x->n * (size_t)x->c * (size_t)x->h * (size_t)x->w;
    size_t cap = 0, have = 0;
    uint8_t *buf = NULL;
    int rc;
    while (have < len) {
        if (have == cap) {
            size_t next = cap == 0 ? BODY_FIRST_CHUNK : 2 * cap;
            if (next > len) next = len;
            uint8_t *grown = realloc(buf, next);
            if (grown == NULL) {
                rc = auxps_error_set(err, AUXPS_ENOMEM, "%s: out of memory for %zu bytes of %s",
                                     x->path, len, what);
                goto fail;
            }
            buf = grown;
            cap = next;
        }
        if ((rc = read_exact(x, buf + have, cap - have, what, err)) != 0) goto fail;
        have = cap;
    }

    if ((rc = idx_expect_end(x, err)) != 0) goto fail;
    *out = buf;
    return 0;
fail:
    free(buf);
    return rc;
}

/* Opens an image file and its label file (idx_open) and checks that they hold as many samples.
 * On failure either may still be open; the caller closes them. */
static int idx_open_pair(idx_file_t *im, idx_file_t *lb, const char *images_path, const char *labels_path,
                         auxps_error_t *err) {
    int rc = idx_open(im, images_path, 0, err);
    if (rc == 0) rc = idx_open(lb, labels_path, 1, err);
    if (rc == 0 && im->n != lb->n)
        rc = auxps_error_set(err, AUXPS_EFORMAT, "%s holds %d images but %s holds %d labels", images_path, im->n,
                             labels_path, lb->n);
    return rc;
}

int dataset_load_idx(dataset_t *ds, const char *images_path, const char *labels_path,
                     auxps_error_t *err) {
    if (ds == NULL || images_path == NULL || labels_path == NULL)
        return auxps_error_set(err, AUXPS_EINVAL, "dataset_load_idx: NULL argument");
    memset(ds, 0, sizeof *ds);
    idx_file_t im = {0}, lb = {0};
    uint8_t *images = NULL, *labels = NULL;
    int rc;
    /* Both headers come first so that a count mismatch is caught before any body is read. */
    if ((rc = idx_open_pair(&im, &lb, images_path, labels_path, err)) != 0) goto fail;
    if ((rc = idx_read_body(&im, "images", &images, err)) != 0) goto fail;
    if ((rc = idx_read_body(&lb, "labels", &labels, err)) != 0) goto fail;
    gzclose(im.f);
    gzclose(lb.f);

    int max_label = 0;
    for (int i = 0; i < lb.n; i++)
        if (labels[i] > max_label) max_label = labels[i];
    *ds = (dataset_t){.n = im.n, .c = im.c, .h = im.h, .w = im.w, .classes = max_label + 1,
                      .images = images, .labels = labels};
    return 0;
fail:
    if (im.f != NULL) gzclose(im.f);
    if (lb.f != NULL) gzclose(lb.f);
    free(images);
    free(labels);
    return rc;
}

/* Writes dir/name.gz to out if that file exists, else dir/name. */
static int split_path(char *out, size_t cap, const char *dir, const char *name,
                      auxps_error_t *err) {
    int len = snprintf(out, cap, "%s/%s.gz", dir, name);
    if (len < 0 || (size_t)len >= cap)
        return auxps_error_set(err, AUXPS_EINVAL, "%s/%s.gz: path too long", dir, name);
    if (access(out, F_OK) != 0) out[len - 3] = '\0';
    return 0;
}

/* The image and label files of a split of dir (train: train-*, else t10k-*), PATH_MAX each. */
static int split_paths(const char *dir, int train, char *images_path, char *labels_path, auxps_error_t *err) {
    const char *split = train ? "train" : "t10k";
    char name[32];
    snprintf(name, sizeof name, "%s-images-idx3-ubyte", split);
    int rc = split_path(images_path, PATH_MAX, dir, name, err);
    if (rc != 0) return rc;
    snprintf(name, sizeof name, "%s-labels-idx1-ubyte", split);
    return split_path(labels_path, PATH_MAX, dir, name, err);
}

int dataset_load(dataset_t *ds, const char *dir, int train, int limit, auxps_error_t *err) {
    if (ds == NULL || dir == NULL)
        return auxps_error_set(err, AUXPS_EINVAL, "dataset_load: NULL argument");
    memset(ds, 0, sizeof *ds);
    char images_path[PATH_MAX], labels_path[PATH_MAX];
    int rc = split_paths(dir, train, images_path, labels_path, err);
    if (rc != 0 || (rc = dataset_load_idx(ds, images_path, labels_path, err)) != 0) return rc;

    if (limit > 0 && limit < ds->n) {
        ds->n = limit;
        /* Shrinking keeps a small run's footprint small; if realloc declines, the larger
         * buffer is still valid. */
        uint8_t *p = realloc(ds->images, (size_t)limit * ds->c * ds->h * ds->w);
        if (p != NULL) ds->images = p;
        p = realloc(ds->labels, (size_t)limit);
        if (p != NULL) ds->labels = p;
    }
    return 0;
}

int dataset_count(const char *dir, int train, int limit, int *n, auxps_error_t *err) {
    if (dir == NULL || n == NULL) return auxps_error_set(err, AUXPS_EINVAL, "dataset_count: NULL argument");
    char images_path[PATH_MAX], labels_path[PATH_MAX];
    idx_file_t im = {0}, lb = {0};
    int rc = split_paths(dir, train, images_path, labels_path, err);
    if (rc != 0) return rc;
    rc = idx_open_pair(&im, &lb, images_path, labels_path, err);
    if (im.f != NULL) gzclose(im.f);
    if (lb.f != NULL) gzclose(lb.f);
    if (rc == 0) *n = limit > 0 && limit < im.n ? limit : im.n;
    return rc;
}

/* ---- the image cache of an opened dataset ---- */

#define CACHE_MAGIC "AUXPSIMG"
#define CACHE_VERSION 1u
#define CACHE_HEADER 64
#define CACHE_CHUNK ((size_t)1 << 18) /* bytes copied or checked per read */

struct dataset_file {
    int fd;
    size_t sample;          /* bytes per image */
    uint8_t *buf;           /* one image */
    char path[PATH_MAX];
};

/* What a cache must say about its source: the image file's header and identity. */
typedef struct {
    uint32_t n, c, h, w;
    uint64_t size, mtime_ns, ino;
} cache_key_t;

static void put_le32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> 8 * i);
}
static void put_le64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> 8 * i);
}
static uint32_t get_le32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = v << 8 | p[i];
    return v;
}

static void cache_header(uint8_t h[CACHE_HEADER], const cache_key_t *k, uint32_t body_crc) {
    memset(h, 0, CACHE_HEADER);
    memcpy(h, CACHE_MAGIC, 8);
    put_le32(h + 8, CACHE_VERSION);
    put_le32(h + 12, k->n);
    put_le32(h + 16, k->c);
    put_le32(h + 20, k->h);
    put_le32(h + 24, k->w);
    put_le32(h + 28, body_crc);
    put_le64(h + 32, k->size);
    put_le64(h + 40, k->mtime_ns);
    put_le64(h + 48, k->ino);
    put_le32(h + 60, (uint32_t)crc32(0L, h, 60));
}

static uint64_t cache_body_bytes(const cache_key_t *k) { return (uint64_t)k->n * k->c * k->h * k->w; }

/* pread of len bytes at off: 0, a short file (1) or an OS error (-1, errno set). */
static int pread_full(int fd, void *buf, size_t len, off_t off) {
    uint8_t *p = buf;
    while (len > 0) {
        ssize_t got = pread(fd, p, len, off);
        if (got < 0 && errno == EINTR) continue;
        if (got < 0) return -1;
        if (got == 0) return 1;
        p += got;
        off += got;
        len -= (size_t)got;
    }
    return 0;
}

/* Opens path if it is a whole cache of the source k describes: header, size and both
 * checksums. Returns the descriptor, or -1 (missing or not matching: the caller rebuilds). The
 * check reads the file through a small buffer, so it adds nothing to the resident set. */
static int cache_try(const char *path, const cache_key_t *k) {
    const int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return -1;
    uint8_t h[CACHE_HEADER], want[CACHE_HEADER];
    struct stat st;
    const uint64_t body = cache_body_bytes(k);
    uint8_t *chunk = NULL;
    if (fstat(fd, &st) != 0 || (uint64_t)st.st_size != CACHE_HEADER + body) goto fail;
    if (pread_full(fd, h, CACHE_HEADER, 0) != 0) goto fail;
    cache_header(want, k, get_le32(h + 28)); /* everything but the body's checksum is known */
    if (memcmp(h, want, CACHE_HEADER) != 0) goto fail;
    if ((chunk = malloc(CACHE_CHUNK)) == NULL) goto fail;
    uLong crc = crc32(0L, Z_NULL, 0);
    for (uint64_t at = 0; at < body;) {
        const size_t len = body - at < CACHE_CHUNK ? (size_t)(body - at) : CACHE_CHUNK;
        if (pread_full(fd, chunk, len, (off_t)(CACHE_HEADER + at)) != 0) goto fail;
        crc = crc32(crc, chunk, (uInt)len);
        at += len;
    }
    if ((uint32_t)crc != get_le32(h + 28)) goto fail;
    free(chunk);
    return fd;
fail:
    free(chunk);
    close(fd);
    return -1;
}

/* Writes the body of x (open after its header) to a temporary file beside path, then renames it
 * to path. Returns the descriptor of the new file, or an error. */
static int cache_build(const idx_file_t *x, const char *path, const cache_key_t *k, int *fd_out,
                       auxps_error_t *err) {
    char tmp[PATH_MAX];
    int fd = -1, rc;
    uint8_t *chunk = NULL;
    if (snprintf(tmp, sizeof tmp, "%s.XXXXXX", path) >= (int)sizeof tmp)
        return auxps_error_set(err, AUXPS_EINVAL, "%s: path too long", path);
    if ((fd = mkostemp(tmp, O_CLOEXEC)) < 0)
        return auxps_error_set(err, AUXPS_EIO, "%s: cannot create the image cache: %s", tmp, strerror(errno));
    if ((chunk = malloc(CACHE_CHUNK)) == NULL) {
        rc = auxps_error_set(err, AUXPS_ENOMEM, "%s: out of memory", path);
        goto fail;
    }
    uint8_t h[CACHE_HEADER];
    memset(h, 0, sizeof h); /* the real header goes in last: a file cut short never passes */
    if (pwrite(fd, h, CACHE_HEADER, 0) != CACHE_HEADER) goto fail_write;
    uLong crc = crc32(0L, Z_NULL, 0);
    const uint64_t body = cache_body_bytes(k);
    for (uint64_t at = 0; at < body;) {
        const size_t len = body - at < CACHE_CHUNK ? (size_t)(body - at) : CACHE_CHUNK;
        if ((rc = read_exact(x, chunk, len, "images", err)) != 0) goto fail;
        crc = crc32(crc, chunk, (uInt)len);
        for (size_t done = 0; done < len;) {
            ssize_t put = pwrite(fd, chunk + done, len - done, (off_t)(CACHE_HEADER + at + done));
            if (put < 0 && errno == EINTR) continue;
            if (put <= 0) goto fail_write;
            done += (size_t)put;
        }
        at += len;
    }
    if ((rc = idx_expect_end(x, err)) != 0) goto fail;
    cache_header(h, k, (uint32_t)crc);
    if (pwrite(fd, h, CACHE_HEADER, 0) != CACHE_HEADER) goto fail_write;
    if (rename(tmp, path) != 0) {
        rc = auxps_error_set(err, AUXPS_EIO, "%s: cannot rename the image cache into place: %s", path,
                             strerror(errno));
        goto fail;
    }
    free(chunk);
    *fd_out = fd;
    return 0;
fail_write:
    rc = auxps_error_set(err, AUXPS_EIO, "%s: cannot write the image cache: %s", tmp,
                         errno ? strerror(errno) : "short write");
fail:
    free(chunk);
    close(fd);
    unlink(tmp);
    return rc;
}

/* FNV-1a, 64 bits: the cache's name from its source's identity. */
static uint64_t fnv1a(uint64_t h, const void *data, size_t len) {
    const uint8_t *p = data;
    for (size_t i = 0; i < len; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}

int dataset_open(dataset_t *ds, const char *dir, int train, int limit, const char *cache_dir,
                 auxps_error_t *err) {
    if (ds == NULL || dir == NULL)
        return auxps_error_set(err, AUXPS_EINVAL, "dataset_open: NULL argument");
    memset(ds, 0, sizeof *ds);
    char images_path[PATH_MAX], labels_path[PATH_MAX], real[PATH_MAX];
    idx_file_t im = {0}, lb = {0};
    uint8_t *labels = NULL;
    dataset_file_t *f = NULL;
    int rc = split_paths(dir, train, images_path, labels_path, err);
    if (rc != 0) return rc;
    if ((rc = idx_open_pair(&im, &lb, images_path, labels_path, err)) != 0) goto fail;
    if ((rc = idx_read_body(&lb, "labels", &labels, err)) != 0) goto fail;

    struct stat st;
    if (stat(images_path, &st) != 0) {
        rc = auxps_error_set(err, AUXPS_EIO, "%s: cannot stat: %s", images_path, strerror(errno));
        goto fail;
    }
    const cache_key_t key = {(uint32_t)im.n, (uint32_t)im.c, (uint32_t)im.h, (uint32_t)im.w, (uint64_t)st.st_size,
                             (uint64_t)st.st_mtim.tv_sec * 1000000000ull + (uint64_t)st.st_mtim.tv_nsec,
                             (uint64_t)st.st_ino};
    if (realpath(images_path, real) == NULL) snprintf(real, sizeof real, "%s", images_path);
    uint64_t hash = fnv1a(0xcbf29ce484222325ull, real, strlen(real));
    const uint64_t dev = (uint64_t)st.st_dev;
    hash = fnv1a(hash, &dev, sizeof dev);
    hash = fnv1a(hash, &key, sizeof key);
    if (cache_dir == NULL || cache_dir[0] == '\0') cache_dir = getenv("TMPDIR");
    if (cache_dir == NULL || cache_dir[0] == '\0') cache_dir = "/tmp";

    if ((f = calloc(1, sizeof *f)) == NULL || (f->buf = malloc((size_t)im.c * im.h * im.w)) == NULL) {
        rc = auxps_error_set(err, AUXPS_ENOMEM, "%s: out of memory", images_path);
        goto fail;
    }
    f->fd = -1;
    f->sample = (size_t)im.c * im.h * im.w;
    if (snprintf(f->path, sizeof f->path, "%s/auxps-%s-images-idx3-ubyte-%016llx.cache", cache_dir,
                 train ? "train" : "t10k", (unsigned long long)hash) >= (int)sizeof f->path) {
        rc = auxps_error_set(err, AUXPS_EINVAL, "%s: cache path too long", cache_dir);
        goto fail;
    }
    if ((f->fd = cache_try(f->path, &key)) < 0 && (rc = cache_build(&im, f->path, &key, &f->fd, err)) != 0)
        goto fail;
    gzclose(im.f);
    gzclose(lb.f);

    int max_label = 0;
    for (int i = 0; i < lb.n; i++)
        if (labels[i] > max_label) max_label = labels[i];
    *ds = (dataset_t){.n = im.n, .c = im.c, .h = im.h, .w = im.w, .classes = max_label + 1, .labels = labels,
                      .file = f};
    if (limit > 0 && limit < ds->n) {
        ds->n = limit;
        uint8_t *p = realloc(ds->labels, (size_t)limit);
        if (p != NULL) ds->labels = p;
    }
    return 0;
fail:
    if (im.f != NULL) gzclose(im.f);
    if (lb.f != NULL) gzclose(lb.f);
    if (f != NULL) {
        if (f->fd >= 0) close(f->fd);
        free(f->buf);
        free(f);
    }
    free(labels);
    return rc;
}

void dataset_free(dataset_t *ds) {
    if (ds == NULL) return;
    free(ds->images);
    free(ds->labels);
    if (ds->file != NULL) {
        if (ds->file->fd >= 0) close(ds->file->fd);
        free(ds->file->buf);
        free(ds->file);
    }
    memset(ds, 0, sizeof *ds);
}

/* Image i of an opened dataset into its buffer. */
static int file_read_sample(const dataset_file_t *f, int i, auxps_error_t *err) {
    const int r = pread_full(f->fd, f->buf, f->sample, (off_t)(CACHE_HEADER + (uint64_t)i * f->sample));
    if (r < 0) return auxps_error_set(err, AUXPS_EIO, "%s: cannot read image %d: %s", f->path, i, strerror(errno));
    if (r > 0)
        return auxps_error_set(err, AUXPS_EFORMAT, "%s: the file ends inside image %d: it was cut short after it "
                               "was opened", f->path, i);
    return 0;
}

int dataset_read(const dataset_t *ds, const int *idx, int count, const data_transform_t *t, rng_t *rng,
                 float *x, int *y, auxps_error_t *err) {
    if (ds == NULL || (ds->images == NULL && ds->file == NULL) || (count > 0 && (idx == NULL || x == NULL || y == NULL)))
        return auxps_error_set(err, AUXPS_EINVAL, "dataset_read: NULL argument or an empty dataset");
    const int h = ds->h, w = ds->w, pad = t->crop_pad;
    const size_t plane = (size_t)h * w, sample = (size_t)ds->c * plane;
    /* Every pixel is one of 256 bytes, so normalising is a table load, and equal bytes give
     * bit-equal floats. lut[0] is also the value of a padding pixel. */
    float lut[256];
    for (int p = 0; p < 256; p++) lut[p] = ((float)p / 255.0f - t->mean) / t->std;

    for (int s = 0; s < count; s++) {
        if (idx[s] < 0 || idx[s] >= ds->n)
            return auxps_error_set(err, AUXPS_ERANGE, "sample %d is outside the dataset of %d", idx[s], ds->n);
        int dy = 0, dx = 0, flip = 0;
        if (rng != NULL) {
            if (pad > 0) {
                uint32_t span = 2u * (uint32_t)pad + 1u;
                dy = (int)rng_below(rng, span) - pad;
                dx = (int)rng_below(rng, span) - pad;
            }
            if (t->flip) flip = rng_below(rng, 2) == 1;
        }
        const uint8_t *src;
        if (ds->images != NULL) {
            src = ds->images + (size_t)idx[s] * sample;
        } else {
            int rc = file_read_sample(ds->file, idx[s], err);
            if (rc != 0) return rc;
            src = ds->file->buf;
        }
        float *dst = x + (size_t)s * sample;
        for (int ch = 0; ch < ds->c; ch++, src += plane, dst += plane) {
            for (int i = 0; i < h; i++) {
                int si = i + dy;
                for (int j = 0; j < w; j++) {
                    int sj = (flip ? w - 1 - j : j) + dx;
                    int inside = si >= 0 && si < h && sj >= 0 && sj < w;
                    dst[i * w + j] = inside ? lut[src[si * w + sj]] : lut[0];
                }
            }
        }
        y[s] = ds->labels[idx[s]];
    }
    return 0;
}

void dataset_batch(const dataset_t *ds, const int *idx, int count, const data_transform_t *t,
                   rng_t *rng, float *x, int *y) {
    (void)dataset_read(ds, idx, count, t, rng, x, y, NULL);
}

void data_epoch_order(int *order, int n, uint64_t seed, int epoch) {
    rng_t r;
    rng_seed(&r, seed ^ 0xDA7A5EEDull ^ ((uint64_t)(epoch + 1) * 0x9E3779B97F4A7C15ull));
    for (int i = 0; i < n; i++) order[i] = i;
    rng_shuffle(&r, order, n);
}
