/* cli: the journeyd commands (replay, check). Uses the public engine API only. */
#ifndef JD_CLI_H
#define JD_CLI_H

int jd_cmd_replay(int argc, char **argv);
int jd_cmd_check(int argc, char **argv);

#endif
