/* cluster.h - `auxps cluster`: a whole distributed run on this machine (docs/CLUSTER.md).
 *
 * The launcher starts a coordinator, S parameter-server nodes and N workers as child processes of
 * the same binary (/proc/self/exe) on a free loopback port, and streams their output: the
 * coordinator's standard output unchanged (it is the run's record, in the trainer's format),
 * every other stream line by line with a "[coord] ", "[ps K] " or "[worker I] " prefix, standard
 * output to standard output and standard error to standard error.
 *
 * Process rules, in one place:
 *   - Every child runs in a process group of its own, so that a Ctrl-C in the terminal reaches
 *     the launcher alone; the launcher forwards SIGINT and SIGTERM to the coordinator as SIGINT
 *     (which ends the run with DONE to everyone). A second one is forwarded too (the coordinator
 *     then skips the export); a third kills every child.
 *   - Every child gets PR_SET_PDEATHSIG = SIGKILL: if the launcher dies, even by SIGKILL, its
 *     children die with it. No path leaves an orphan.
 *   - When the coordinator has exited, the others get CLUSTER_GRACE_MS to finish (they exit on
 *     DONE), then SIGTERM, then SIGKILL CLUSTER_KILL_MS later.
 *   - The launcher exits with the coordinator's status (128 + signal if it was killed), or 1 if a
 *     child could not be started, 2 on a usage error. */
#ifndef AUXPS_CLUSTER_H
#define AUXPS_CLUSTER_H

#define CLUSTER_GRACE_MS 5000
#define CLUSTER_KILL_MS 2000

/* `auxps cluster CONFIG --ps S --workers N [--threads T] [--dump-params FILE]
 * [--set section.key=value ...]`; argv excludes the program name and "cluster". The --set
 * options and --dump-params go to the coordinator; --threads (default: train.threads, or the
 * cores divided among the workers) to every worker. Returns the exit status. */
int cluster_main(int argc, char **argv);

#endif
