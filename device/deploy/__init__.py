"""Deploy the current build and the device runner to a Raspberry Pi over ssh (`make deploy-pi`).

`cli.py` runs on the deploying machine; `remote.py` is sent to the Pi's python3 for each step.
See device/deploy/README.md.
"""
