// The only place aedist sees <mpi.h>. Open MPI's handles (MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM, MPI_IN_PLACE) are
// macros over globals that Swift cannot import, so every call that needs one is wrapped here. All functions work
// on MPI_COMM_WORLD and return an MPI error code (MPI_SUCCESS = 0) unless noted.
#ifndef AEDIST_CMPI_H
#define AEDIST_CMPI_H
#include <stdint.h>

int aedmpi_init(void);
int aedmpi_is_initialized(void);
int aedmpi_is_finalized(void);
int aedmpi_finalize(void);
int aedmpi_rank(void);
int aedmpi_size(void);
/// Number of ranks sharing this node's memory (MPI_COMM_TYPE_SHARED).
int aedmpi_local_size(void);
int aedmpi_allreduce_sum_float(float *buffer, int64_t count);
int aedmpi_allreduce_sum_double(double *buffer, int64_t count);
int aedmpi_allreduce_max_double(double *buffer, int64_t count);
int aedmpi_allreduce_min_int64(int64_t *buffer, int64_t count);
int aedmpi_allreduce_sum_int64(int64_t *buffer, int64_t count);
int aedmpi_bcast_bytes(void *buffer, int64_t count, int root);
int aedmpi_allgather_uint64(uint64_t value, uint64_t *all_values);
int aedmpi_barrier(void);
void aedmpi_abort(int exit_code);
/// Writes a human-readable description of an MPI error code.
void aedmpi_error_string(int code, char *buffer, int capacity);
double aedmpi_wtime(void);

// Point-to-point notes that travel beside a blocking collective (arrival notices for the watchdog). Each returns an
// MPI error code; the request lives in the caller's storage (allocated once, so a step allocates nothing) until
// aedmpi_wait completes it.
typedef struct { _Alignas(16) unsigned char bytes[32]; } aedmpi_request;
int aedmpi_isend_int64(const int64_t *value, int destination, int tag, aedmpi_request *request);
int aedmpi_irecv_int64(int64_t *value, int source, int tag, aedmpi_request *request);
int aedmpi_wait(aedmpi_request *request);

#endif
