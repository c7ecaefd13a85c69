// The only place aedist installs signal handlers. A handler may only set a flag (async-signal safety); the
// training loop reads it at the next step boundary.
#ifndef AEDIST_CSIGNALS_H
#define AEDIST_CSIGNALS_H

/// Catch SIGTERM and SIGUSR1 (what Slurm and PBS send before a job's time runs out) and SIGUSR2.
void aedsig_catch_stop_signals(void);
/// The first stop signal received so far, or 0.
int aedsig_received(void);
/// Raise the flag as if `signal` had arrived (for time limits reached inside the process).
void aedsig_request_stop(int signal);

#endif
