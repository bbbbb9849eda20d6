# RV32 boards (included by boards/<board>.mk): Debian's riscv64-unknown-elf-gcc (its rv32
# multilibs) with picolibc, TFLM's riscv32_generic target (RV32IMC, ilp32: the ESP32-C3's
# instruction set), kernels ESP-NN (the default: what an ESP32-C3 build with esp-tflite-micro
# runs) or reference, QEMU's riscv32 machines. firmware/cortexm.mk and firmware.mk read the
# FW_ARCH_* variables.
FW_ARCH := rv32
FW_ARCH_CROSS := riscv64-unknown-elf-
FW_ARCH_TFLM_TARGET := riscv32_generic
FW_ARCH_KERNELS := esp_nn reference
FW_ARCH_CPU_FLAGS := -march=% -mabi=% -mcmodel=%
FW_ARCH_C_SRCS := $(FW_DIR)/boards/common/startup_rv32.c
# picolibc for C (headers and libc.a of the rv32im/ilp32 multilib, which GCC picks for rv32imc).
FW_ARCH_FLAGS := --specs=picolibc.specs
# Debian packages no libstdc++ for riscv64-unknown-elf. TFLM uses only header-only parts of
# it (<cstdint>, <cmath>, <algorithm>, <limits>, <type_traits>, <utility>, <new>): those
# headers come from Debian's libstdc++ for arm-none-eabi, the same GCC 12, whose
# bits/c++config.h describes a 32-bit bare-metal newlib target; no libstdc++ code is linked
# (boards/common/startup_rv32.c has the two runtime hooks virtual destructors need).
FW_ARCH_LIBSTDCXX := $(lastword $(wildcard /usr/include/newlib/c++/*))
FW_ARCH_CXXFLAGS := -nostdinc++ -isystem $(FW_ARCH_LIBSTDCXX) -isystem $(FW_ARCH_LIBSTDCXX)/arm-none-eabi
# TFLM's riscv32_generic links without relaxation (b/279805615).
# Linked by gcc, not g++ (no libstdc++ to link).
FW_ARCH_LINKER := gcc
FW_ARCH_LDFLAGS := --specs=picolibc.specs -Wl,--no-relax
FW_ARCH_PACKAGES := gcc-riscv64-unknown-elf picolibc-riscv64-unknown-elf libstdc++-arm-none-eabi-newlib
FW_ARCH_QEMU := qemu-system-riscv32
FW_ARCH_QEMU_PACKAGE := qemu-system-misc
