// Classification responder on ESP32: the result on the serial log, and the status LED
// (CONFIG_FW_LED_GPIO) lit while the smoothed class is not class 0.
#include "classification_responder.h"
#include "driver/gpio.h"
#include "esp_log.h"
#include "model_settings.h"
#include "postprocess.h"
#include "sdkconfig.h"

namespace {
const char* TAG = "classifier";
bool led_ready = false;
}  // namespace

void RespondToClassification(const Classification& c) {
  int top[3];
  const int n = tinyml::TopK(c.scores, c.count, 3, top);
  static float probs[kCategoryCount];
  tinyml::SoftmaxDequantized(c.scores, c.count, kOutputScale, kOutputZeroPoint, probs);
  ESP_LOGI(TAG, "frame %d: %s %.2f (2nd %s %.2f) smoothed %s, %llu cycles%s", c.index,
           kCategoryLabels[top[0]], probs[top[0]], n > 1 ? kCategoryLabels[top[1]] : "-",
           n > 1 ? probs[top[1]] : 0.0f,
           c.smoothed_label >= 0 ? kCategoryLabels[c.smoothed_label] : "-",
           (unsigned long long)c.counter,
           c.expected == nullptr ? ""
           : [&] {
               for (int i = 0; i < c.count; ++i)
                 if (c.scores[i] != c.expected[i]) return " MISMATCH";
               return " match";
             }());
#if CONFIG_FW_LED_GPIO >= 0
  const gpio_num_t led = static_cast<gpio_num_t>(CONFIG_FW_LED_GPIO);
  if (!led_ready) {
    gpio_reset_pin(led);
    gpio_set_direction(led, GPIO_MODE_OUTPUT);
    led_ready = true;
  }
  const bool on = c.smoothed_label > 0;
#if CONFIG_FW_LED_ACTIVE_LOW
  gpio_set_level(led, on ? 0 : 1);
#else
  gpio_set_level(led, on ? 1 : 0);
#endif
#else
  (void)led_ready;
#endif
}
