// ST NUCLEO-L4R5ZI (STM32L4R5ZI). Registers from RM0432; no HAL needed for this much.
//   clock: HSI16 -> PLL (M=1, N=15, R=2) = 120 MHz SYSCLK, voltage range 1 boost mode,
//          flash 5 wait states, AHB/APB1/APB2 undivided;
//   console: LPUART1 on PG7/PG8 (AF8), VDDIO2 enabled, 115200 baud from PCLK1;
//   LEDs: LD1 green PC7, LD2 blue PB7, LD3 red PA9 show the class (bit 0..2);
//   counter: SysTick on the core clock = cycles.
#include <stdint.h>

#include "board.h"

#define REG(addr) (*(volatile uint32_t*)(addr))
#define RCC 0x40021000u
#define RCC_CR REG(RCC + 0x00)
#define RCC_CFGR REG(RCC + 0x08)
#define RCC_PLLCFGR REG(RCC + 0x0C)
#define RCC_AHB2ENR REG(RCC + 0x4C)
#define RCC_APB1ENR1 REG(RCC + 0x58)
#define RCC_APB1ENR2 REG(RCC + 0x5C)
#define PWR 0x40007000u
#define PWR_CR1 REG(PWR + 0x00)
#define PWR_CR2 REG(PWR + 0x04)
#define PWR_SR2 REG(PWR + 0x14)
#define PWR_CR5 REG(PWR + 0x80)
#define FLASH_ACR REG(0x40022000u)
#define GPIOA 0x48000000u
#define GPIOB 0x48000400u
#define GPIOC 0x48000800u
#define GPIOG 0x48001800u
#define GPIO_MODER(p) REG((p) + 0x00)
#define GPIO_OSPEEDR(p) REG((p) + 0x08)
#define GPIO_BSRR(p) REG((p) + 0x18)
#define GPIO_AFRL(p) REG((p) + 0x20)
#define GPIO_AFRH(p) REG((p) + 0x24)
#define LPUART1 0x40008000u
#define LPUART_CR1 REG(LPUART1 + 0x00)
#define LPUART_BRR REG(LPUART1 + 0x0C)
#define LPUART_ISR REG(LPUART1 + 0x1C)
#define LPUART_TDR REG(LPUART1 + 0x28)

#define SYSCLK_HZ 120000000u
#define BAUD 115200u

void BoardCounterStart(void);

static void ClockInit(void) {
  RCC_APB1ENR1 |= 1u << 28;  // PWREN
  (void)RCC_APB1ENR1;
  // Range 1 boost (R1MODE = 0) before going above 80 MHz.
  PWR_CR5 &= ~(1u << 8);
  while (PWR_SR2 & (1u << 10)) {  // VOSF
  }
  FLASH_ACR = (FLASH_ACR & ~0xFu) | 5u | (1u << 8) | (1u << 9) | (1u << 10);  // 5 WS, prefetch, caches
  while ((FLASH_ACR & 0xFu) != 5u) {
  }
  RCC_CR |= 1u << 8;  // HSION
  while (!(RCC_CR & (1u << 10))) {
  }
  RCC_CR &= ~(1u << 24);  // PLL off
  while (RCC_CR & (1u << 25)) {
  }
  // PLLSRC = HSI16 (2), PLLM = /1 (0), PLLN = 15, PLLR = /2 (0), PLLREN.
  RCC_PLLCFGR = 2u | (0u << 4) | (15u << 8) | (0u << 25) | (1u << 24);
  RCC_CR |= 1u << 24;
  while (!(RCC_CR & (1u << 25))) {
  }
  // RM0432 6.2.9: through AHB/2 for at least 1 us when switching above 80 MHz.
  RCC_CFGR = (RCC_CFGR & ~(0xFu << 4)) | (0x8u << 4);
  RCC_CFGR = (RCC_CFGR & ~3u) | 3u;  // SW = PLL
  while (((RCC_CFGR >> 2) & 3u) != 3u) {
  }
  for (volatile int i = 0; i < 200; ++i) {
  }
  RCC_CFGR &= ~(0xFu << 4);  // AHB /1
}

static void GpioAf(uint32_t port, int pin, int af) {
  GPIO_MODER(port) = (GPIO_MODER(port) & ~(3u << (2 * pin))) | (2u << (2 * pin));
  GPIO_OSPEEDR(port) |= 2u << (2 * pin);
  volatile uint32_t* afr = pin < 8 ? &GPIO_AFRL(port) : &GPIO_AFRH(port);
  const int s = 4 * (pin & 7);
  *afr = (*afr & ~(0xFu << s)) | ((uint32_t)af << s);
}

static void GpioOut(uint32_t port, int pin) {
  GPIO_MODER(port) = (GPIO_MODER(port) & ~(3u << (2 * pin))) | (1u << (2 * pin));
}

void BoardInit(void) {
  ClockInit();
  RCC_AHB2ENR |= (1u << 0) | (1u << 1) | (1u << 2) | (1u << 6);  // GPIOA, B, C, G
  PWR_CR2 |= 1u << 9;                                           // IOSV: PG2..15 powered (VDDIO2)
  GpioAf(GPIOG, 7, 8);
  GpioAf(GPIOG, 8, 8);
  RCC_APB1ENR2 |= 1u << 0;  // LPUART1EN, kernel clock PCLK1 (CCIPR reset value)
  (void)RCC_APB1ENR2;
  LPUART_BRR = (uint32_t)((256ull * SYSCLK_HZ + BAUD / 2) / BAUD);
  LPUART_CR1 = (1u << 3) | (1u << 2) | 1u;  // TE, RE, UE
  GpioOut(GPIOC, 7);
  GpioOut(GPIOB, 7);
  GpioOut(GPIOA, 9);
  BoardCounterStart();
}

const char* BoardName(void) { return BOARD_NAME; }
const char* BoardCounterUnit(void) { return "cycles"; }

static void PutC(char c) {
  while (!(LPUART_ISR & (1u << 7))) {  // TXE
  }
  LPUART_TDR = (uint8_t)c;
}

void BoardWrite(const char* s, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    if (s[i] == '\n') PutC('\r');
    PutC(s[i]);
  }
}

// The smoothed class on the three user LEDs (off while there is no decision).
void BoardIndicateClass(int cls) {
  const uint32_t c = cls < 0 ? 0u : (uint32_t)cls + 1u;
  GPIO_BSRR(GPIOC) = (c & 1u) ? (1u << 7) : (1u << (7 + 16));
  GPIO_BSRR(GPIOB) = (c & 2u) ? (1u << 7) : (1u << (7 + 16));
  GPIO_BSRR(GPIOA) = (c & 4u) ? (1u << 9) : (1u << (9 + 16));
}

void BoardExit(int code) {
  BoardPrintf("exit %d\n", code);
  for (;;) {
    __asm__ volatile("wfi");
  }
}
