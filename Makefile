# Two commands for a fresh machine:  make demo  and  make test.
# Both create .venv/ at the repository root when needed and install the package into it, editable,
# with the versions pinned in requirements/constraints.txt.

VENV := .venv
PYTHON := $(VENV)/bin/python
STAMP := $(VENV)/.installed
DEMO_OUT := out/demo
# The recording the demo runs on: a real nuScenes keyframe (lidar, six cameras, TF) from ../shared.
DEMO_BAG ?= ../shared/data/real/bags/nuscenes_demo_keyframe_mcap

.PHONY: setup demo test clean

setup: $(STAMP)

$(STAMP): setup.py setup.cfg requirements/constraints.txt scripts/setup_env.sh
	scripts/setup_env.sh $(VENV)
	touch $(STAMP)

demo: setup
	$(VENV)/bin/mmfusion inspect $(DEMO_BAG) --json $(DEMO_OUT)/inspect.json
	@echo "demo: report written to $(DEMO_OUT)/inspect.json"

test: setup
	$(PYTHON) -m pytest

clean:
	rm -rf $(VENV) out .pytest_cache
