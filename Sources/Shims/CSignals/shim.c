#include "csignals.h"
#include <signal.h>
#include <string.h>

static volatile sig_atomic_t received = 0;

static void remember(int signal) {
    if (received == 0) received = signal;
}

void aedsig_catch_stop_signals(void) {
    struct sigaction action;
    memset(&action, 0, sizeof action);
    action.sa_handler = remember;
    sigemptyset(&action.sa_mask);
    // Restart interrupted system calls: MPI's and HDF5's own reads and writes must not see EINTR.
    action.sa_flags = SA_RESTART;
    sigaction(SIGTERM, &action, NULL);
    sigaction(SIGUSR1, &action, NULL);
    sigaction(SIGUSR2, &action, NULL);
}

int aedsig_received(void) { return received; }

void aedsig_request_stop(int signal) { remember(signal); }
