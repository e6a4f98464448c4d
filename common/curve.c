/* curve.c - CURVE key files, socket options and the ZAP handler (curve.h). */
#include "curve.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#define KEY_FILE_MAX 4096          /* bytes of a key file: a key and a little whitespace */
#define AUTH_FILE_MAX (1L << 20)   /* bytes of authorized_keys */
#define ZAP_FRAMES 8               /* frames of a ZAP request kept; more are read and dropped */

struct curve {
    int role;
    /* Z85 text, "" when not loaded. */
    char server_public[CURVE_KEY_TEXT + 1], server_secret[CURVE_KEY_TEXT + 1];
    char client_public[CURVE_KEY_TEXT + 1], client_secret[CURVE_KEY_TEXT + 1];
    uint8_t server_key[32];        /* server_public, decoded: always admitted (see curve.h) */
    uint8_t (*authorized)[32];     /* (nauthorized) */
    size_t nauthorized;
    char authorized_path[CONFIG_MAX_STRING + 1];
};

struct curve_zap {
    const curve_t *cv;
    void *sock;
    pthread_t thread;
    int started;
    atomic_int stop;
    atomic_uint_fast64_t refused;
    char who[16];
    FILE *log;
    uint8_t logged[CURVE_ZAP_LOGGED][32]; /* keys already logged (thread-only) */
    int nlogged, said_full;
};

static const char z85_chars[] =
    "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";

int curve_available(void) { return zmq_has("curve") ? 1 : 0; }

/* 1 if s[0..CURVE_KEY_TEXT) is Z85 text that decodes to a key. */
static int is_key_text(const char *s, size_t n, uint8_t key[32]) {
    if (n != CURVE_KEY_TEXT) return 0;
    char text[CURVE_KEY_TEXT + 1];
    for (size_t i = 0; i < n; i++) {
        if (s[i] == '\0' || strchr(z85_chars, s[i]) == NULL) return 0;
        text[i] = s[i];
    }
    text[n] = '\0';
    uint8_t scratch[32];
    return zmq_z85_decode(key ? key : scratch, text) != NULL;
}

/* Names a key file in messages: "run.ini: security.server_secret 'keys/server.key'". */
static void name_file(char *buf, size_t len, const auxps_config_t *cfg, const char *key, const char *path) {
    snprintf(buf, len, "%.200s: security.%s '%s'", cfg->path[0] ? cfg->path : "config", key, path);
}

/* Reads a whole file of at most max bytes into a NUL-terminated buffer the caller frees. secret:
 * refuse a file others may read. */
static int slurp(const char *path, const char *name, long max, int secret, char **out, auxps_error_t *err) {
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return auxps_error_set(err, AUXPS_EIO, "%s: cannot open: %s", name, strerror(errno));
    struct stat st;
    int rc = 0;
    char *buf = NULL;
    if (fstat(fd, &st) != 0) {
        rc = auxps_error_set(err, AUXPS_EIO, "%s: cannot stat: %s", name, strerror(errno));
        goto done;
    }
    if (!S_ISREG(st.st_mode) || st.st_size > max) {
        rc = auxps_error_set(err, AUXPS_ECONFIG, "%s: expected a key file of at most %ld bytes", name, max);
        goto done;
    }
    if (secret && (st.st_mode & 077) != 0) {
        rc = auxps_error_set(err, AUXPS_ECONFIG, "%s: mode %04o lets others read this secret key: "
                             "chmod 600 it", name, (unsigned)(st.st_mode & 07777));
        goto done;
    }
    if ((buf = malloc((size_t)st.st_size + 1)) == NULL) {
        rc = auxps_error_set(err, AUXPS_ENOMEM, "%s: out of memory", name);
        goto done;
    }
    size_t got = 0;
    while (got < (size_t)st.st_size) {
        ssize_t k = read(fd, buf + got, (size_t)st.st_size - got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        got += (size_t)k;
    }
    if (got != (size_t)st.st_size) {
        rc = auxps_error_set(err, AUXPS_EIO, "%s: short read", name);
        goto done;
    }
    buf[got] = '\0';
    if (strlen(buf) != got) rc = auxps_error_set(err, AUXPS_ECONFIG, "%s: NUL byte in a key file", name);
done:
    close(fd);
    if (rc != 0) {
        if (buf != NULL) explicit_bzero(buf, (size_t)st.st_size);
        free(buf);
        return rc;
    }
    *out = buf;
    return 0;
}

/* Reads the key file that config key `key` names into z85 (and key32, may be NULL). */
static int read_key(const auxps_config_t *cfg, const char *key, const char *path, int secret,
                    char z85[CURVE_KEY_TEXT + 1], uint8_t *key32, auxps_error_t *err) {
    char name[CONFIG_MAX_STRING * 2 + 64];
    name_file(name, sizeof name, cfg, key, path);
    char *text;
    int rc = slurp(path, name, KEY_FILE_MAX, secret, &text, err);
    if (rc != 0) return rc;
    /* The whole file is one key, with optional whitespace around it. */
    const char *s = text + strspn(text, " \t\r\n");
    size_t n = strcspn(s, " \t\r\n");
    const char *rest = s + n + strspn(s + n, " \t\r\n");
    if (!is_key_text(s, n, key32) || *rest != '\0') {
        rc = auxps_error_set(err, AUXPS_ECONFIG, "%s: expected one %d-character Z85 key (as auxps keygen "
                             "writes)", name, CURVE_KEY_TEXT);
    } else {
        memcpy(z85, s, CURVE_KEY_TEXT);
        z85[CURVE_KEY_TEXT] = '\0';
    }
    explicit_bzero(text, strlen(text));
    free(text);
    return rc;
}

/* Checks that public is the public key of secret. */
static int check_pair(const auxps_config_t *cfg, const char *pubkey, const char *pub, const char *seckey,
                      const char *sec, auxps_error_t *err) {
    char derived[CURVE_KEY_TEXT + 1];
    if (zmq_curve_public(derived, sec) != 0)
        return auxps_error_set(err, AUXPS_ECONFIG, "%s: security.%s is no CURVE secret key",
                               cfg->path[0] ? cfg->path : "config", seckey);
    int same = memcmp(derived, pub, CURVE_KEY_TEXT) == 0;
    explicit_bzero(derived, sizeof derived);
    if (!same)
        return auxps_error_set(err, AUXPS_ECONFIG, "%s: security.%s '%s' is not the public key of security.%s "
                               "'%s'", cfg->path[0] ? cfg->path : "config", pubkey,
                               strcmp(pubkey, "server_public") == 0 ? cfg->security.server_public
                                                                    : cfg->security.client_public,
                               seckey, strcmp(seckey, "server_secret") == 0 ? cfg->security.server_secret
                                                                             : cfg->security.client_secret);
    return 0;
}

/* Reads authorized_keys: one key per line, then optionally a space and a name; blank lines
 * and lines that start with "# " (or are just "#") are skipped. A key's second character is
 * never a space, so a comment cannot be mistaken for a key that starts with '#'. */
static int read_authorized(const auxps_config_t *cfg, curve_t *cv, auxps_error_t *err) {
    const char *path = cfg->security.authorized_keys;
    char name[CONFIG_MAX_STRING * 2 + 64];
    name_file(name, sizeof name, cfg, "authorized_keys", path);
    char *text;
    int rc = slurp(path, name, AUTH_FILE_MAX, 0, &text, err);
    if (rc != 0) return rc;
    snprintf(cv->authorized_path, sizeof cv->authorized_path, "%s", path);
    int line = 0;
    for (char *s = text; *s != '\0' && rc == 0;) {
        char *eol = s + strcspn(s, "\n");
        char *next = *eol ? eol + 1 : eol;
        *eol = '\0';
        line++;
        size_t len = strlen(s);
        if (len > 0 && s[len - 1] == '\r') s[--len] = '\0';
        const char *p = s + strspn(s, " \t");
        size_t n = strcspn(p, " \t");
        if (*p == '\0' || (p[0] == '#' && (p[1] == '\0' || p[1] == ' ' || p[1] == '\t'))) {
            s = next;
            continue;
        }
        if (cv->nauthorized == CURVE_MAX_AUTHORIZED) {
            rc = auxps_error_set(err, AUXPS_ECONFIG, "%s:%d: more than %d keys", path, line, CURVE_MAX_AUTHORIZED);
            break;
        }
        if (!is_key_text(p, n, cv->authorized[cv->nauthorized])) {
            rc = auxps_error_set(err, AUXPS_ECONFIG, "%s:%d: expected a %d-character Z85 public key, then "
                                 "optionally a space and a name (security.authorized_keys in %s)", path, line,
                                 CURVE_KEY_TEXT, cfg->path[0] ? cfg->path : "config");
            break;
        }
        cv->nauthorized++;
        s = next;
    }
    free(text);
    return rc;
}

/* The error for a key the role needs and the config does not name. */
static int need(const auxps_config_t *cfg, const char *key, const char *who, auxps_error_t *err) {
    return auxps_error_set(err, AUXPS_ECONFIG, "%s: security.curve = true and security.%s is not set: %s "
                           "needs it", cfg->path[0] ? cfg->path : "config", key, who);
}

int curve_load(const auxps_config_t *cfg, int role, curve_t **out, auxps_error_t *err) {
    if (out == NULL) return auxps_error_set(err, AUXPS_EINVAL, "curve_load: NULL argument");
    *out = NULL;
    if (cfg == NULL || (role != CURVE_ROLE_SERVER && role != CURVE_ROLE_CLIENT))
        return auxps_error_set(err, AUXPS_EINVAL, "curve_load: NULL config or bad role");
    if (!cfg->security.curve) return 0;
    if (!curve_available()) {
        int a, b, c;
        zmq_version(&a, &b, &c);
        return auxps_error_set(err, AUXPS_EINVAL, "%s: security.curve = true, but this libzmq %d.%d.%d was "
                               "built without CURVE (libsodium)", cfg->path[0] ? cfg->path : "config", a, b, c);
    }
    const auxps_config_t *c = cfg;
    const char *who = role == CURVE_ROLE_SERVER ? "a coordinator or parameter-server node" : "a worker";
    if (c->security.server_public[0] == '\0') return need(c, "server_public", who, err);
    if (role == CURVE_ROLE_SERVER && c->security.server_secret[0] == '\0') return need(c, "server_secret", who, err);
    if (role == CURVE_ROLE_SERVER && c->security.authorized_keys[0] == '\0')
        return need(c, "authorized_keys", who, err);
    if (role == CURVE_ROLE_CLIENT && c->security.client_public[0] == '\0') return need(c, "client_public", who, err);
    if (role == CURVE_ROLE_CLIENT && c->security.client_secret[0] == '\0') return need(c, "client_secret", who, err);
    curve_t *cv = calloc(1, sizeof *cv);
    if (cv == NULL) return auxps_error_set(err, AUXPS_ENOMEM, "out of memory");
    cv->role = role;
    int rc = read_key(c, "server_public", c->security.server_public, 0, cv->server_public, cv->server_key, err);
    if (rc == 0 && role == CURVE_ROLE_SERVER) {
        rc = read_key(c, "server_secret", c->security.server_secret, 1, cv->server_secret, NULL, err);
        if (rc == 0)
            rc = check_pair(c, "server_public", cv->server_public, "server_secret", cv->server_secret, err);
        if (rc == 0 && (cv->authorized = calloc(CURVE_MAX_AUTHORIZED, 32)) == NULL)
            rc = auxps_error_set(err, AUXPS_ENOMEM, "out of memory");
        if (rc == 0) rc = read_authorized(c, cv, err);
    }
    if (rc == 0 && role == CURVE_ROLE_CLIENT) {
        rc = read_key(c, "client_public", c->security.client_public, 0, cv->client_public, NULL, err);
        if (rc == 0) rc = read_key(c, "client_secret", c->security.client_secret, 1, cv->client_secret, NULL, err);
        if (rc == 0)
            rc = check_pair(c, "client_public", cv->client_public, "client_secret", cv->client_secret, err);
    }
    if (rc != 0) {
        curve_destroy(&cv);
        return rc;
    }
    *out = cv;
    return 0;
}

int curve_ephemeral(curve_t **out, auxps_error_t *err) {
    *out = NULL;
    if (!curve_available())
        return auxps_error_set(err, AUXPS_EINVAL, "this libzmq was built without CURVE (libsodium)");
    curve_t *cv = calloc(1, sizeof *cv);
    if (cv == NULL || (cv->authorized = calloc(1, 32)) == NULL) {
        curve_destroy(&cv);
        return auxps_error_set(err, AUXPS_ENOMEM, "out of memory");
    }
    cv->role = CURVE_ROLE_SERVER;
    if (zmq_curve_keypair(cv->server_public, cv->server_secret) != 0 ||
        zmq_curve_keypair(cv->client_public, cv->client_secret) != 0 ||
        zmq_z85_decode(cv->server_key, cv->server_public) == NULL ||
        zmq_z85_decode(cv->authorized[0], cv->client_public) == NULL) {
        curve_destroy(&cv);
        return auxps_error_set(err, AUXPS_EINVAL, "zmq_curve_keypair: %s", zmq_strerror(zmq_errno()));
    }
    cv->nauthorized = 1;
    *out = cv;
    return 0;
}

void curve_destroy(curve_t **cvp) {
    if (cvp == NULL || *cvp == NULL) return;
    curve_t *cv = *cvp;
    free(cv->authorized);
    explicit_bzero(cv, sizeof *cv);
    free(cv);
    *cvp = NULL;
}

const char *curve_client_public(const curve_t *cv) {
    return cv->client_public[0] ? cv->client_public : cv->server_public;
}

int curve_serve(const curve_t *cv, void *sock, auxps_error_t *err) {
    if (cv == NULL) return 0;
    const int one = 1;
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, cv->server_secret, CURVE_KEY_TEXT + 1) != 0 ||
        zmq_setsockopt(sock, ZMQ_ZAP_DOMAIN, "auxps", 5) != 0)
        return auxps_error_set(err, AUXPS_EIO, "CURVE server options: %s", zmq_strerror(zmq_errno()));
    return 0;
}

int curve_connect(const curve_t *cv, void *sock, auxps_error_t *err) {
    if (cv == NULL) return 0;
    const int client = cv->client_secret[0] != '\0';
    if (zmq_setsockopt(sock, ZMQ_CURVE_SERVERKEY, cv->server_public, CURVE_KEY_TEXT + 1) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_PUBLICKEY, client ? cv->client_public : cv->server_public,
                       CURVE_KEY_TEXT + 1) != 0 ||
        zmq_setsockopt(sock, ZMQ_CURVE_SECRETKEY, client ? cv->client_secret : cv->server_secret,
                       CURVE_KEY_TEXT + 1) != 0)
        return auxps_error_set(err, AUXPS_EIO, "CURVE client options: %s", zmq_strerror(zmq_errno()));
    return 0;
}

/* ---- ZAP (ZeroMQ RFC 27) ------------------------------------------------------------------ */

static int admitted(const curve_t *cv, const uint8_t key[32]) {
    if (memcmp(key, cv->server_key, 32) == 0) return 1;
    for (size_t i = 0; i < cv->nauthorized; i++)
        if (memcmp(key, cv->authorized[i], 32) == 0) return 1;
    return 0;
}

/* Logs a refused key the first time it is refused; the table is the handler thread's own. */
static void log_refusal(curve_zap_t *z, const uint8_t key[32], const zmq_msg_t *address) {
    for (int i = 0; i < z->nlogged; i++)
        if (memcmp(z->logged[i], key, 32) == 0) return;
    char line[512], text[CURVE_KEY_TEXT + 1] = "?", addr[64] = "?";
    if (z->nlogged == CURVE_ZAP_LOGGED) {
        if (z->said_full) return;
        z->said_full = 1;
        snprintf(line, sizeof line, "%s: CURVE: %d client keys refused; more refused keys are counted, not "
                 "logged\n", z->who, CURVE_ZAP_LOGGED);
    } else {
        memcpy(z->logged[z->nlogged++], key, 32);
        zmq_z85_encode(text, key, 32);
        size_t n = zmq_msg_size(address) < sizeof addr - 1 ? zmq_msg_size(address) : sizeof addr - 1;
        memcpy(addr, zmq_msg_data((zmq_msg_t *)address), n);
        addr[n] = '\0';
        for (char *c = addr; *c; c++)
            if (*c < 0x20 || *c > 0x7e) *c = '?';
        snprintf(line, sizeof line, "%s: CURVE: refused client key %s from %s: not in %s; further attempts "
                 "with this key are counted, not logged\n", z->who, text, addr, z->cv->authorized_path[0] ?
                 z->cv->authorized_path : "the authorised keys");
    }
    FILE *f = z->log ? z->log : stderr;
    fputs(line, f); /* one call, so that the line does not interleave with the owner's */
    fflush(f);
}

/* Reads one request and answers it. A REP socket must answer before its next receive, so every
 * request gets a reply, malformed or not. */
static void zap_answer(curve_zap_t *z) {
    zmq_msg_t f[ZAP_FRAMES];
    int n = 0, more = 1;
    while (more) {
        zmq_msg_t part;
        zmq_msg_init(&part);
        if (zmq_msg_recv(&part, z->sock, 0) < 0) {
            zmq_msg_close(&part);
            if (n == 0) return; /* nothing received: nothing to answer */
            break;
        }
        more = zmq_msg_more(&part);
        if (n < ZAP_FRAMES) f[n++] = part;
        else zmq_msg_close(&part);
    }
    const char *status = "400", *text = "not an authorised CURVE client key";
    char user[CURVE_KEY_TEXT + 1] = "";
    const int wellformed = n == 7 && zmq_msg_size(&f[0]) == 3 && memcmp(zmq_msg_data(&f[0]), "1.0", 3) == 0;
    if (!wellformed) {
        status = "500", text = "malformed ZAP request";
    } else if (zmq_msg_size(&f[5]) == 5 && memcmp(zmq_msg_data(&f[5]), "CURVE", 5) == 0 &&
               zmq_msg_size(&f[6]) == 32) {
        const uint8_t *key = zmq_msg_data(&f[6]);
        if (admitted(z->cv, key)) {
            status = "200", text = "OK";
            zmq_z85_encode(user, key, 32);
        } else {
            atomic_fetch_add(&z->refused, 1);
            log_refusal(z, key, &f[3]);
        }
    } else {
        atomic_fetch_add(&z->refused, 1);
    }
    const void *reply[6] = {"1.0", n > 1 ? zmq_msg_data(&f[1]) : "", status, text, user, ""};
    size_t size[6] = {3, n > 1 ? zmq_msg_size(&f[1]) : 0, 3, strlen(text), strlen(user), 0};
    for (int i = 0; i < 6; i++)
        if (zmq_send(z->sock, reply[i], size[i], i < 5 ? ZMQ_SNDMORE : 0) < 0) break;
    for (int i = 0; i < n; i++) zmq_msg_close(&f[i]);
}

static void *zap_thread(void *arg) {
    curve_zap_t *z = arg;
    while (!atomic_load(&z->stop)) {
        /* The timeout bounds how long curve_zap_stop waits; a request is answered at once. */
        zmq_pollitem_t it = {z->sock, 0, ZMQ_POLLIN, 0};
        int r = zmq_poll(&it, 1, 100);
        if (r < 0 && zmq_errno() == ETERM) break;
        if (r > 0) zap_answer(z);
    }
    return NULL;
}

curve_zap_t *curve_zap_start(const curve_t *cv, void *ctx, const char *who, FILE *log, auxps_error_t *err) {
    if (cv == NULL || ctx == NULL || cv->role != CURVE_ROLE_SERVER) {
        auxps_error_set(err, AUXPS_EINVAL, "curve_zap_start: needs a server's keys and a context");
        return NULL;
    }
    curve_zap_t *z = calloc(1, sizeof *z);
    if (z == NULL) {
        auxps_error_set(err, AUXPS_ENOMEM, "out of memory");
        return NULL;
    }
    z->cv = cv;
    z->log = log;
    snprintf(z->who, sizeof z->who, "%s", who ? who : "auxps");
    atomic_init(&z->stop, 0);
    atomic_init(&z->refused, 0);
    const int linger = 0;
    if ((z->sock = zmq_socket(ctx, ZMQ_REP)) == NULL ||
        zmq_setsockopt(z->sock, ZMQ_LINGER, &linger, sizeof linger) != 0 ||
        zmq_bind(z->sock, CURVE_ZAP_ENDPOINT) != 0) {
        auxps_error_set(err, AUXPS_EIO, "%s: cannot start the ZAP handler at %s: %s", z->who, CURVE_ZAP_ENDPOINT,
                        zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (pthread_create(&z->thread, NULL, zap_thread, z) != 0) {
        auxps_error_set(err, AUXPS_ENOMEM, "%s: cannot start the ZAP thread", z->who);
        goto fail;
    }
    z->started = 1;
    return z;
fail:
    curve_zap_stop(&z);
    return NULL;
}

uint64_t curve_zap_refused(const curve_zap_t *z) {
    return z == NULL ? 0 : (uint64_t)atomic_load(&((curve_zap_t *)z)->refused);
}

void curve_zap_stop(curve_zap_t **zp) {
    if (zp == NULL || *zp == NULL) return;
    curve_zap_t *z = *zp;
    if (z->started) {
        atomic_store(&z->stop, 1);
        pthread_join(z->thread, NULL);
    }
    if (z->sock != NULL) zmq_close(z->sock);
    free(z);
    *zp = NULL;
}

/* ---- auxps keygen ------------------------------------------------------------------------- */

/* Writes text into a new file (never over an existing one) with exactly mode. */
static int write_new(const char *path, const char *text, mode_t mode, auxps_error_t *err) {
    int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, mode);
    if (fd < 0)
        return auxps_error_set(err, AUXPS_EIO, "%s: cannot create: %s%s", path, strerror(errno),
                               errno == EEXIST ? " (auxps keygen never overwrites a key)" : "");
    size_t n = strlen(text), done = 0;
    int rc = fchmod(fd, mode); /* the umask may have taken bits off a public file */
    while (rc == 0 && done < n) {
        ssize_t k = write(fd, text + done, n - done);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) rc = -1;
        else done += (size_t)k;
    }
    if (rc == 0) rc = fsync(fd);
    if (close(fd) != 0) rc = -1;
    if (rc != 0) return auxps_error_set(err, AUXPS_EIO, "%s: cannot write: %s", path, strerror(errno));
    return 0;
}

/* Makes a key pair NAME.pub / NAME.key in dir; the public key's text goes to pub. */
static int make_pair(const char *dir, const char *name, char pub[CURVE_KEY_TEXT + 1], FILE *out,
                     auxps_error_t *err) {
    char sec[CURVE_KEY_TEXT + 1], path[4200], text[CURVE_KEY_TEXT + 2];
    if (zmq_curve_keypair(pub, sec) != 0)
        return auxps_error_set(err, AUXPS_EINVAL, "zmq_curve_keypair: %s", zmq_strerror(zmq_errno()));
    /* The secret first: a public key without its secret is of no use to anyone. */
    snprintf(path, sizeof path, "%s/%s.key", dir, name);
    snprintf(text, sizeof text, "%s\n", sec);
    int rc = write_new(path, text, 0600, err);
    explicit_bzero(sec, sizeof sec);
    explicit_bzero(text, sizeof text);
    if (rc != 0) return rc;
    if (out) fprintf(out, "wrote %s (secret, mode 0600)\n", path);
    snprintf(path, sizeof path, "%s/%s.pub", dir, name);
    snprintf(text, sizeof text, "%s\n", pub);
    if ((rc = write_new(path, text, 0644, err)) != 0) return rc;
    if (out) fprintf(out, "wrote %s\n", path);
    return 0;
}

static int valid_name(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 64 || strcmp(s, "server") == 0 || s[0] == '.') return 0;
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= 'a' && s[i] <= 'z') || (s[i] >= 'A' && s[i] <= 'Z') || (s[i] >= '0' && s[i] <= '9') ||
              s[i] == '-' || s[i] == '_' || s[i] == '.'))
            return 0;
    return 1;
}

int curve_keygen(const char *dir, int clients, const char *name, FILE *out, auxps_error_t *err) {
    if (dir == NULL || dir[0] == '\0' || strlen(dir) > 4000)
        return auxps_error_set(err, AUXPS_EINVAL, "keygen: a directory is needed");
    if (name == NULL && (clients < 1 || clients > CURVE_MAX_CLIENTS))
        return auxps_error_set(err, AUXPS_EINVAL, "keygen: --clients %d: expected 1..%d", clients, CURVE_MAX_CLIENTS);
    if (name != NULL && !valid_name(name))
        return auxps_error_set(err, AUXPS_EINVAL, "keygen: --client '%s': expected 1..64 letters, digits, '-', "
                               "'_' or '.', not starting with '.', and not 'server'", name);
    if (!curve_available())
        return auxps_error_set(err, AUXPS_EINVAL, "keygen: this libzmq was built without CURVE (libsodium)");
    char auth[4200], pub[CURVE_KEY_TEXT + 1], line[CURVE_KEY_TEXT + 80];
    snprintf(auth, sizeof auth, "%s/authorized_keys", dir);
    if (name != NULL) { /* one more client for an existing key set */
        if (access(auth, W_OK) != 0)
            return auxps_error_set(err, AUXPS_EIO, "%s: %s (make a key set first: auxps keygen %s)", auth,
                                   strerror(errno), dir);
        int rc = make_pair(dir, name, pub, out, err);
        if (rc != 0) return rc;
        int fd = open(auth, O_WRONLY | O_APPEND | O_CLOEXEC);
        snprintf(line, sizeof line, "%s %s\n", pub, name);
        if (fd < 0 || write(fd, line, strlen(line)) != (ssize_t)strlen(line) || fsync(fd) != 0) {
            rc = auxps_error_set(err, AUXPS_EIO, "%s: cannot append %s's key: %s", auth, name, strerror(errno));
            if (fd >= 0) close(fd);
            return rc;
        }
        if (close(fd) != 0) return auxps_error_set(err, AUXPS_EIO, "%s: %s", auth, strerror(errno));
        if (out) fprintf(out, "added %s's public key to %s\n", name, auth);
        return 0;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST)
        return auxps_error_set(err, AUXPS_EIO, "%s: cannot create the directory: %s", dir, strerror(errno));
    char server_pub[CURVE_KEY_TEXT + 1];
    if (access(auth, F_OK) == 0)
        return auxps_error_set(err, AUXPS_EIO, "%s exists: %s holds a key set already (add a client with "
                               "--client NAME)", auth, dir);
    int rc = make_pair(dir, "server", server_pub, out, err);
    if (rc != 0) return rc;
    size_t cap = (size_t)clients * sizeof line + 64, len = 0;
    char *list = malloc(cap);
    if (list == NULL) return auxps_error_set(err, AUXPS_ENOMEM, "out of memory");
    len += (size_t)snprintf(list, cap, "# Client public keys the cluster admits (auxps keygen); one per line.\n");
    for (int i = 1; i <= clients && rc == 0; i++) {
        char cname[32];
        snprintf(cname, sizeof cname, "client%d", i);
        if ((rc = make_pair(dir, cname, pub, out, err)) == 0)
            len += (size_t)snprintf(list + len, cap - len, "%s %s\n", pub, cname);
    }
    if (rc == 0 && (rc = write_new(auth, list, 0644, err)) == 0 && out) fprintf(out, "wrote %s\n", auth);
    free(list);
    if (rc != 0 || out == NULL) return rc;
    fprintf(out, "\n# For the coordinator and the nodes (auxps coord CONFIG, auxps ps --security CONFIG):\n"
                 "[security]\ncurve = true\nserver_public = %s/server.pub\nserver_secret = %s/server.key\n"
                 "authorized_keys = %s\n"
                 "\n# For a worker (auxps worker --security CONFIG); one client pair per worker host:\n"
                 "[security]\ncurve = true\nserver_public = %s/server.pub\nclient_public = %s/client1.pub\n"
                 "client_secret = %s/client1.key\n", dir, dir, auth, dir, dir, dir);
    return 0;
}
