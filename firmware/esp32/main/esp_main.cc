// ESP-IDF entry: the same setup()/loop() as the Cortex-M boards, forever (camera) or until
// the test vectors run out (ESP32-C3), then the bit-exactness status is logged.
#include "board.h"
#include "freertos/FreeRTOS.h"
#include "freertos/task.h"
#include "main_functions.h"

extern "C" void app_main(void) {
  BoardInit();
  if (!setup()) {
    BoardPrintf("setup failed\n");
    return;
  }
  while (loop()) {
    vTaskDelay(1);  // let the idle task feed the watchdog
  }
  BoardPrintf("done: %d outputs differ from the host tflite-micro runtime\n", finish());
}
