/* status_cli.h - `auxps status [URL] [--json]`: fetches a run's /status over plain HTTP/1.1 and
 * prints it for a person, in `key:value` lines under `# Section` headings like `redis-cli INFO`
 * (one `workerN:` / `shardN:` line per worker and shard, a progress bar for the epoch), or, with
 * --json, the JSON document itself (docs/STATUS.md).
 *
 * URL is [http://]HOST[:PORT][/PATH]; HOST may be a name, an IPv4 literal or a bracketed IPv6
 * literal; PORT defaults to 8080, PATH to /status. The whole exchange has a deadline
 * (STATUS_CLI_TIMEOUT_MS) and a size cap (STATUS_CLI_MAX_BODY): a server that stalls or floods
 * gets an error, not a hang. */
#ifndef AUXPS_STATUS_CLI_H
#define AUXPS_STATUS_CLI_H

#include <stddef.h>

#include "error.h"

#define STATUS_CLI_DEFAULT_URL "http://127.0.0.1:8080/status"
#define STATUS_CLI_TIMEOUT_MS 5000
#define STATUS_CLI_MAX_BODY (64u << 20)

/* GETs url. Returns 0 with *code the HTTP status and *body (malloc'd, NUL-terminated; the
 * caller frees it) of length *len, or a negative code with err set: AUXPS_EINVAL (not a URL
 * this client understands), AUXPS_EIO (name lookup, connect, send or receive failed, or the
 * deadline passed), AUXPS_EFORMAT (the reply is not HTTP, or is over the cap), AUXPS_ENOMEM. */
int status_cli_get(const char *url, int timeout_ms, int *code, char **body, size_t *len, auxps_error_t *err);

/* `auxps status [URL] [--json]`; argv excludes the program name and "status". Returns the exit
 * status: 0 printed, 1 the server could not be reached or did not answer a /status document,
 * 2 usage. */
int status_cli_main(int argc, char **argv);

#endif
