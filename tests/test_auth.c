/* test_auth.c - ZeroMQ CURVE security (common/curve.h, docs/PROTOCOL.md "Security"): the key
 * files of `auxps keygen`, the [security] config and its errors, a cluster that trains with
 * CURVE on, and clients that must get nothing: one without CURVE, one with a random key pair
 * that authorized_keys does not list, and one with the wrong server key. Each tries to
 * register with the coordinator and to pull from and push to a node, over real processes and
 * real sockets on 127.0.0.1; an authorised client on the same endpoints shows that the
 * silence is the refusal and not a dead server. The status endpoint is read for key material.
 *
 * Every process a test starts is recorded; the suite's .fini kills (SIGKILL) and reaps whatever
 * a failed assertion left behind. Every wait has a deadline. */
#include <criterion/criterion.h>
#include <errno.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "config.h"
#include "curve.h"
#include "util.h"
#include "wire.h"

enum { CHILD_TIMEOUT_S = 90, REPLY_MS = 5000, SILENCE_MS = 1500 };

#define CONFIG "configs/fmnist-resnet8-w2a2-aux.ini"
#define TINY "--set", "model.widths=4,8,8", "--set", "data.train_limit=768", "--set", "data.test_limit=256", \
             "--set", "train.epochs=2", "--set", "train.batch_size=32", "--set", "cluster.chunk_batches=4",   \
             "--set", "train.threads=1", "--set", "train.log_interval=8"
#define TINY_STEPS 48

static char tmp_dir[64];

static void setup(void) { util_tmpdir_make(tmp_dir, "auth"); }

static void teardown(void) {
    util_proc_kill_all();
    util_tmpdir_remove(tmp_dir);
}

TestSuite(auth, .init = setup, .fini = teardown, .timeout = 240);

typedef util_proc_t proc_t;

#define RUN(p, ...) util_proc_run((p), (const char *const[]){__VA_ARGS__, NULL}, CHILD_TIMEOUT_S)

static const char *tpath(char buf[256], const char *name) {
    snprintf(buf, 256, "%s/%s", tmp_dir, name);
    return buf;
}

/* The first line of a file, without its newline, into buf (a key file's key). */
static void read_line(const char *path, char *buf, size_t size) {
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    cr_assert_not_null(fgets(buf, (int)size, f), "%s is empty", path);
    fclose(f);
    buf[strcspn(buf, "\n")] = '\0';
}

static void write_text(const char *path, const char *text, mode_t mode) {
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "%s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
    cr_assert_eq(chmod(path, mode), 0);
}

/* The key set of the tests: tmp/keys with one client; the Z85 texts. */
typedef struct {
    char dir[256];
    char server_pub[64], server_sec[64], client_pub[64], client_sec[64];
    char sets[5][320];           /* "security.KEY=PATH" for --set */
} keys_t;

static void make_keys(keys_t *k) {
    tpath(k->dir, "keys");
    proc_t p;
    RUN(&p, "keygen", k->dir, "--clients", "1");
    util_expect_exit(&p, 0);
    util_proc_free(&p);
    char path[320];
    const char *names[4] = {"server.pub", "server.key", "client1.pub", "client1.key"};
    char *dst[4] = {k->server_pub, k->server_sec, k->client_pub, k->client_sec};
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/%s", k->dir, names[i]);
        read_line(path, dst[i], 64);
        cr_assert_eq(strlen(dst[i]), CURVE_KEY_TEXT, "%s: %s", path, dst[i]);
    }
    snprintf(k->sets[0], sizeof k->sets[0], "security.server_public=%s/server.pub", k->dir);
    snprintf(k->sets[1], sizeof k->sets[1], "security.server_secret=%s/server.key", k->dir);
    snprintf(k->sets[2], sizeof k->sets[2], "security.client_public=%s/client1.pub", k->dir);
    snprintf(k->sets[3], sizeof k->sets[3], "security.client_secret=%s/client1.key", k->dir);
    snprintf(k->sets[4], sizeof k->sets[4], "security.authorized_keys=%s/authorized_keys", k->dir);
}

/* CONFIG followed by a [security] section with every key of k: one file for all roles. */
static void write_config(const keys_t *k, char path[256]) {
    tpath(path, "run.ini");
    FILE *in = fopen(CONFIG, "r"), *out = fopen(path, "w");
    cr_assert(in != NULL && out != NULL);
    char buf[4096];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, in)) > 0) fwrite(buf, 1, n, out);
    fprintf(out, "\n[security]\ncurve = true\nserver_public = %s/server.pub\nserver_secret = %s/server.key\n"
                 "client_public = %s/client1.pub\nclient_secret = %s/client1.key\nauthorized_keys = %s/authorized_keys\n",
            k->dir, k->dir, k->dir, k->dir, k->dir);
    fclose(in);
    fclose(out);
}

/* ---- key files ---- */

Test(auth, keygen_writes_owner_only_secrets_matching_publics_and_authorized_keys) {
    keys_t k;
    make_keys(&k);
    char path[320];
    struct stat st;
    const char *files[] = {"server.key", "client1.key", "server.pub", "client1.pub", "authorized_keys"};
    const unsigned modes[] = {0600, 0600, 0644, 0644, 0644};
    for (int i = 0; i < 5; i++) {
        snprintf(path, sizeof path, "%s/%s", k.dir, files[i]);
        cr_assert_eq(stat(path, &st), 0, "%s", path);
        cr_assert_eq(st.st_mode & 07777, modes[i], "%s has mode %04o", path, st.st_mode & 07777);
    }
    cr_assert_eq(stat(k.dir, &st), 0);
    cr_assert_eq(st.st_mode & 077, 0, "the key directory is open to others: %04o", st.st_mode & 07777);
    char derived[CURVE_KEY_TEXT + 1];
    cr_assert_eq(zmq_curve_public(derived, k.server_sec), 0);
    cr_assert_str_eq(derived, k.server_pub);
    cr_assert_eq(zmq_curve_public(derived, k.client_sec), 0);
    cr_assert_str_eq(derived, k.client_pub);
    cr_assert_str_neq(k.server_pub, k.client_pub);

    /* A second key set in the same place is refused and changes nothing. */
    proc_t p;
    RUN(&p, "keygen", k.dir);
    util_expect_exit(&p, 1);
    cr_assert_not_null(strstr(p.err.buf, "authorized_keys"), "%s", p.err.buf);
    util_proc_free(&p);
    char again[64];
    snprintf(path, sizeof path, "%s/server.key", k.dir);
    read_line(path, again, sizeof again);
    cr_assert_str_eq(again, k.server_sec, "keygen overwrote the server key");

    /* --client adds one pair and lists it; the same name again is refused. */
    RUN(&p, "keygen", k.dir, "--client", "laptop");
    util_expect_exit(&p, 0);
    util_proc_free(&p);
    RUN(&p, "keygen", k.dir, "--client", "laptop");
    util_expect_exit(&p, 1);
    util_proc_free(&p);
    RUN(&p, "keygen", k.dir, "--client", "../evil");
    util_expect_exit(&p, 1);
    util_proc_free(&p);
    char laptop[64];
    snprintf(path, sizeof path, "%s/laptop.pub", k.dir);
    read_line(path, laptop, sizeof laptop);
    snprintf(path, sizeof path, "%s/authorized_keys", k.dir);
    FILE *f = fopen(path, "r");
    cr_assert_not_null(f);
    char line[256];
    int keys = 0, c1 = 0, lt = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        keys++;
        c1 += strncmp(line, k.client_pub, CURVE_KEY_TEXT) == 0 && strstr(line, " client1") != NULL;
        lt += strncmp(line, laptop, CURVE_KEY_TEXT) == 0 && strstr(line, " laptop") != NULL;
    }
    fclose(f);
    cr_assert_eq(keys, 2, "authorized_keys lists %d keys", keys);
    cr_assert_eq(c1, 1);
    cr_assert_eq(lt, 1);
}

/* curve_load with cfg's security changed by sets; returns its code, message in e. */
static int load_with(const char *const *sets, int n, int role, auxps_error_t *e) {
    auxps_config_t cfg;
    config_defaults(&cfg);
    for (int i = 0; i < n; i++) cr_assert_eq(config_set(&cfg, sets[i], e), 0, "%s", e->msg);
    cr_assert_eq(config_check(&cfg, e), 0, "%s", e->msg);
    curve_t *cv = NULL;
    int rc = curve_load(&cfg, role, &cv, e);
    if (rc == 0) cr_assert_not_null(cv);
    else cr_assert_null(cv);
    curve_destroy(&cv);
    curve_destroy(&cv);
    return rc;
}

Test(auth, a_bad_or_missing_key_file_is_an_error_that_names_it) {
    keys_t k;
    make_keys(&k);
    auxps_error_t e = {0};
    const char *all[6] = {"security.curve=true", k.sets[0], k.sets[1], k.sets[2], k.sets[3], k.sets[4]};
    cr_assert_eq(load_with(all, 6, CURVE_ROLE_SERVER, &e), 0, "%s", e.msg);
    cr_assert_eq(load_with(all, 6, CURVE_ROLE_CLIENT, &e), 0, "%s", e.msg);
    /* A worker needs no server secret, a server no client pair. */
    const char *worker[4] = {"security.curve=true", k.sets[0], k.sets[2], k.sets[3]};
    cr_assert_eq(load_with(worker, 4, CURVE_ROLE_CLIENT, &e), 0, "%s", e.msg);
    cr_assert_eq(load_with(worker, 4, CURVE_ROLE_SERVER, &e), AUXPS_ECONFIG);
    cr_assert_not_null(strstr(e.msg, "security.server_secret is not set"), "%s", e.msg);

    char missing[320];
    snprintf(missing, sizeof missing, "security.server_secret=%s/nope.key", k.dir);
    const char *m1[6] = {"security.curve=true", k.sets[0], missing, k.sets[4]};
    cr_assert_eq(load_with(m1, 4, CURVE_ROLE_SERVER, &e), AUXPS_EIO);
    cr_assert_not_null(strstr(e.msg, "nope.key"), "%s", e.msg);
    cr_assert_not_null(strstr(e.msg, "security.server_secret"), "%s", e.msg);

    char p[256], s[320];
    write_text(tpath(p, "open.key"), k.server_sec, 0644);
    snprintf(s, sizeof s, "security.server_secret=%s", p);
    const char *m2[4] = {"security.curve=true", k.sets[0], s, k.sets[4]};
    cr_assert_eq(load_with(m2, 4, CURVE_ROLE_SERVER, &e), AUXPS_ECONFIG);
    cr_assert(strstr(e.msg, "open.key") && strstr(e.msg, "chmod 600"), "%s", e.msg);

    write_text(tpath(p, "junk.key"), "not a key at all\n", 0600);
    snprintf(s, sizeof s, "security.server_secret=%s", p);
    cr_assert_eq(load_with(m2, 4, CURVE_ROLE_SERVER, &e), AUXPS_ECONFIG);
    cr_assert(strstr(e.msg, "junk.key") && strstr(e.msg, "Z85"), "%s", e.msg);

    /* The client's secret where the server's belongs: the pair does not match. */
    snprintf(s, sizeof s, "security.server_secret=%s/client1.key", k.dir);
    cr_assert_eq(load_with(m2, 4, CURVE_ROLE_SERVER, &e), AUXPS_ECONFIG);
    cr_assert_not_null(strstr(e.msg, "is not the public key of"), "%s", e.msg);

    char auth[512];
    snprintf(auth, sizeof auth, "# admitted\n%s client1\n\n%s\n", k.client_pub, "tooshort");
    write_text(tpath(p, "bad_authorized"), auth, 0644);
    snprintf(s, sizeof s, "security.authorized_keys=%s", p);
    const char *m3[4] = {"security.curve=true", k.sets[0], k.sets[1], s};
    cr_assert_eq(load_with(m3, 4, CURVE_ROLE_SERVER, &e), AUXPS_ECONFIG);
    char want[400];
    snprintf(want, sizeof want, "%s:4:", p);
    cr_assert_not_null(strstr(e.msg, want), "no FILE:LINE in: %s", e.msg);

    /* The config itself: curve = true without the server's public key, at the curve line. */
    write_text(tpath(p, "sec.ini"), "[security]\n\ncurve = yes\n", 0644);
    auxps_config_t cfg;
    cr_assert_eq(config_load(&cfg, p, &e), AUXPS_ECONFIG);
    snprintf(want, sizeof want, "%s:3: security.curve = true needs security.server_public", p);
    cr_assert_not_null(strstr(e.msg, want), "%s", e.msg);
    write_text(p, "[security]\ncurve = maybe\n", 0644);
    cr_assert_eq(config_load(&cfg, p, &e), AUXPS_ECONFIG);
    snprintf(want, sizeof want, "%s:2: security.curve = 'maybe'", p);
    cr_assert_not_null(strstr(e.msg, want), "%s", e.msg);

    /* At start: the program stops with the message, before it opens a socket. */
    proc_t pr;
    RUN(&pr, "ps", "--coordinator", "tcp://127.0.0.1:1", "--set", "security.curve=true", "--set", k.sets[0], "--set",
        missing, "--set", k.sets[4]);
    util_expect_exit(&pr, 1);
    cr_assert_not_null(strstr(pr.err.buf, "nope.key"), "%s", pr.err.buf);
    util_proc_free(&pr);
    RUN(&pr, "worker", "--coordinator", "tcp://127.0.0.1:1", "--set", "train.lr=0.1");
    util_expect_exit(&pr, 1);
    cr_assert_not_null(strstr(pr.err.buf, "only security.*"), "%s", pr.err.buf);
    util_proc_free(&pr);
}

/* ---- a cluster ---- */

Test(auth, a_cluster_with_curve_on_completes_a_tiny_training) {
    keys_t k;
    make_keys(&k);
    char config[256], model[256], out[300];
    write_config(&k, config);
    snprintf(out, sizeof out, "train.output=%s", tpath(model, "m.bin"));
    proc_t p;
    RUN(&p, "cluster", config, "--ps", "2", "--workers", "2", TINY, "--set", out, "--set", "status.port=0");
    util_expect_exit(&p, 0);
    const char *done = strstr(p.out.buf, "\ndone: ");
    cr_assert_not_null(done, "%s\n%s", p.out.buf, p.err.buf);
    cr_assert_eq(strtol(done + 7, NULL, 10), TINY_STEPS);
    cr_assert_not_null(strstr(p.out.buf, "from the file alone"));
    /* Every process spoke CURVE: the nodes ran ZAP handlers and refused no one. */
    int handlers = 0;
    for (const char *s = p.err.buf; (s = strstr(s, "CURVE: refused 0 connection attempts")) != NULL; s++) handlers++;
    cr_assert_eq(handlers, 2, "%s", p.err.buf);
    util_proc_free(&p);
}

/* ---- unauthorised clients ---- */

typedef struct {
    void *ctx, *sock;
} client_t;

/* A DEALER to endpoint: plain when server_pub is NULL, else a CURVE client with pub/sec. */
static void client_open(client_t *c, const char *endpoint, const char *server_pub, const char *pub, const char *sec) {
    c->ctx = zmq_ctx_new();
    cr_assert_not_null(c->ctx);
    c->sock = zmq_socket(c->ctx, ZMQ_DEALER);
    int linger = 0;
    zmq_setsockopt(c->sock, ZMQ_LINGER, &linger, sizeof linger);
    if (server_pub != NULL) {
        cr_assert_eq(zmq_setsockopt(c->sock, ZMQ_CURVE_SERVERKEY, server_pub, CURVE_KEY_TEXT + 1), 0);
        cr_assert_eq(zmq_setsockopt(c->sock, ZMQ_CURVE_PUBLICKEY, pub, CURVE_KEY_TEXT + 1), 0);
        cr_assert_eq(zmq_setsockopt(c->sock, ZMQ_CURVE_SECRETKEY, sec, CURVE_KEY_TEXT + 1), 0);
    }
    cr_assert_eq(zmq_connect(c->sock, endpoint), 0, "connect %s: %s", endpoint, zmq_strerror(zmq_errno()));
}

static void client_close(client_t *c) {
    zmq_close(c->sock);
    zmq_ctx_term(c->ctx);
}

static void send_msg(client_t *c, wire_msg_t *m) {
    auxps_error_t e = {0};
    /* DONTWAIT: a DEALER with no finished handshake queues the message (or refuses it when
     * full); either way nothing reaches the server. */
    int rc = wire_send(c->sock, NULL, 0, m, NULL, NULL, ZMQ_DONTWAIT, &e);
    cr_assert(rc == 0 || zmq_errno() == EAGAIN, "send: %s", e.msg);
}

static void send_hello(client_t *c) {
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_HELLO;
    m.rid = 1;
    m.hello.role = WIRE_ROLE_WORKER;
    snprintf(m.hello.name, sizeof m.hello.name, "intruder:1");
    m.hello.encodings = 1u << WIRE_ENC_F32;
    send_msg(c, &m);
}

static void send_pull(client_t *c, uint32_t worker, uint64_t off, uint64_t len) {
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_PULL;
    m.rid = 2;
    m.pull = (wire_pull_t){worker, 0, WIRE_VEC_PARAMS, off, len, 0, WIRE_ENC_F32};
    send_msg(c, &m);
}

static void send_push(client_t *c, uint32_t worker, uint64_t off, uint64_t len, const float *g) {
    wire_msg_t m;
    memset(&m, 0, sizeof m);
    m.type = WIRE_PUSH;
    m.rid = 3;
    m.push = (wire_push_t){.worker = worker, .shard = 0, .offset = off, .length = len, .clock = 0, .version = 0,
                           .samples = 32, .encoding = WIRE_ENC_F32};
    m.payload = g;
    m.payload_size = len * sizeof(float);
    send_msg(c, &m);
}

/* The next reply within ms into m (the caller clears it), or -1. */
static int reply_within(client_t *c, wire_in_t *in, wire_msg_t *m, int ms) {
    memset(in, 0, sizeof *in);
    memset(m, 0, sizeof *m);
    return util_recv_within(c->sock, 0, in, m, ms);
}

static void expect_silence(client_t *c, const char *what) {
    wire_in_t in;
    wire_msg_t m;
    int r = reply_within(c, &in, &m, SILENCE_MS);
    if (r == 0) {
        uint32_t type = m.type;
        wire_msg_clear(&m);
        wire_in_close(&in);
        cr_assert_fail("%s: got a reply (%s)", what, wire_type_name(type));
    }
}

/* An authorised PULL of the node's whole shard (as the coordinator pulls); the values go to
 * out, the version is returned. */
static uint64_t authorised_pull(const keys_t *k, const char *node_ep, uint64_t off, uint64_t len, float *out) {
    client_t c;
    client_open(&c, node_ep, k->server_pub, k->client_pub, k->client_sec);
    send_pull(&c, WIRE_ID_COORD, off, len);
    wire_in_t in;
    wire_msg_t m;
    cr_assert_eq(reply_within(&c, &in, &m, REPLY_MS), 0, "an authorised PULL got no reply");
    cr_assert_eq(m.type, WIRE_PULL_REP, "an authorised PULL got %s", wire_type_name(m.type));
    auxps_error_t e = {0};
    cr_assert_eq(wire_payload_f32(&m, out, &e), 0, "%s", e.msg);
    uint64_t v = m.pull_rep.version;
    wire_msg_clear(&m);
    wire_in_close(&in);
    client_close(&c);
    return v;
}

/* GET path from 127.0.0.1:port over a plain socket; the whole response, malloc'd. */
static char *http_get(int port, const char *path) {
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert_geq(fd, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port),
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(connect(fd, (struct sockaddr *)&a, sizeof a), 0, "connect :%d: %s", port, strerror(errno));
    char req[256];
    int n = snprintf(req, sizeof req, "GET %s HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n", path);
    cr_assert_eq(write(fd, req, (size_t)n), n);
    size_t cap = 1 << 16, len = 0;
    char *buf = malloc(cap);
    cr_assert_not_null(buf);
    const double deadline = util_now_s() + 10;
    for (;;) {
        struct pollfd p = {fd, POLLIN, 0};
        cr_assert_gt(poll(&p, 1, 1000) + (util_now_s() < deadline), 0, "no response to GET %s", path);
        if (len + 4096 > cap) cr_assert_not_null(buf = realloc(buf, cap *= 2));
        ssize_t k = read(fd, buf + len, cap - len - 1);
        if (k <= 0) break;
        len += (size_t)k;
    }
    close(fd);
    buf[len] = '\0';
    cr_assert_not_null(strstr(buf, " 200 "), "GET %s: %.200s", path, buf);
    return buf;
}

/* Starts a coordinator (1 node, 1 worker, status on a free port) with CURVE from config;
 * returns its endpoint and status port. */
static void start_coord(proc_t *coord, const char *config, char endpoint[128], int *port) {
    *port = util_free_port();
    char sport[64];
    snprintf(sport, sizeof sport, "status.port=%d", *port);
    char out[300], model[256];
    snprintf(out, sizeof out, "train.output=%s", tpath(model, "m.bin"));
    util_proc_start(coord, (const char *const[]){"coord", config, "--nodes", "1", "--workers", "1", "--bind",
                                            "tcp://127.0.0.1:*", TINY, "--set", out, "--set", sport, NULL});
    proc_t *cp[1] = {coord};
    cr_assert(util_proc_pump(cp, 1, util_now_s() + CHILD_TIMEOUT_S, "status endpoint at ", 2), "no status:\n%s",
              coord->err.buf);
    const char *l = strstr(coord->err.buf, "listening on ");
    cr_assert_not_null(l, "%s", coord->err.buf);
    cr_assert_eq(sscanf(l, "listening on %127s", endpoint), 1);
}

/* The number of times text holds s. */
static int count(const char *text, const char *s) {
    int n = 0;
    for (const char *p = text; (p = strstr(p, s)) != NULL; p++) n++;
    return n;
}

Test(auth, unauthorised_clients_can_neither_register_pull_nor_push) {
    keys_t k;
    make_keys(&k);
    char config[256];
    write_config(&k, config);
    proc_t coord, node, worker;
    char endpoint[128];
    int port;
    start_coord(&coord, config, endpoint, &port);
    util_proc_start(&node, (const char *const[]){"ps", "--coordinator", endpoint, "--security", config, NULL});
    proc_t *cn[2] = {&coord, &node};
    const double deadline = util_now_s() + CHILD_TIMEOUT_S;
    cr_assert(util_proc_pump(cn, 2, deadline, "shard 0: ", 1), "no shard map:\n%s\n%s", coord.err.buf, node.err.buf);
    char node_ep[128];
    uint64_t off, len;
    const char *l = strstr(coord.out.buf, "shard 0: ");
    cr_assert_eq(sscanf(l, "shard 0: %127s params %" SCNu64 "+%" SCNu64, node_ep, &off, &len), 3, "%.200s", l);

    float *before = malloc(len * sizeof(float)), *after = malloc(len * sizeof(float)), *g = malloc(len * sizeof(float));
    cr_assert(before && after && g);
    for (uint64_t i = 0; i < len; i++) g[i] = 1000.0f; /* a push that would wreck the model */
    const uint64_t v0 = authorised_pull(&k, node_ep, off, len, before);

    /* The intruders: no CURVE; a random key pair; the authorised client's pair with a wrong
     * server key. */
    char rnd_pub[41], rnd_sec[41], wrong_pub[41], wrong_sec[41];
    cr_assert_eq(zmq_curve_keypair(rnd_pub, rnd_sec), 0);
    cr_assert_eq(zmq_curve_keypair(wrong_pub, wrong_sec), 0);
    struct {
        const char *name, *server, *pub, *sec;
    } who[3] = {{"a plain client", NULL, NULL, NULL},
                {"an unauthorised key", k.server_pub, rnd_pub, rnd_sec},
                {"the wrong server key", wrong_pub, k.client_pub, k.client_sec}};
    char what[160];
    for (int i = 0; i < 3; i++) {
        client_t c;
        client_open(&c, endpoint, who[i].server, who[i].pub, who[i].sec);
        send_hello(&c);
        snprintf(what, sizeof what, "%s: HELLO to the coordinator", who[i].name);
        expect_silence(&c, what);
        send_push(&c, 0, off, len, g);
        snprintf(what, sizeof what, "%s: PUSH to the coordinator", who[i].name);
        expect_silence(&c, what);
        client_close(&c);

        client_open(&c, node_ep, who[i].server, who[i].pub, who[i].sec);
        send_pull(&c, WIRE_ID_COORD, off, len);
        snprintf(what, sizeof what, "%s: PULL from the node", who[i].name);
        expect_silence(&c, what);
        send_push(&c, 0, off, len, g);
        snprintf(what, sizeof what, "%s: PUSH to the node", who[i].name);
        expect_silence(&c, what);
        client_close(&c);
    }

    /* The same requests from the authorised client are answered (refused by the protocol:
     * it is no registered worker), so the silence above was the authentication. */
    client_t ok;
    client_open(&ok, node_ep, k.server_pub, k.client_pub, k.client_sec);
    send_push(&ok, 0, off, len, g);
    wire_in_t in;
    wire_msg_t m;
    cr_assert_eq(reply_within(&ok, &in, &m, REPLY_MS), 0, "the authorised PUSH got no reply");
    cr_assert_eq(m.type, WIRE_ERROR, "the authorised stray PUSH got %s", wire_type_name(m.type));
    wire_msg_clear(&m);
    wire_in_close(&in);
    client_close(&ok);
    client_open(&ok, endpoint, k.server_pub, k.client_pub, k.client_sec);
    send_push(&ok, 0, off, len, g);
    cr_assert_eq(reply_within(&ok, &in, &m, REPLY_MS), 0, "the coordinator did not answer an authorised client");
    cr_assert_eq(m.type, WIRE_ERROR);
    wire_msg_clear(&m);
    wire_in_close(&in);
    client_close(&ok);

    /* Nothing changed on the node. */
    const uint64_t v1 = authorised_pull(&k, node_ep, off, len, after);
    cr_assert_eq(v1, v0, "the node's version moved from %" PRIu64 " to %" PRIu64, v0, v1);
    cr_assert_eq(memcmp(before, after, len * sizeof(float)), 0, "the node's parameters changed");

    /* The coordinator counted the unauthorised key; /status and /metrics show no key. */
    char *status = http_get(port, "/status"), *metrics = http_get(port, "/metrics");
    const char *sec = strstr(status, "\"security\": {");
    cr_assert_not_null(sec, "%s", status);
    cr_assert_not_null(strstr(sec, "\"curve\": true"), "%.200s", sec);
    long refused = -1;
    const char *ar = strstr(sec, "\"auth_refused\": ");
    cr_assert_not_null(ar);
    refused = strtol(ar + 16, NULL, 10);
    cr_assert_geq(refused, 1, "%.200s", sec);
    cr_assert_not_null(strstr(metrics, "auxps_curve_enabled 1"), "%s", metrics);
    cr_assert_not_null(strstr(metrics, "auxps_auth_refused_total "), "%s", metrics);
    const char *material[] = {k.server_pub, k.server_sec, k.client_pub, k.client_sec, rnd_pub, rnd_sec};
    for (int i = 0; i < 6; i++) {
        cr_assert_null(strstr(status, material[i]), "/status holds key %d", i);
        cr_assert_null(strstr(metrics, material[i]), "/metrics holds key %d", i);
    }
    cr_assert_null(strstr(status, k.dir), "/status names the key directory");
    cr_assert_null(strstr(metrics, k.dir), "/metrics names the key directory");
    free(status);
    free(metrics);

    /* An authorised worker then trains the whole run: every push the node applied is the
     * worker's. */
    util_proc_start(&worker, (const char *const[]){"worker", "--coordinator", endpoint, "--threads", "1",
                                              "--security", config, NULL});
    proc_t *all[3] = {&coord, &node, &worker};
    util_proc_finish(all, 3, deadline);
    util_expect_exit(&coord, 0);
    util_expect_exit(&node, 0);
    util_expect_exit(&worker, 0);
    uint64_t applied = 0, pushed = 0;
    l = strstr(node.out.buf, "applied ");
    cr_assert(l && sscanf(l, "applied %" SCNu64, &applied) == 1, "%s", node.out.buf);
    l = strstr(worker.out.buf, "pushed ");
    cr_assert(l && sscanf(l, "pushed %" SCNu64, &pushed) == 1, "%s", worker.out.buf);
    cr_assert_eq(applied, (uint64_t)TINY_STEPS);
    cr_assert_eq(pushed, applied, "the worker pushed %" PRIu64 ", the node applied %" PRIu64, pushed, applied);
    /* Each unauthorised key is logged once, however often it tried. */
    cr_assert_eq(count(node.err.buf, rnd_pub), 1, "node log:\n%s", node.err.buf);
    cr_assert_eq(count(coord.err.buf, rnd_pub), 1, "coordinator log:\n%s", coord.err.buf);
    l = strstr(node.err.buf, "CURVE: refused ");
    cr_assert_not_null(l);
    l = strstr(node.err.buf, "CURVE: refused ");
    unsigned long long attempts = 0;
    for (const char *s = node.err.buf; (s = strstr(s, "CURVE: refused ")) != NULL; s++)
        if (sscanf(s, "CURVE: refused %llu connection attempts", &attempts) == 1) break;
    cr_assert_geq(attempts, 1, "%s", node.err.buf);
    cr_assert_null(strstr(node.err.buf, k.client_sec));
    cr_assert_null(strstr(coord.err.buf, k.server_sec));
    free(before);
    free(after);
    free(g);
    util_proc_free(&coord);
    util_proc_free(&node);
    util_proc_free(&worker);
}
