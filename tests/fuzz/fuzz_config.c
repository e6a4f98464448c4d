/* fuzz_config.c - libFuzzer harness of the config parser (common/config.c): the input is INI
 * text, loaded with config_load_text as a WELCOME's config is, and each of its lines is also
 * given to config_set as a --set assignment would be.
 *
 * Besides "no crash, no leak, no sanitizer report", what loads must obey config.h: it passes
 * config_check, and config_write's output loads back to a config that writes the same text
 * (the round trip config.h promises for every config that passes config_check); and blank text
 * loads, as an empty file does, unless a line of it is longer than any line may be. A broken
 * rule aborts with a sentence, which libFuzzer reports as a crash. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"

/* docs/CONFIG.md: "A line holds at most 199 characters" (its newline not counted), blank or not. */
#define CONFIG_MAX_LINE 199

/* 1 if no line of text is longer than CONFIG_MAX_LINE. */
static int lines_fit(const char *text) {
    for (const char *line = text;;) {
        const char *end = strchr(line, '\n');
        const size_t len = end != NULL ? (size_t)(end - line) : strlen(line);
        if (len > CONFIG_MAX_LINE) return 0;
        if (end == NULL) return 1;
        line = end + 1;
    }
}

static void die(const char *what, const char *detail) {
    fprintf(stderr, "fuzz_config: %s: %s\n", what, detail);
    abort();
}

/* config_write's text of c, malloc'ed. */
static char *written(const auxps_config_t *c, size_t *len) {
    char *buf = NULL;
    FILE *f = open_memstream(&buf, len);
    if (f == NULL) die("open_memstream", "no memory");
    if (config_write(c, f) != 0) die("config_write", "failed on a memory stream");
    fclose(f);
    return buf;
}

/* c passed config_check: its written form must load back to the same text. */
static void check_round_trip(const auxps_config_t *c) {
    auxps_error_t e = {0};
    size_t n1, n2;
    char *t1 = written(c, &n1);
    auxps_config_t back;
    if (config_load_text(&back, t1, "written", &e) != 0) die("config_write's output does not load", e.msg);
    char *t2 = written(&back, &n2);
    if (n1 != n2 || memcmp(t1, t2, n1) != 0) die("the round trip changed a value", t1);
    free(t1);
    free(t2);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *text = malloc(size + 1);
    if (text == NULL) return 0;
    memcpy(text, data, size);
    text[size] = '\0';

    auxps_config_t c;
    auxps_error_t e = {0};
    if (config_load_text(&c, text, "fuzz.ini", &e) == 0) {
        if (config_check(&c, &e) != 0) die("a loaded config fails config_check", e.msg);
        check_round_trip(&c);
    } else if (strspn(text, " \t\r\n") == strlen(text) && lines_fit(text)) {
        die("blank text (an empty file) does not load as the defaults", e.msg);
    }

    /* Every line as --set, applied in turn to the defaults. */
    config_defaults(&c);
    int changed = 0;
    for (char *line = text, *next; line != NULL; line = next) {
        next = strchr(line, '\n');
        if (next != NULL) *next++ = '\0';
        if (config_set(&c, line, &e) == 0) changed = 1;
    }
    if (changed && config_check(&c, &e) == 0) check_round_trip(&c);
    free(text);
    return 0;
}
