// Bare-metal entry for the Cortex-M boards (ESP32 has its own app_main).
#include "board.h"
#include "main_functions.h"

int main(int, char**) {
  BoardInit();
  if (!setup()) return 200;
  while (loop()) {
  }
  return finish();
}
