/* main: the journeyd command line. Dispatches to the commands in cli. */
#include <stdio.h>
#include <string.h>

#include "../include/journeyd.h"
#include "cli.h"
#include "delivery.h"
#include "outbox.h"
#include "serve.h"

static void help(FILE *f)
{
    fprintf(f,
            "journeyd %s — a customer-journey rule engine\n"
            "\n"
            "usage:\n"
            "  journeyd replay -c CONFIG.lua EVENTS.jsonl [--until ISO8601] [--report FILE]\n"
            "      deterministic dry run on a virtual clock: decided actions as JSON lines,\n"
            "      then a funnel per journey and stage (stderr or FILE). Nothing is delivered.\n"
            "  journeyd serve -c CONFIG.lua [--listen HOST:PORT] [--data-dir DIR]\n"
            "      the sidecar: Segment HTTP API, admin API, /metrics; logs JSON lines on stdout\n"
            "  journeyd check [--against DATA_DIR] CONFIG.lua\n"
            "      validate scripts and list journeys and stages; errors as file:line: message\n"
            "  journeyd trace -c CONFIG.lua EVENTS.jsonl [--until ISO8601] USER_ID\n"
            "  journeyd trace --url http://127.0.0.1:PORT [--key ADMINKEY] USER_ID\n"
            "      one person's decisions and their reasons as a timeline (a dry run, or a daemon)\n"
            "  journeyd outbox DATA_DIR [--status pending|retrying|delivered|dead]\n"
            "      the decided actions in a data directory's store, as JSON lines in decision order\n"
            "  journeyd deadletters DATA_DIR | --url http://127.0.0.1:PORT [--key ADMINKEY] [retry ID]\n"
            "      actions whose delivery failed for good; retry one through a running daemon\n"
            "  journeyd --help | --version\n",
            JOURNEYD_VERSION);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        help(stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "--help") == 0 || strcmp(cmd, "-h") == 0 || strcmp(cmd, "help") == 0) {
        help(stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "version") == 0) {
        printf("journeyd %s\n", JOURNEYD_VERSION);
        return 0;
    }
    if (strcmp(cmd, "replay") == 0)
        return jd_cmd_replay(argc - 1, argv + 1);
    if (strcmp(cmd, "serve") == 0)
        return jd_cmd_serve(argc - 1, argv + 1);
    if (strcmp(cmd, "check") == 0)
        return jd_cmd_check(argc - 1, argv + 1);
    if (strcmp(cmd, "trace") == 0)
        return jd_cmd_trace(argc - 1, argv + 1);
    if (strcmp(cmd, "outbox") == 0)
        return jd_cmd_outbox(argc - 1, argv + 1);
    if (strcmp(cmd, "deadletters") == 0)
        return jd_cmd_deadletters(argc - 1, argv + 1);
    fprintf(stderr, "journeyd: unknown command '%s'\n\n", cmd);
    help(stderr);
    return 2;
}
