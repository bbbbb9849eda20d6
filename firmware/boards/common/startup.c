// Minimal Cortex-M startup shared by every Cortex-M board: vector table, .data/.bss
// initialisation, FPU enable, C++ constructors, main(), exit through the board layer.
#include <stdint.h>
#include <string.h>

#include "board.h"
#if defined(FW_SEMIHOST_ARGV)
// Host tools built for a board (tests): newlib's semihosting syscalls (librdimon) give
// them stdio and files on the host; argv comes from SYS_GET_CMDLINE.
#include <stdio.h>

#include "semihost.h"
extern void initialise_monitor_handles(void);
#endif

extern uint32_t __data_load__, __data_start__, __data_end__;
extern uint32_t __bss_start__, __bss_end__;
extern uint32_t __stack_top__;
extern void __libc_init_array(void);
extern int main(int argc, char** argv);

void Reset_Handler(void);
void Default_Handler(void);
void HardFault_Handler(void);
void SysTick_Handler(void) __attribute__((weak, alias("Default_Handler")));
void NMI_Handler(void) __attribute__((weak, alias("Default_Handler")));
void MemManage_Handler(void) __attribute__((weak, alias("HardFault_Handler")));
void BusFault_Handler(void) __attribute__((weak, alias("HardFault_Handler")));
void UsageFault_Handler(void) __attribute__((weak, alias("HardFault_Handler")));
void SecureFault_Handler(void) __attribute__((weak, alias("HardFault_Handler")));

typedef void (*Vector)(void);
__attribute__((section(".vectors"), used)) const Vector g_vectors[16 + 32] = {
    (Vector)(uintptr_t)&__stack_top__,
    Reset_Handler,
    NMI_Handler,
    HardFault_Handler,
    MemManage_Handler,
    BusFault_Handler,
    UsageFault_Handler,
    SecureFault_Handler,
    0,
    0,
    0,
    Default_Handler,  // SVC
    Default_Handler,  // DebugMon
    0,
    Default_Handler,  // PendSV
    SysTick_Handler,
    // External interrupts: none used.
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler, Default_Handler, Default_Handler, Default_Handler,
    Default_Handler, Default_Handler,
};

void Default_Handler(void) {
  BoardPrintf("\nfatal: unexpected interrupt\n");
  BoardExit(254);
}

void HardFault_Handler(void) {
  volatile uint32_t* scb = (volatile uint32_t*)0xE000ED00;
  BoardPrintf("\nfatal: fault CFSR=0x%x HFSR=0x%x MMFAR=0x%x BFAR=0x%x\n", (unsigned)scb[0x28 / 4],
              (unsigned)scb[0x2C / 4], (unsigned)scb[0x34 / 4], (unsigned)scb[0x38 / 4]);
  BoardExit(255);
}

void Reset_Handler(void) {
#if defined(__ARM_FP)
  // CP10/CP11 full access before any floating-point instruction.
  *(volatile uint32_t*)0xE000ED88 |= 0xFu << 20;
  __asm__ volatile("dsb\n isb");
#endif
  // VTOR: our table, wherever the board links it.
  *(volatile uint32_t*)0xE000ED08 = (uint32_t)(uintptr_t)g_vectors;
  uint32_t* src = &__data_load__;
  for (uint32_t* dst = &__data_start__; dst < &__data_end__;) *dst++ = *src++;
  for (uint32_t* dst = &__bss_start__; dst < &__bss_end__;) *dst++ = 0;
  __libc_init_array();

  int argc = 0;
  char* argv[24];
#if defined(FW_SEMIHOST_ARGV)
  initialise_monitor_handles();
  static char cmdline[1024];
  int n = SemihostCmdline(cmdline, sizeof(cmdline) - 1);
  if (n > 0) {
    cmdline[n] = 0;
    char* p = cmdline;
    while (*p && argc < 23) {
      while (*p == ' ') *p++ = 0;
      if (!*p) break;
      argv[argc++] = p;
      while (*p && *p != ' ') ++p;
    }
  }
#endif
  argv[argc] = 0;
  const int status = main(argc, argv);
#if defined(FW_SEMIHOST_ARGV)
  fflush(stdout);
  fflush(stderr);
#endif
  BoardExit(status);
}

// newlib expects these when nothing else provides them (-nostartfiles).
void _init(void) {}
void _fini(void) {}

// Static C++ objects register destructors; bare metal never runs them.
void* __dso_handle = 0;
int __cxa_atexit(void (*fn)(void*), void* arg, void* dso) {
  (void)fn;
  (void)arg;
  (void)dso;
  return 0;
}
