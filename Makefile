# resnet_keras: the two commands of the README.
#   make demo   install, then train resnet20 on real CIFAR-10 and export it
#   make test   install with the test extras (and CPU torch), then run the test suite
# The interpreter to install into: the active virtual environment, else (when
# the system Python is externally managed, PEP 668) a .venv in the project.
ifeq ($(origin PYTHON), undefined)
PYTHON := $(shell python3 tools/python_env.py)
endif
ifeq ($(PYTHON),)
$(error no Python to install into: see the message above)
endif
SHARED ?= ../shared
CACHE ?= $(HOME)/.cache/resnet_keras
CIFAR := $(CACHE)/cifar10_jpeg
RUN_DIR ?= runs/demo
# The TensorFlow build (cpu, gpu or tensorflow); each target adds the extras of its use.
EXTRAS ?= cpu

.PHONY: install demo test bench results

install:
	$(PYTHON) -m pip install -e ".[$(EXTRAS),train]"

$(CIFAR):
	mkdir -p $(CACHE)
	tar xzf $(SHARED)/datasets/cifar10_jpeg.tar.gz -C $(CACHE)

# A short real run: resnet20 on CIFAR-10, 300 steps of batch 128 on two
# CPU replicas (MirroredStrategy), TensorBoard logs, a SavedModel export, then
# three test photos classified through the export as TF Serving would.
demo: install $(CIFAR)
	$(PYTHON) -m resnet_keras train --model resnet20 --dataset folder:$(CIFAR) \
	    --epochs 2 --steps-per-epoch 150 --batch-size 128 \
	    --strategy mirrored --num-cpu-replicas 2 --seed 0 \
	    --model-dir $(RUN_DIR) --export-dir $(RUN_DIR)/export
	$(PYTHON) -m resnet_keras predict --export-dir $(RUN_DIR)/export --top 3 \
	    $(CIFAR)/test/cat/0000.jpg $(CIFAR)/test/ship/0000.jpg $(CIFAR)/test/horse/0000.jpg

test:
	$(PYTHON) -m pip install -e ".[$(EXTRAS),train,tune,results,litert,onnx,test,torch]"
	# TF Serving's protos for the export tests; its own requirement is the full
	# tensorflow package, which would clash with tensorflow-cpu, hence --no-deps.
	$(PYTHON) -m pip install --no-deps "tensorflow-serving-api>=2.16"
	$(PYTHON) -m pytest tests

# Speed against keras.applications and the hardware (about 10 minutes on 2 cores),
# and the DRN-vs-ResNet accuracy protocol on CIFAR-10 (about 2 hours).
bench: install
	mkdir -p results
	$(PYTHON) -m resnet_keras benchmark all --output results/benchmark-cpu.json

results:
	$(PYTHON) -m pip install -e ".[$(EXTRAS),train,results]"
	$(PYTHON) -m resnet_keras results --out results/cifar10
