/* fuzz_wire.c - libFuzzer harness of the wire decoder (common/wire.c): a received multipart
 * message, as wire_recv reads it from a real ZeroMQ socket and wire_decode_in turns it into a
 * wire_msg_t, plus wire_decode called directly on the same frames (so that the frame-count rule
 * of wire_decode itself is reached, which wire_recv would stop first).
 *
 * Input: one flags byte (bit 0: read as a ROUTER, so frame 0 is the routing id), then frames,
 * each a little-endian u32 length and that many bytes (a length beyond the input takes what is
 * left). The frames are sent as one multipart message over an inproc PAIR socket.
 *
 * Besides "no crash, no leak, no sanitizer report", every message the decoder accepts must obey
 * the module's contract: the encoder accepts it too (wire.h: the encoder cannot emit what the
 * decoder refuses, and the rules are shared), its re-encoded header decodes again and encodes to
 * the same bytes, and a float payload dequantizes with wire_payload_f32 or is refused only for
 * nonzero padding bits. A broken rule aborts with a sentence, which libFuzzer reports as a crash. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "fuzz_util.h"
#include "wire.h"

enum { MAX_FRAMES = 8 };

/* The harness's sockets: created once, as a long-running peer would. */
static void *ctx, *tx, *rx;

static void die(const char *what, const char *detail) {
    fprintf(stderr, "fuzz_wire: %s: %s\n", what, detail);
    abort();
}

int LLVMFuzzerInitialize(int *argc, char ***argv) {
    (void)argc, (void)argv;
    ctx = zmq_ctx_new();
    if (ctx == NULL) die("zmq_ctx_new", zmq_strerror(zmq_errno()));
    tx = zmq_socket(ctx, ZMQ_PAIR);
    rx = zmq_socket(ctx, ZMQ_PAIR);
    if (tx == NULL || rx == NULL || wire_socket_limits(rx) != 0 ||
        zmq_bind(rx, "inproc://fuzz-wire") != 0 || zmq_connect(tx, "inproc://fuzz-wire") != 0)
        die("sockets", zmq_strerror(zmq_errno()));
    return 0;
}

/* The contract every accepted message must keep (see the top of the file). */
static void check_accepted(const wire_msg_t *m) {
    auxps_error_t e = {0};
    void *h1 = NULL, *h2 = NULL;
    size_t n1 = 0, n2 = 0;
    if (wire_encode(m, &h1, &n1, &e) != 0) die("the decoder accepted what the encoder refuses", e.msg);
    wire_msg_t again;
    if (wire_decode(&again, h1, n1, m->payload, m->payload_size, wire_has_payload(m), &e) != 0)
        die("a re-encoded message does not decode", e.msg);
    if (wire_encode(&again, &h2, &n2, &e) != 0) die("a decoded re-encoded message does not encode", e.msg);
    if (n1 != n2 || memcmp(h1, h2, n1) != 0)
        die("re-encoding is not stable", wire_type_name(m->type));
    wire_msg_clear(&again);
    free(h1);
    free(h2);

    uint64_t length = 0;
    if (m->type == WIRE_PULL_REP) length = m->pull_rep.length;
    else if (m->type == WIRE_PUSH) length = m->push.length;
    else if (m->type == WIRE_STATS_PUSH) length = m->stats_push.length;
    if (length == 0) return;
    float *out = malloc(length * sizeof *out);
    if (out == NULL) die("malloc", "payload buffer");
    int rc = wire_payload_f32(m, out, &e);
    if (rc != 0 && rc != AUXPS_EFORMAT) die("wire_payload_f32 refused a decoded message", e.msg);
    free(out);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    const int router = data[0] & 1;
    const uint8_t *frame[MAX_FRAMES];
    size_t len[MAX_FRAMES], pos = 1;
    int n = 0;
    while (n < MAX_FRAMES && size - pos >= 4) {
        size_t l = fz_u32(data + pos);
        pos += 4;
        if (l > size - pos) l = size - pos;
        frame[n] = data + pos;
        len[n++] = l;
        pos += l;
    }
    if (n == 0) return 0;

    /* Directly: header, then the frames after it counted as payload frames. */
    const int h = router ? 1 : 0;
    if (n > h) {
        wire_msg_t m;
        auxps_error_t e = {0};
        const int npayload = n - h - 1;
        if (wire_decode(&m, frame[h], len[h], npayload ? frame[h + 1] : NULL, npayload ? len[h + 1] : 0,
                        npayload, &e) == 0)
            check_accepted(&m);
        wire_msg_clear(&m);
    }

    /* Through a real socket, as a peer's message arrives. */
    for (int i = 0; i < n; i++)
        if (zmq_send(tx, frame[i], len[i], i + 1 < n ? ZMQ_SNDMORE : 0) != (int)len[i])
            die("zmq_send", zmq_strerror(zmq_errno()));
    wire_in_t in;
    memset(&in, 0, sizeof in);
    auxps_error_t e = {0};
    int rc = wire_recv(rx, router, &in, ZMQ_DONTWAIT, &e);
    if (rc == AUXPS_EIO) die("wire_recv lost a message that was sent", e.msg);
    if (rc == 0) {
        wire_msg_t m;
        if (wire_decode_in(&in, &m, &e) == 0) check_accepted(&m);
        wire_msg_clear(&m);
    }
    wire_in_close(&in);
    return 0;
}
