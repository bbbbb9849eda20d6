// ESP-IDF's esp_timer.h, as far as esp-tflite-micro's kernels/esp_nn/*.cc use it (their
// per-kernel timing counters), for builds outside ESP-IDF. The board defines the function
// (boards/rv32imc-virt/board.c: the board counter; it only feeds those counters).
#ifndef FIRMWARE_BOARDS_COMMON_ESP_TIMER_ESP_TIMER_H_
#define FIRMWARE_BOARDS_COMMON_ESP_TIMER_ESP_TIMER_H_

#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

int64_t esp_timer_get_time(void);

#ifdef __cplusplus
}
#endif

#endif  // FIRMWARE_BOARDS_COMMON_ESP_TIMER_ESP_TIMER_H_
