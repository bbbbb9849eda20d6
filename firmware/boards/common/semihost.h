// Arm semihosting (the host side is QEMU's `-semihosting-config enable=on` or a debugger).
// Only for boards run under QEMU or with a probe attached: without a host, BKPT 0xAB faults.
#ifndef FIRMWARE_BOARDS_COMMON_SEMIHOST_H_
#define FIRMWARE_BOARDS_COMMON_SEMIHOST_H_

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

int SemihostCall(int op, void* arg);
void SemihostWrite0(const char* s);  // SYS_WRITE0: a NUL-terminated string to the console
// SYS_EXIT_EXTENDED(ApplicationExit, code): QEMU exits with status `code`.
void SemihostExit(int code) __attribute__((noreturn));
// SYS_GET_CMDLINE into buf; returns the length or -1.
int SemihostCmdline(char* buf, size_t size);

#ifdef __cplusplus
}
#endif

#endif  // FIRMWARE_BOARDS_COMMON_SEMIHOST_H_
