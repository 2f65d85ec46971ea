/* cli: the journeyd commands (replay, check). Uses the public engine API only. */
#ifndef JD_CLI_H
#define JD_CLI_H

int jd_cmd_replay(int argc, char **argv);
int jd_cmd_check(int argc, char **argv);
int jd_cmd_trace(int argc, char **argv); /* trace_cmd.c */

#endif
