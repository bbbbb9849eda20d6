# Arm MPS2+ with the AN500 FPGA image: Cortex-M7, run by QEMU (`mps2-an500`).
# Board facts (description, core, TFLM target arch, memory map): boards/mps2-an500.toml.
BOARD_PROFILE := mps2-an500
include $(FW_DIR)/boards/common/profile.mk
include $(FW_DIR)/boards/common/arch-$(BOARD_FW_ARCH).mk
BOARD_SRCS := $(FW_DIR)/boards/mps2/board.c
BOARD_DEFINES := -DBOARD_NAME='"mps2-an500"' -DBOARD_TICK_NUM=1000000000 -DBOARD_TICK_DEN=25000000
BOARD_QEMU_MACHINE := mps2-an500
BOARD_QEMU_CONSOLE := uart
