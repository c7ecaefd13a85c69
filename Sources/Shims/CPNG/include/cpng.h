// The only place aedist sees <png.h>: one call that writes 8-bit grey or RGB pixels to a PNG file with libpng.
#ifndef AEDIST_CPNG_H
#define AEDIST_CPNG_H
#include <stdint.h>

/// Writes `height` rows of `width` pixels of `channels` (1 grey, 3 RGB) bytes each. Returns 0, or non-zero with
/// libpng's message in `error`.
int aedpng_write(const char *path, int width, int height, int channels, const uint8_t *pixels, char *error, int capacity);

#endif
