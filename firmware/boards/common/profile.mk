# A firmware port's board facts come from its profile, boards/$(BOARD_PROFILE).toml (the
# pipeline and docs/BOARDS.md read the same file): firmware/tools/board_profile.py validates it
# and prints make assignments, evaluated here: BOARD_DESC, BOARD_CORE, BOARD_TARGET_ARCH,
# BOARD_FW_ARCH (boards/common/arch-$(BOARD_FW_ARCH).mk), BOARD_CLOCK_MHZ, BOARD_KERNELS,
# BOARD_MEMORY (the linker's memory map), BOARD_PROFILE_FILE. A malformed profile sets
# FW_PROFILE_ERROR (the file and the field), which `make firmware` reports; other targets work.
FW_PROFILE_PY ?= $(if $(wildcard $(PY)),$(PY),python3)
define FW_PROFILE_NL


endef
$(eval $(subst @@,$(FW_PROFILE_NL),$(shell $(FW_PROFILE_PY) $(FW_DIR)/tools/board_profile.py make $(BOARD_PROFILE))))
ifeq ($(strip $(BOARD_MEMORY)$(FW_PROFILE_ERROR)),)
FW_PROFILE_ERROR := cannot read boards/$(BOARD_PROFILE).toml: $(FW_PROFILE_PY) $(FW_DIR)/tools/board_profile.py printed nothing (it needs Python 3.11+)
endif
ifneq ($(FW_PROFILE_ERROR),)
BOARD_FW_ARCH := cortex-m
endif
