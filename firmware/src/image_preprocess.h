// Camera frame -> model input, exactly as pipeline/preprocess.py computes it.
//
// Board-independent, no TFLM, no allocation, integer arithmetic only, so the same file
// builds with the host's g++ (unit tests, compared with the Python pipeline from pytest)
// and with arm-none-eabi-g++ / xtensa / riscv compilers for the firmware.
//
// The steps (see pipeline/preprocess.py):
//   1. centre crop to the largest square;
//   2. if that square is at least twice the model size, average non-overlapping k x k
//      blocks (k = side / size), rounding half up, trimming the remainder evenly;
//   3. bilinear resize to size x size, half-pixel centres, 11-bit fixed-point weights;
//   4. keep RGB, or convert to grey with ITU-R 601 weights (Pillow's convert('L'));
//   5+6. normalise and quantise through the model's 256-entry input table.
//
// Camera pixel formats: RGB888 (R, G, B bytes), GRAY8, and RGB565 (little- or big-endian
// 16-bit words; esp32-camera delivers big-endian). RGB565 is first expanded to RGB888 by
// bit replication: r8 = r5 << 3 | r5 >> 2, g8 = g6 << 2 | g6 >> 4, b8 = b5 << 3 | b5 >> 2;
// a grey frame is the RGB frame with r = g = b. The Python side of the tests expands the
// same way before calling pipeline.preprocess.
#ifndef FIRMWARE_SRC_IMAGE_PREPROCESS_H_
#define FIRMWARE_SRC_IMAGE_PREPROCESS_H_

#include <stddef.h>
#include <stdint.h>

namespace tinyml {

enum class PixelFormat : uint8_t {
  kRgb888 = 0,
  kGray8 = 1,
  kRgb565Le = 2,  // 16-bit words in little-endian byte order
  kRgb565Be = 3,  // 16-bit words in big-endian byte order (esp32-camera, OV2640/OV7670)
};

struct Frame {
  const uint8_t* data;
  int width;
  int height;
  int stride;  // bytes per row; 0 means width * bytes per pixel
  PixelFormat format;
};

struct PreprocessSpec {
  int size;      // model input is size x size
  bool gray;     // model takes 1 channel (grey) instead of 3 (RGB)
};

constexpr int kWeightBits = 11;
constexpr int kWeightOne = 1 << kWeightBits;

int BytesPerPixel(PixelFormat format);

// Bilinear taps for one axis, as pipeline.preprocess._bilinear_taps: source index i0, the
// next index i1 (clamped) and the 11-bit weight of i1, for destination index d.
void BilinearTap(int n_in, int n_out, int d, int* i0, int* i1, int* weight);

// Geometry of steps 1-3 for a frame of width x height: the crop origin, the box factor k
// (1 when no box reduction happens) and the size of the box-reduced square.
struct Geometry {
  int x0, y0;    // top-left of the area used, in frame pixels (crop + box trim)
  int k;         // box factor, >= 1
  int reduced;   // side of the square after box reduction
};
Geometry ComputeGeometry(int width, int height, int size);

// Steps 1-4: frame -> size x size x (1|3) uint8 pixels, written to out (row-major HWC).
// Returns false (and writes nothing) if the frame is smaller than 1x1 or the spec is bad.
bool PreprocessToUint8(const Frame& frame, const PreprocessSpec& spec, uint8_t* out);

// Steps 1-6: frame -> quantised int8 model input through the model's input table
// (kInputLut in the generated model_settings.h).
bool PreprocessToInt8(const Frame& frame, const PreprocessSpec& spec, const int8_t lut[256],
                      int8_t* out);

// Step 6 alone, in place semantics allowed (out may alias in).
void ApplyLut(const uint8_t* in, size_t n, const int8_t lut[256], int8_t* out);

// Step 4 alone for one pixel.
inline uint8_t RgbToGray(uint32_t r, uint32_t g, uint32_t b) {
  return static_cast<uint8_t>((r * 19595u + g * 38470u + b * 7471u + 0x8000u) >> 16);
}

// Pixel (x, y) of the frame as RGB888.
void ReadRgb(const Frame& frame, int x, int y, uint8_t rgb[3]);

}  // namespace tinyml

#endif  // FIRMWARE_SRC_IMAGE_PREPROCESS_H_
