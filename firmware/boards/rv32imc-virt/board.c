// RV32IMC on QEMU's RISC-V `virt` machine (boards/rv32imc-virt.mk): the board seam.
// Console: the NS16550A UART at 0x10000000 (QEMU's first serial port). Exit: the SiFive test
// device at 0x100000 (0x5555 = pass, QEMU exits 0; (code << 16) | 0x3333 = fail, QEMU exits
// with `code`). Counter: instret (boards/common/board_common.c).
#include <stdint.h>

#include "board.h"

#define UART_BASE 0x10000000u
#define UART_THR (*(volatile uint8_t*)(UART_BASE + 0))
#define UART_LSR (*(volatile uint8_t*)(UART_BASE + 5))
#define UART_LSR_THRE 0x20u
#define TEST_DEVICE (*(volatile uint32_t*)0x00100000u)

void BoardCounterStart(void);
uint64_t BoardCounter(void);

void BoardInit(void) { BoardCounterStart(); }

const char* BoardName(void) { return BOARD_NAME; }
const char* BoardCounterUnit(void) { return "instructions"; }

static void PutChar(char c) {
  while (!(UART_LSR & UART_LSR_THRE)) {
  }
  UART_THR = (uint8_t)c;
}

void BoardWrite(const char* s, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (s[i] == '\n') PutChar('\r');
    PutChar(s[i]);
  }
}

void BoardExit(int code) {
  TEST_DEVICE = code == 0 ? 0x5555u : ((uint32_t)(code & 0xffff) << 16) | 0x3333u;
  for (;;) {
  }
}

// ESP-IDF's microsecond timer, which esp-tflite-micro's ESP-NN kernels read for their timing
// counters (boards/common/esp_timer/esp_timer.h). Here: the instruction counter, as if one
// instruction took 1 us; nothing in the output depends on it.
int64_t esp_timer_get_time(void) { return (int64_t)BoardCounter(); }
