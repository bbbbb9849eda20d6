#include "image_preprocess.h"

namespace tinyml {

int BytesPerPixel(PixelFormat format) {
  switch (format) {
    case PixelFormat::kRgb888:
      return 3;
    case PixelFormat::kGray8:
      return 1;
    case PixelFormat::kRgb565Le:
    case PixelFormat::kRgb565Be:
      return 2;
  }
  return 0;
}

// pipeline.preprocess._bilinear_taps computes, in float64,
//   src = max((d + 0.5) * n_in / n_out - 0.5, 0); i0 = floor(src); w = floor(frac * 2048 + 0.5).
// Here the same in exact integers: src = num / den with num = (2d + 1) n_in - n_out and
// den = 2 n_out. (The float64 result equals the exact one for every size a camera or a
// model can have: see tests/test_firmware_preprocess.py, which compares all tap tables.)
void BilinearTap(int n_in, int n_out, int d, int* i0, int* i1, int* weight) {
  const int64_t den = 2 * static_cast<int64_t>(n_out);
  int64_t num = (2 * static_cast<int64_t>(d) + 1) * n_in - n_out;
  if (num < 0) num = 0;
  int64_t i = num / den;
  if (i > n_in - 1) i = n_in - 1;
  const int64_t rem = num - i * den;  // frac = rem / den
  *weight = static_cast<int>((rem * 2 * kWeightOne + den) / (2 * den));
  *i0 = static_cast<int>(i);
  *i1 = static_cast<int>(i + 1 < n_in ? i + 1 : n_in - 1);
}

Geometry ComputeGeometry(int width, int height, int size) {
  Geometry g;
  const int side = width < height ? width : height;
  const int cx = (width - side) / 2;
  const int cy = (height - side) / 2;
  g.k = side / size;
  if (g.k >= 2) {
    g.reduced = side / g.k;
    const int trim = (side - g.reduced * g.k) / 2;
    g.x0 = cx + trim;
    g.y0 = cy + trim;
  } else {
    g.k = 1;
    g.reduced = side;
    g.x0 = cx;
    g.y0 = cy;
  }
  return g;
}

void ReadRgb(const Frame& frame, int x, int y, uint8_t rgb[3]) {
  const int bpp = BytesPerPixel(frame.format);
  const int stride = frame.stride ? frame.stride : frame.width * bpp;
  const uint8_t* p = frame.data + static_cast<size_t>(y) * stride + static_cast<size_t>(x) * bpp;
  switch (frame.format) {
    case PixelFormat::kRgb888:
      rgb[0] = p[0];
      rgb[1] = p[1];
      rgb[2] = p[2];
      return;
    case PixelFormat::kGray8:
      rgb[0] = rgb[1] = rgb[2] = p[0];
      return;
    case PixelFormat::kRgb565Le:
    case PixelFormat::kRgb565Be: {
      const uint32_t v = frame.format == PixelFormat::kRgb565Le
                             ? (static_cast<uint32_t>(p[1]) << 8) | p[0]
                             : (static_cast<uint32_t>(p[0]) << 8) | p[1];
      const uint32_t r5 = (v >> 11) & 0x1f, g6 = (v >> 5) & 0x3f, b5 = v & 0x1f;
      rgb[0] = static_cast<uint8_t>((r5 << 3) | (r5 >> 2));
      rgb[1] = static_cast<uint8_t>((g6 << 2) | (g6 >> 4));
      rgb[2] = static_cast<uint8_t>((b5 << 3) | (b5 >> 2));
      return;
    }
  }
}

namespace {

// Pixel (x, y) of the cropped, box-reduced square (steps 1-2), as three channel values.
inline void ReducedPixel(const Frame& frame, const Geometry& g, int x, int y, uint32_t out[3]) {
  uint8_t rgb[3];
  if (g.k == 1) {
    ReadRgb(frame, g.x0 + x, g.y0 + y, rgb);
    out[0] = rgb[0];
    out[1] = rgb[1];
    out[2] = rgb[2];
    return;
  }
  uint32_t s0 = 0, s1 = 0, s2 = 0;
  const int bx = g.x0 + x * g.k, by = g.y0 + y * g.k;
  for (int j = 0; j < g.k; ++j) {
    for (int i = 0; i < g.k; ++i) {
      ReadRgb(frame, bx + i, by + j, rgb);
      s0 += rgb[0];
      s1 += rgb[1];
      s2 += rgb[2];
    }
  }
  const uint32_t n = static_cast<uint32_t>(g.k) * static_cast<uint32_t>(g.k);
  out[0] = (s0 + n / 2) / n;
  out[1] = (s1 + n / 2) / n;
  out[2] = (s2 + n / 2) / n;
}

template <typename Sink>
bool Run(const Frame& frame, const PreprocessSpec& spec, Sink sink) {
  if (frame.data == nullptr || frame.width < 1 || frame.height < 1 || spec.size < 1 ||
      BytesPerPixel(frame.format) == 0) {
    return false;
  }
  const Geometry g = ComputeGeometry(frame.width, frame.height, spec.size);
  const int n = g.reduced;
  constexpr uint32_t kOne = kWeightOne;
  constexpr int kShift = 2 * kWeightBits;
  size_t o = 0;
  for (int dy = 0; dy < spec.size; ++dy) {
    int y0, y1, wy;
    BilinearTap(n, spec.size, dy, &y0, &y1, &wy);
    for (int dx = 0; dx < spec.size; ++dx) {
      int x0, x1, wx;
      BilinearTap(n, spec.size, dx, &x0, &x1, &wx);
      uint32_t a[3], b[3], c[3], d[3];
      ReducedPixel(frame, g, x0, y0, a);
      ReducedPixel(frame, g, x1, y0, b);
      ReducedPixel(frame, g, x0, y1, c);
      ReducedPixel(frame, g, x1, y1, d);
      uint32_t px[3];
      for (int ch = 0; ch < 3; ++ch) {
        const uint32_t top = a[ch] * (kOne - wx) + b[ch] * wx;
        const uint32_t bot = c[ch] * (kOne - wx) + d[ch] * wx;
        const uint32_t val = top * (kOne - wy) + bot * wy;  // < 2^30
        px[ch] = (val + (1u << (kShift - 1))) >> kShift;
      }
      if (spec.gray) {
        sink(o++, RgbToGray(px[0], px[1], px[2]));
      } else {
        sink(o++, static_cast<uint8_t>(px[0]));
        sink(o++, static_cast<uint8_t>(px[1]));
        sink(o++, static_cast<uint8_t>(px[2]));
      }
    }
  }
  return true;
}

}  // namespace

bool PreprocessToUint8(const Frame& frame, const PreprocessSpec& spec, uint8_t* out) {
  return Run(frame, spec, [out](size_t i, uint8_t v) { out[i] = v; });
}

bool PreprocessToInt8(const Frame& frame, const PreprocessSpec& spec, const int8_t lut[256],
                      int8_t* out) {
  return Run(frame, spec, [out, lut](size_t i, uint8_t v) { out[i] = lut[v]; });
}

void ApplyLut(const uint8_t* in, size_t n, const int8_t lut[256], int8_t* out) {
  for (size_t i = 0; i < n; ++i) out[i] = lut[in[i]];
}

}  // namespace tinyml
