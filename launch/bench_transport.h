/* bench_transport.h - `auxps bench --transport [--seconds S] [--curve] [--coded] [--workers W,..]
 * [--nodes S,..]`: how many training rounds per second the parameter-server transport sustains,
 * beside a bare ZeroMQ exchange of the same bytes measured in the same run. With --curve every socket of both paths
 * is a ZeroMQ CURVE socket (keys made for the run, curve_ephemeral; a ZAP handler in every
 * server's context), to measure what encryption costs. With --coded the run is a kbit + q8 run
 * (CLUSTER.md "Bytes per step"): the workers ask for k-bit pulls and decode them as worker.c
 * does (wire_payload_codes, quant_weight_decode), and push q8 gradients encoded per round with
 * error feedback (wire_q8_encode); the nodes make the codes and apply the quantizer's backward;
 * the bare exchange moves frames of the coded sizes.
 *
 * A round is what a worker does per batch minus the compute (and minus its PROGRESS to the
 * coordinator): wait until ZeroMQ has released the last round's pushed buffers, PUSH a whole
 * gradient (a fixed small one and its negation in turn, so that the parameters stay near their
 * initial values as in training) to every shard without a copy with the next batch's PULL of the whole parameter
 * vector right behind it on the same link (worker.c push_all), all requests in flight at once,
 * then take every PUSH_ACK and copy each PULL_REP into its parameter buffer
 * (wire_payload_f32). Each worker's first PULL goes alone, before the warm-up ends. The vector is the default model's (ResNet-8 W2A2 +
 * aux: model_num_params floats, 87,044 = 348,176 bytes), cut into shards at tensor boundaries
 * as the coordinator cuts it (CLUSTER.md "Shard map").
 *
 * Configurations: 1 and 4 workers against 1 and 2 nodes (--workers and --nodes choose others,
 * 1..4 and 1..2), each measured both ways:
 *   bare   one ROUTER thread per node that moves the same frames with no processing: a request
 *          of the size of the PULL header is answered by a frame of the size of the PULL_REP
 *          header and the slice, sent without a copy from a fixed buffer; a PUSH-header-sized
 *          frame and the gradient slice (sent without a copy) are answered by a frame of the
 *          size of the PUSH_ACK header, in the order they came. The workers send the same
 *          frames in the same order as the auxps path's, and neither encode, decode nor copy.
 *   auxps  the real node code (node_new + node_run, each node in a thread of this process with
 *          its own ZeroMQ context, as its own process would have), registered by a minimal
 *          coordinator that this function plays over the real protocol (HELLO, WELCOME with the
 *          default configuration in async consistency, NODE_READY, HEARTBEAT every H, DONE,
 *          BYE), and workers in threads (a context each, the real worker's socket options)
 *          that speak PULL / PULL_REP / PUSH / PUSH_ACK through wire.c.
 * Everything runs on tcp://127.0.0.1 with ephemeral ports. Each configuration runs four times,
 * bare, auxps, auxps, bare, so that a load that changes steadily weighs on both paths alike;
 * each run starts afresh (servers, nodes, connections), runs a warm-up of
 * BENCH_TRANSPORT_WARMUP_S (connections, first snapshots), then S / 2 seconds (S: default
 * BENCH_TRANSPORT_SECONDS). A round counts if it starts after the warm-up; a path's rate is the
 * counted rounds of all workers in its two runs over the time, in each run, from the end of the
 * warm-up to the end of the last counted round. A worker that has not finished a counted round
 * when the time is up keeps going until it has one, so every rate is positive however loaded
 * the machine is.
 *
 * Output, stdout: one JSON line per configuration, the bare one before the auxps one:
 *   {"bench":"transport","path":"bare"|"auxps","model":"resnet8","wbits":2,"abits":2,
 *    "aux":true,"params":87044,"bytes":348176,"encoding":"f32"|"kbit+q8","bytes_per_round":B,
 *    "workers":W,"nodes":S,"seconds":T,"rounds":R,"rounds_per_s":X,"mb_per_s":Y,
 *    "ms_per_round":Z[,"ratio_to_bare":Q],"curve":C}
 * bytes is the f32 vector's size; bytes_per_round the payload of a round, both directions
 * (f32: 2 * bytes); mb_per_s counts it (1 MB = 10^6 bytes),
 * ms_per_round is one worker's mean round (W / X), and ratio_to_bare (auxps lines only) is X
 * over the bare rate of the same W and S. Stderr: a table of the same numbers at the end, and
 * the node's log if a node fails.
 *
 * The auxps run also counts what happened: when the nodes have said BYE, each node must have
 * applied exactly the pushes that the workers saw acknowledged by its shard, or the bench
 * fails. Every wait is bounded (the configuration's cluster.timeout_ms for a reply,
 * BENCH_TRANSPORT_SETUP_MS for the nodes to register and count the training samples their
 * schedule needs, so the default configuration's data.dir must hold Fashion-MNIST). */
#ifndef AUXPS_BENCH_TRANSPORT_H
#define AUXPS_BENCH_TRANSPORT_H

#define BENCH_TRANSPORT_SECONDS 3.0
#define BENCH_TRANSPORT_WARMUP_S 0.5
#define BENCH_TRANSPORT_MAX_SECONDS 3600.0
#define BENCH_TRANSPORT_SETUP_MS 60000

/* `auxps bench --transport [--seconds S] ...`: argv holds the arguments after "bench"; the
 * "--transport" among them is accepted and skipped. S is a decimal number of seconds in
 * (0, BENCH_TRANSPORT_MAX_SECONDS]; --workers and --nodes list distinct counts in 1..4 and 1..2
 * (default 1,4 and 1,2), and every pair of them is measured, nodes outermost. Returns the exit
 * status: 0 when every configuration was measured, 1 on a failure (a sentence on stderr), 2 on a
 * usage error. */
int bench_transport(int argc, char **argv);

#endif
