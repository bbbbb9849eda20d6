# Cortex-M boards (included by boards/<board>.mk): Debian's arm-none-eabi-gcc with newlib,
# TFLM's cortex_m_generic target, kernels CMSIS-NN (the default) or reference, QEMU's Arm
# machines. firmware/cortexm.mk and firmware.mk read the FW_ARCH_* variables.
FW_ARCH := cortex-m
FW_ARCH_CROSS := arm-none-eabi-
FW_ARCH_TFLM_TARGET := cortex_m_generic
FW_ARCH_KERNELS := cmsis_nn reference
FW_ARCH_CPU_FLAGS := -mcpu=% -mfpu=% -mfloat-abi=% -mthumb
FW_ARCH_C_SRCS := $(FW_DIR)/boards/common/startup.c $(FW_DIR)/boards/common/semihost.c
FW_ARCH_LINKER := g++
FW_ARCH_LDFLAGS := --specs=nano.specs --specs=nosys.specs -Wl,--no-warn-rwx-segments
FW_ARCH_PACKAGES := gcc-arm-none-eabi libnewlib-arm-none-eabi libstdc++-arm-none-eabi-newlib
FW_ARCH_QEMU := qemu-system-arm
FW_ARCH_QEMU_PACKAGE := qemu-system-arm
