# resnet_keras: the two commands of the README.
#   make demo   install, then train a DRN on real CIFAR-10 and export it
#   make test   install with the test extras, then run the test suite
PYTHON ?= python3
SHARED ?= ../shared
CACHE ?= $(HOME)/.cache/resnet_keras
CIFAR := $(CACHE)/cifar10_jpeg
RUN_DIR ?= runs/demo
EXTRAS ?= cpu

.PHONY: install demo test bench

install:
	$(PYTHON) -m pip install -e ".[$(EXTRAS)]"

$(CIFAR):
	mkdir -p $(CACHE)
	tar xzf $(SHARED)/datasets/cifar10_jpeg.tar.gz -C $(CACHE)

demo: install $(CIFAR)
	$(PYTHON) -m resnet_keras list
	$(PYTHON) -m resnet_keras info drn_c_26 --image-size 32 --classes 10

test:
	$(PYTHON) -m pip install -e ".[$(EXTRAS),test]"
	$(PYTHON) -m pytest tests

bench: install
	$(PYTHON) benchmarks/bench_forward.py
