// Camera image provider (ESP32, ESP32-S3) with esp32-camera: RGB565 QVGA frames, centre
// crop, box reduce, bilinear resize, colour and quantisation exactly as the pipeline does
// (firmware/src/image_preprocess.cc, tested against pipeline/preprocess.py).
#include "esp_camera.h"
#include "esp_log.h"
#include "image_preprocess.h"
#include "image_provider.h"
#include "model_settings.h"
#include "sdkconfig.h"

namespace {
const char* TAG = "camera";
bool initialised = false;

camera_config_t Config() {
  camera_config_t c = {};
#if defined(CONFIG_FW_BOARD_ESP32S3_EYE)
  c.pin_pwdn = -1; c.pin_reset = -1; c.pin_xclk = 15; c.pin_sccb_sda = 4; c.pin_sccb_scl = 5;
  c.pin_d7 = 16; c.pin_d6 = 17; c.pin_d5 = 18; c.pin_d4 = 12; c.pin_d3 = 10; c.pin_d2 = 8;
  c.pin_d1 = 9; c.pin_d0 = 11; c.pin_vsync = 6; c.pin_href = 7; c.pin_pclk = 13;
#elif defined(CONFIG_FW_BOARD_XIAO_S3_SENSE)
  c.pin_pwdn = -1; c.pin_reset = -1; c.pin_xclk = 10; c.pin_sccb_sda = 40; c.pin_sccb_scl = 39;
  c.pin_d7 = 48; c.pin_d6 = 11; c.pin_d5 = 12; c.pin_d4 = 14; c.pin_d3 = 16; c.pin_d2 = 18;
  c.pin_d1 = 17; c.pin_d0 = 15; c.pin_vsync = 38; c.pin_href = 47; c.pin_pclk = 13;
#elif defined(CONFIG_FW_BOARD_AI_THINKER)
  c.pin_pwdn = 32; c.pin_reset = -1; c.pin_xclk = 0; c.pin_sccb_sda = 26; c.pin_sccb_scl = 27;
  c.pin_d7 = 35; c.pin_d6 = 34; c.pin_d5 = 39; c.pin_d4 = 36; c.pin_d3 = 21; c.pin_d2 = 19;
  c.pin_d1 = 18; c.pin_d0 = 5; c.pin_vsync = 25; c.pin_href = 23; c.pin_pclk = 22;
#else
#error "no camera board selected (menuconfig: TinyML classifier -> Camera board)"
#endif
  c.xclk_freq_hz = 20000000;
  c.ledc_timer = LEDC_TIMER_0;
  c.ledc_channel = LEDC_CHANNEL_0;
  c.pixel_format = PIXFORMAT_RGB565;  // big-endian 16-bit words
  c.frame_size = FRAMESIZE_QVGA;      // 320x240: crop 240, box 2x2, bilinear to the model
  c.jpeg_quality = 12;
  c.fb_count = 2;
  c.fb_location = CAMERA_FB_IN_PSRAM;
  c.grab_mode = CAMERA_GRAB_LATEST;
  return c;
}
}  // namespace

TfLiteStatus GetImage(int index, int image_width, int image_height, int channels,
                      int8_t* image_data) {
  (void)index;
  if (image_width != image_height || channels != (kPreprocessGray ? 1 : 3)) {
    ESP_LOGE(TAG, "model input %dx%dx%d is not what the preprocessing makes", image_width,
             image_height, channels);
    return kTfLiteError;
  }
  if (!initialised) {
    camera_config_t config = Config();
    if (esp_camera_init(&config) != ESP_OK) {
      ESP_LOGE(TAG, "esp_camera_init failed");
      return kTfLiteError;
    }
    initialised = true;
  }
  camera_fb_t* fb = esp_camera_fb_get();
  if (fb == nullptr) {
    ESP_LOGE(TAG, "no frame");
    return kTfLiteError;
  }
  tinyml::Frame frame;
  frame.data = fb->buf;
  frame.width = fb->width;
  frame.height = fb->height;
  frame.stride = 0;
  frame.format = fb->format == PIXFORMAT_GRAYSCALE ? tinyml::PixelFormat::kGray8
                 : fb->format == PIXFORMAT_RGB888  ? tinyml::PixelFormat::kRgb888
                                                   : tinyml::PixelFormat::kRgb565Be;
  tinyml::PreprocessSpec spec;
  spec.size = image_width;
  spec.gray = kPreprocessGray;
  const bool ok = tinyml::PreprocessToInt8(frame, spec, kInputLut, image_data);
  esp_camera_fb_return(fb);
  return ok ? kTfLiteOk : kTfLiteError;
}

const int8_t* ExpectedScores(int) { return nullptr; }
int ExpectedLabel(int) { return -1; }
