# ST NUCLEO-L4R5ZI: STM32L4R5ZI, Cortex-M4F at 120 MHz (PLL from HSI16, range 1 boost),
# 2 MiB flash at 0x08000000, 640 KiB SRAM1+2+3 contiguous at 0x20000000. Console: LPUART1
# on PG7 (TX) / PG8 (RX), the ST-LINK virtual COM port, 115200 8N1. Flash with pyocd.
# Board facts (description, core, TFLM target arch, memory map, pyocd target): boards/nucleo-l4r5zi.toml.
BOARD_PROFILE := nucleo-l4r5zi
include $(FW_DIR)/boards/common/profile.mk
include $(FW_DIR)/boards/common/arch-$(BOARD_FW_ARCH).mk
BOARD_SRCS := $(FW_DIR)/boards/nucleo-l4r5zi/board.c
BOARD_DEFINES := -DBOARD_NAME='"nucleo-l4r5zi"' -DBOARD_TICK_NUM=1 -DBOARD_TICK_DEN=1
