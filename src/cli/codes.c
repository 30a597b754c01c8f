/*
 * codes.c — `coffer codes`: the result-code table of coffer.h, one code per line.
 */
#include <stdio.h>

#include "cli/cli.h"
#include "cli/options.h"
#include "coffer.h"

static const cli_spec codes_spec = {
    .name = "codes",
    .synopsis = "",
    .description = "Lists every result code the engine and the server answer with: its name, "
                   "its value\n(stable forever: codes are only added), its HTTP status and its "
                   "message.\n",
};

int cli_codes(int argc, char **argv, const cli_globals *globals)
{
    (void)globals;
    cli_parsed parsed;
    int status = cli_parse(&codes_spec, argc, argv, &parsed);
    if (status != CLI_GO_ON)
        return status;
    printf("%-22s %5s %5s  %s\n", "code", "value", "http", "message");
    for (int code = 0; code < COFFER_CODE_LIMIT; code++) {
        const char *name = coffer_code_name(code);
        if (name)
            printf("%-22s %5d %5d  %s\n", name, code, coffer_code_http_status(code),
                   coffer_strerror(code));
    }
    return 0;
}
