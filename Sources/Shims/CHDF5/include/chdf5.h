// The only place aedist sees <hdf5.h>. HDF5's predefined types and property-list classes are macros over
// globals that Swift cannot import; these functions hand them out as plain values.
#ifndef AEDIST_CHDF5_H
#define AEDIST_CHDF5_H
#include <hdf5.h>

hid_t aedh5_native_float(void);
hid_t aedh5_native_double(void);
hid_t aedh5_native_int64(void);
hid_t aedh5_native_uint8(void);
hid_t aedh5_ieee_f32le(void);
hid_t aedh5_std_i64le(void);
/// A UTF-8 variable-length string type (what h5py writes for `str`); close it with H5Tclose.
hid_t aedh5_variable_string(void);
hid_t aedh5_dataset_create_plist(void);
hid_t aedh5_file_access_plist(void);
unsigned aedh5_acc_rdonly(void);
unsigned aedh5_acc_rdwr(void);
unsigned aedh5_acc_excl(void);
/// Stop HDF5 from printing its error stack: aedist reports its own message.
void aedh5_silence_errors(void);
/// The innermost description on HDF5's current error stack (empty when there is none).
void aedh5_last_error(char *buffer, int capacity);

#endif
