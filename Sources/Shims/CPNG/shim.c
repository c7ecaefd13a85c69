#include "cpng.h"
#include <png.h>
#include <string.h>

int aedpng_write(const char *path, int width, int height, int channels, const uint8_t *pixels, char *error, int capacity) {
    png_image image;
    memset(&image, 0, sizeof image);
    image.version = PNG_IMAGE_VERSION;
    image.width = (png_uint_32)width;
    image.height = (png_uint_32)height;
    image.format = channels == 3 ? PNG_FORMAT_RGB : PNG_FORMAT_GRAY;
    if (png_image_write_to_file(&image, path, 0, pixels, 0, NULL)) return 0;
    if (capacity > 0) {
        strncpy(error, image.message, (size_t)capacity - 1);
        error[capacity - 1] = 0;
    }
    png_image_free(&image);
    return 1;
}
