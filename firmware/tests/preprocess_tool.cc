// Command-line driver for the shared C++ (firmware/src) so that pytest can compare it with
// the Python pipeline. Built with the host g++ and, unchanged, with arm-none-eabi-g++ for a
// Cortex-M board run under QEMU with semihosting (argv and files come from the host).
//
//   preprocess_tool taps N_IN N_OUT                       -> "i0 i1 w" per output index
//   preprocess_tool frame FMT W H SIZE GRAY IN OUT [LUT]  -> OUT: size*size*C bytes
//        FMT: rgb888 | gray8 | rgb565le | rgb565be; GRAY: 0|1; with LUT (256 bytes, int8)
//        OUT holds the int8 model input, without it the uint8 pixels
//   preprocess_tool post N K SCALE ZP WINDOW THRESH MINCOUNT IN
//        IN: rows of N int8 scores; per row prints "argmax | top-k | softmax | smoothed"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <vector>

#include "image_preprocess.h"
#include "postprocess.h"

using tinyml::PixelFormat;

static bool ReadFile(const char* path, std::vector<uint8_t>* out) {
  FILE* f = fopen(path, "rb");
  if (!f) return false;
  uint8_t buf[4096];
  size_t n;
  while ((n = fread(buf, 1, sizeof(buf), f)) > 0) out->insert(out->end(), buf, buf + n);
  fclose(f);
  return true;
}

static int Usage() {
  fprintf(stderr, "usage: see the comment at the top of preprocess_tool.cc\n");
  return 2;
}

int main(int argc, char** argv) {
  if (argc < 2) return Usage();
  if (!strcmp(argv[1], "taps") && argc == 4) {
    const int n_in = atoi(argv[2]), n_out = atoi(argv[3]);
    for (int d = 0; d < n_out; ++d) {
      int i0, i1, w;
      tinyml::BilinearTap(n_in, n_out, d, &i0, &i1, &w);
      printf("%d %d %d\n", i0, i1, w);
    }
    return 0;
  }
  if (!strcmp(argv[1], "frame") && (argc == 9 || argc == 10)) {
    PixelFormat fmt;
    if (!strcmp(argv[2], "rgb888")) fmt = PixelFormat::kRgb888;
    else if (!strcmp(argv[2], "gray8")) fmt = PixelFormat::kGray8;
    else if (!strcmp(argv[2], "rgb565le")) fmt = PixelFormat::kRgb565Le;
    else if (!strcmp(argv[2], "rgb565be")) fmt = PixelFormat::kRgb565Be;
    else return Usage();
    tinyml::Frame frame;
    frame.width = atoi(argv[3]);
    frame.height = atoi(argv[4]);
    frame.stride = 0;
    frame.format = fmt;
    tinyml::PreprocessSpec spec;
    spec.size = atoi(argv[5]);
    spec.gray = atoi(argv[6]) != 0;
    std::vector<uint8_t> in;
    if (!ReadFile(argv[7], &in)) {
      fprintf(stderr, "cannot read %s\n", argv[7]);
      return 1;
    }
    const size_t need = static_cast<size_t>(frame.width) * frame.height * tinyml::BytesPerPixel(fmt);
    if (in.size() != need) {
      fprintf(stderr, "%s has %u bytes, expected %u\n", argv[7], (unsigned)in.size(), (unsigned)need);
      return 1;
    }
    frame.data = in.data();
    const size_t n = static_cast<size_t>(spec.size) * spec.size * (spec.gray ? 1 : 3);
    std::vector<uint8_t> out(n);
    bool ok;
    if (argc == 10) {
      std::vector<uint8_t> lut;
      if (!ReadFile(argv[9], &lut) || lut.size() != 256) {
        fprintf(stderr, "bad LUT %s\n", argv[9]);
        return 1;
      }
      ok = tinyml::PreprocessToInt8(frame, spec, reinterpret_cast<const int8_t*>(lut.data()),
                                    reinterpret_cast<int8_t*>(out.data()));
    } else {
      ok = tinyml::PreprocessToUint8(frame, spec, out.data());
    }
    if (!ok) {
      fprintf(stderr, "preprocess rejected the frame\n");
      return 1;
    }
    FILE* f = fopen(argv[8], "wb");
    if (!f || fwrite(out.data(), 1, n, f) != n) {
      fprintf(stderr, "cannot write %s\n", argv[8]);
      return 1;
    }
    fclose(f);
    return 0;
  }
  if (!strcmp(argv[1], "post") && argc == 10) {
    const int n = atoi(argv[2]), k = atoi(argv[3]);
    const float scale = static_cast<float>(atof(argv[4]));
    const int zp = atoi(argv[5]);
    tinyml::ScoreSmoother smoother;
    if (!smoother.Init(n, atoi(argv[6]), atoi(argv[7]), atoi(argv[8]))) {
      fprintf(stderr, "bad smoother parameters\n");
      return 1;
    }
    std::vector<uint8_t> in;
    if (!ReadFile(argv[9], &in) || n < 1 || in.size() % n) return Usage();
    std::vector<int> idx(n);
    std::vector<float> probs(n);
    for (size_t row = 0; row < in.size() / n; ++row) {
      const int8_t* s = reinterpret_cast<const int8_t*>(in.data()) + row * n;
      printf("%d |", tinyml::Argmax(s, n));
      const int got = tinyml::TopK(s, n, k, idx.data());
      for (int i = 0; i < got; ++i) printf(" %d", idx[i]);
      printf(" |");
      tinyml::SoftmaxDequantized(s, n, scale, zp, probs.data());
      for (int i = 0; i < n; ++i) printf(" %.6f", static_cast<double>(probs[i]));
      const tinyml::ScoreSmoother::Result r = smoother.Update(s);
      printf(" | %d %d %d %d\n", r.label, r.score, r.accepted ? 1 : 0, r.changed ? 1 : 0);
    }
    return 0;
  }
  return Usage();
}
