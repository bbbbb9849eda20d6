// Where images come from: one implementation per board (test vectors on the Cortex-M
// boards, the camera on ESP32). Fills the model's int8 input tensor.
#ifndef FIRMWARE_APP_IMAGE_PROVIDER_H_
#define FIRMWARE_APP_IMAGE_PROVIDER_H_

#include <stdint.h>

#include "tensorflow/lite/c/common.h"

// Writes image `index` (rows x cols x channels int8, the model's quantised input) into
// image_data. kTfLiteError when there is no such image (end of the test vectors) or the
// camera failed.
TfLiteStatus GetImage(int index, int image_width, int image_height, int channels,
                      int8_t* image_data);

// Test-vector providers also know what the host tflite-micro runtime answered for the
// image (kCategoryCount int8 scores) and the true label; nullptr / -1 otherwise.
const int8_t* ExpectedScores(int index);
int ExpectedLabel(int index);

#endif  // FIRMWARE_APP_IMAGE_PROVIDER_H_
