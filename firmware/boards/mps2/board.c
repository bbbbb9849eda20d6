// Arm MPS2 FPGA images under QEMU: mps2-an386 (Cortex-M4F) and mps2-an500 (Cortex-M7).
// Console: CMSDK APB UART0 at 0x40004000 (QEMU's first serial port). Exit: semihosting.
// Memory (QEMU and the AN386/AN500 application notes): 4 MiB ZBT SSRAM1 at 0x00000000 for
// code and read-only data, 4 MiB ZBT SSRAM2/3 at 0x20000000 for data.
#include <stdint.h>

#include "board.h"
#include "semihost.h"

#define UART0_BASE 0x40004000u
#define UART_DATA (*(volatile uint32_t*)(UART0_BASE + 0x00))
#define UART_STATE (*(volatile uint32_t*)(UART0_BASE + 0x04))
#define UART_CTRL (*(volatile uint32_t*)(UART0_BASE + 0x08))
#define UART_BAUDDIV (*(volatile uint32_t*)(UART0_BASE + 0x10))

void BoardCounterStart(void);

void BoardInit(void) {
  UART_BAUDDIV = 16;  // 25 MHz / 16: the fastest the CMSDK UART allows
  UART_CTRL = 1;      // TX enable
  BoardCounterStart();
}

const char* BoardName(void) { return BOARD_NAME; }
const char* BoardCounterUnit(void) { return "instructions"; }

void BoardWrite(const char* s, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (s[i] == '\n') {
      while (UART_STATE & 1u) {
      }
      UART_DATA = '\r';
    }
    while (UART_STATE & 1u) {
    }
    UART_DATA = (uint8_t)s[i];
  }
}

void BoardExit(int code) { SemihostExit(code); }
