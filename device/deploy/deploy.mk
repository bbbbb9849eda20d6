# Raspberry Pi deploy targets (device/deploy/README.md). Included by the main Makefile.
#   make deploy-pi PI=pi@raspberrypi.local [PI_PORT=22] [PI_KEY=~/.ssh/id_ed25519] [PI_DIR=edge-demo]
#   make pi-status | pi-logs | pi-rollback   (same PI settings)
# Every PI_* setting is read from the environment by `python -m device.deploy`; see --help.
PI_SETTINGS := PI PI_PORT PI_KEY PI_DIR PI_KNOWN_HOSTS PI_SSH_OPTS PI_PYTHON PI_SERVICE_MANAGER \
  PI_SERVICE PI_SOURCE PI_WEB_HOST PI_WEB_PORT PI_RUN_ARGS PI_HEALTH_TIMEOUT PI_KEEP PI_PIP_ARGS \
  PI_LINES PI_FOLLOW PI_COPY PI_BWLIMIT PI_MIN_FREE_MB PI_DEVICE_DIR PI_DRY_RUN
export $(PI_SETTINGS)

.PHONY: deploy-pi pi-status pi-logs pi-rollback

deploy-pi:
	$(PY) -m device.deploy deploy --out "$(OUT)"

pi-status pi-logs pi-rollback:
	$(PY) -m device.deploy $(patsubst pi-%,%,$@)
