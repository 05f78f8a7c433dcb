/* main.c: the onnxq binary; dispatches to one subcommand per cmd_*.c. */
#include <stdio.h>
#include <string.h>

#include "cli.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} commands[] = {
    {"inspect", oq_cmd_inspect, "describe a model: IO, opsets, ops, parameters, quantizable nodes"},
    {"quantize", oq_cmd_quantize, "quantize an FP32 model to INT8 (QDQ) and report the accuracy cost"},
    {"run", oq_cmd_run, "run a model on .npy/.npz/.pb inputs, write .npy outputs, time it"},
    {"serve", oq_cmd_serve, "run the HTTP API: quantization jobs for curl and CI (see README)"},
};

static void usage(FILE *f) {
    fprintf(f, "usage: onnxq <command> [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\n'onnxq <command> --help' shows a command's options; 'onnxq --version' the version.\n");
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("onnxq %s\n", OQ_VERSION);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    fprintf(stderr, "onnxq: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
