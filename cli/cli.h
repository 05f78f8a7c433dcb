/* cli.h: the subcommands of the onnxq binary. Each takes argc/argv with
 * argv[0] being the subcommand name and returns the process exit status. */
#ifndef OQ_CLI_H
#define OQ_CLI_H

int oq_cmd_inspect(int argc, char **argv);
int oq_cmd_run(int argc, char **argv);
int oq_cmd_quantize(int argc, char **argv);
int oq_cmd_serve(int argc, char **argv);

#endif
