#include "cmpi.h"
#include <mpi.h>
#include <limits.h>
#include <stdlib.h>

// MPI counts are int; larger buffers go in INT_MAX-sized pieces.
#define CHUNKED(call_expr, type)                                                     \
    for (int64_t offset = 0; offset < count; offset += INT_MAX) {                    \
        int piece = (int)((count - offset) > INT_MAX ? INT_MAX : (count - offset));  \
        type *at = buffer + offset;                                                  \
        int rc = (call_expr);                                                        \
        if (rc != MPI_SUCCESS) return rc;                                            \
    }                                                                                \
    return MPI_SUCCESS;

int aedmpi_init(void) {
    int provided = 0;
    // The prefetch thread never calls MPI; only the main thread does.
    int rc = MPI_Init_thread(NULL, NULL, MPI_THREAD_FUNNELED, &provided);
    if (rc != MPI_SUCCESS) return rc;
    // Errors come back as codes so aedist can report them and end every rank itself.
    return MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
}
int aedmpi_is_initialized(void) { int flag = 0; MPI_Initialized(&flag); return flag; }
int aedmpi_is_finalized(void) { int flag = 0; MPI_Finalized(&flag); return flag; }
int aedmpi_finalize(void) { return MPI_Finalize(); }
int aedmpi_rank(void) { int rank = 0; MPI_Comm_rank(MPI_COMM_WORLD, &rank); return rank; }
int aedmpi_size(void) { int size = 1; MPI_Comm_size(MPI_COMM_WORLD, &size); return size; }

int aedmpi_local_size(void) {
    MPI_Comm node;
    if (MPI_Comm_split_type(MPI_COMM_WORLD, MPI_COMM_TYPE_SHARED, 0, MPI_INFO_NULL, &node) != MPI_SUCCESS) return 1;
    int size = 1;
    MPI_Comm_size(node, &size);
    MPI_Comm_free(&node);
    return size;
}

int aedmpi_allreduce_sum_float(float *buffer, int64_t count) {
    CHUNKED(MPI_Allreduce(MPI_IN_PLACE, at, piece, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD), float)
}
int aedmpi_allreduce_sum_double(double *buffer, int64_t count) {
    CHUNKED(MPI_Allreduce(MPI_IN_PLACE, at, piece, MPI_DOUBLE, MPI_SUM, MPI_COMM_WORLD), double)
}
int aedmpi_allreduce_max_double(double *buffer, int64_t count) {
    CHUNKED(MPI_Allreduce(MPI_IN_PLACE, at, piece, MPI_DOUBLE, MPI_MAX, MPI_COMM_WORLD), double)
}
int aedmpi_allreduce_min_int64(int64_t *buffer, int64_t count) {
    CHUNKED(MPI_Allreduce(MPI_IN_PLACE, at, piece, MPI_INT64_T, MPI_MIN, MPI_COMM_WORLD), int64_t)
}
int aedmpi_allreduce_sum_int64(int64_t *buffer, int64_t count) {
    CHUNKED(MPI_Allreduce(MPI_IN_PLACE, at, piece, MPI_INT64_T, MPI_SUM, MPI_COMM_WORLD), int64_t)
}
int aedmpi_bcast_bytes(void *bytes, int64_t count, int root) {
    char *buffer = (char *)bytes;
    CHUNKED(MPI_Bcast(at, piece, MPI_BYTE, root, MPI_COMM_WORLD), char)
}
int aedmpi_allgather_uint64(uint64_t value, uint64_t *all_values) {
    return MPI_Allgather(&value, 1, MPI_UINT64_T, all_values, 1, MPI_UINT64_T, MPI_COMM_WORLD);
}
int aedmpi_barrier(void) { return MPI_Barrier(MPI_COMM_WORLD); }
void aedmpi_abort(int exit_code) { MPI_Abort(MPI_COMM_WORLD, exit_code); }
void aedmpi_error_string(int code, char *buffer, int capacity) {
    char text[MPI_MAX_ERROR_STRING];
    int length = 0;
    if (MPI_Error_string(code, text, &length) != MPI_SUCCESS) length = 0;
    int n = length < capacity - 1 ? length : capacity - 1;
    for (int i = 0; i < n; i++) buffer[i] = text[i];
    if (capacity > 0) buffer[n > 0 ? n : 0] = 0;
}
double aedmpi_wtime(void) { return MPI_Wtime(); }

// MPI_Request is an int in some MPIs and a pointer in Open MPI: either fits the caller's storage.
_Static_assert(sizeof(MPI_Request) <= sizeof(aedmpi_request), "MPI_Request does not fit aedmpi_request");
int aedmpi_isend_int64(const int64_t *value, int destination, int tag, aedmpi_request *request) {
    return MPI_Isend(value, 1, MPI_INT64_T, destination, tag, MPI_COMM_WORLD, (MPI_Request *)request->bytes);
}
int aedmpi_irecv_int64(int64_t *value, int source, int tag, aedmpi_request *request) {
    return MPI_Irecv(value, 1, MPI_INT64_T, source, tag, MPI_COMM_WORLD, (MPI_Request *)request->bytes);
}
int aedmpi_wait(aedmpi_request *request) {
    return MPI_Wait((MPI_Request *)request->bytes, MPI_STATUS_IGNORE);
}
