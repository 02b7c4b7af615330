"""``python -m resnet_keras`` is the ``resnet-keras`` command line."""
import sys

from resnet_keras.cli import main

sys.exit(main())
