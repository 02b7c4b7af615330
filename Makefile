# resnet_keras: the two commands of the README.
#   make demo   install, then train resnet20 on real CIFAR-10 and export it
#   make test   install with the test extras (and CPU torch), then run the test suite
PYTHON ?= python3
SHARED ?= ../shared
CACHE ?= $(HOME)/.cache/resnet_keras
CIFAR := $(CACHE)/cifar10_jpeg
RUN_DIR ?= runs/demo
EXTRAS ?= cpu

.PHONY: install demo test bench results

install:
	$(PYTHON) -m pip install -e ".[$(EXTRAS)]"

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
	$(PYTHON) -m pip install -e ".[$(EXTRAS),test,torch]"
	$(PYTHON) -m pytest tests

# Speed against keras.applications and the hardware (about 10 minutes on 2 cores),
# and the DRN-vs-ResNet accuracy protocol on CIFAR-10 (about 2 hours).
bench: install
	mkdir -p results
	$(PYTHON) -m resnet_keras benchmark all --output results/benchmark-cpu.json

results:
	$(PYTHON) -m pip install -e ".[$(EXTRAS),results]"
	$(PYTHON) -m resnet_keras results --out results/cifar10
