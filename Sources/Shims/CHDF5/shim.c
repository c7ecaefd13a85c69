#include "chdf5.h"
#include <string.h>

hid_t aedh5_native_float(void) { return H5T_NATIVE_FLOAT; }
hid_t aedh5_native_double(void) { return H5T_NATIVE_DOUBLE; }
hid_t aedh5_native_int64(void) { return H5T_NATIVE_INT64; }
hid_t aedh5_native_uint8(void) { return H5T_NATIVE_UINT8; }
hid_t aedh5_ieee_f32le(void) { return H5T_IEEE_F32LE; }
hid_t aedh5_std_i64le(void) { return H5T_STD_I64LE; }
hid_t aedh5_variable_string(void) {
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    H5Tset_cset(type, H5T_CSET_UTF8);
    return type;
}
hid_t aedh5_dataset_create_plist(void) { return H5Pcreate(H5P_DATASET_CREATE); }
hid_t aedh5_file_access_plist(void) { return H5Pcreate(H5P_FILE_ACCESS); }
unsigned aedh5_acc_rdonly(void) { return H5F_ACC_RDONLY; }
unsigned aedh5_acc_rdwr(void) { return H5F_ACC_RDWR; }
unsigned aedh5_acc_excl(void) { return H5F_ACC_EXCL; }
void aedh5_silence_errors(void) { H5Eset_auto2(H5E_DEFAULT, NULL, NULL); }

static herr_t keep_innermost(unsigned n, const H5E_error2_t *error, void *context) {
    (void)n;
    char **slot = (char **)context;
    if (*slot == NULL && error->desc && error->desc[0]) *slot = (char *)error->desc;
    return 0;
}
void aedh5_last_error(char *buffer, int capacity) {
    if (capacity <= 0) return;
    char *innermost = NULL;
    H5Ewalk2(H5E_DEFAULT, H5E_WALK_UPWARD, keep_innermost, &innermost);
    buffer[0] = 0;
    if (innermost) {
        strncpy(buffer, innermost, (size_t)capacity - 1);
        buffer[capacity - 1] = 0;
    }
}
