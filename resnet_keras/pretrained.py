"""The known public weights, one row of metadata per registered name.

Beside the architecture registry (:mod:`resnet_keras.specs`) sits this one:
for every model with public ImageNet weights, a :class:`WeightSource` says
where the file is (URL, file name, hash), what the network expects as input
(the preprocessing ``convention``, native input size, evaluation crop
fraction, resize interpolation) and how good it is (published top-1). This
is what timm keeps as ``pretrained_cfg`` and torchvision as ``Weights.meta``.

    from resnet_keras.pretrained import PRETRAINED
    PRETRAINED["resnet50_v1"].convention      # 'caffe'
    PRETRAINED["resnet50"].top1               # 0.7613

Input conventions (:mod:`resnet_keras.preprocessing` applies them):

* ``"torch"``: RGB scaled to [0, 1], minus torchvision's per-channel mean,
  over its std (torchvision, timm, fyu/drn; and every model trained here
  from scratch);
* ``"caffe"``: RGB -> BGR, minus the per-channel ImageNet mean, 0-255 scale
  (keras.applications ResNet50/101/152);
* ``"tf"``: pixels scaled to [-1, 1] (keras.applications ResNet50V2/101V2/152V2).

Published top-1 is on the ImageNet validation set, single centre crop at the
native size, as each source reports it (None where the source publishes
none for that file). Pure Python: reading it imports no TensorFlow.
"""
import dataclasses
from typing import Optional

KERAS_URL = "https://storage.googleapis.com/tensorflow/keras-applications/resnet/"
TORCHVISION_URL = "https://download.pytorch.org/models/"
DRN_URL = "http://dl.yf.io/drn/"
TIMM_URL = "https://github.com/rwightman/pytorch-image-models/releases/download/"


@dataclasses.dataclass(frozen=True)
class WeightSource:
    """One public weights file of a registered model and what it expects.

    ``file_hash`` is keras.applications' md5 for its files and the sha256
    prefix in the file name for PyTorch checkpoints (``hash_algorithm``);
    ``notop`` is the (file name, hash) of a keras.applications file without
    the classifier.
    """

    model: str
    origin: str  # "keras.applications", "torchvision", "fyu/drn" or "timm"
    url: str
    file_hash: str
    hash_algorithm: str
    convention: str
    top1: Optional[float] = None
    input_size: int = 224
    crop_fraction: float = 0.875
    interpolation: str = "bilinear"
    num_classes: int = 1000
    notop: Optional[tuple] = None

    @property
    def file_name(self):
        return self.url.rsplit("/", 1)[1]

    @property
    def file_format(self):
        """"keras" (an .h5 file read by layer name) or "torch" (a state dict)."""
        return "keras" if self.origin == "keras.applications" else "torch"

    def to_dict(self):
        return dataclasses.asdict(self)


def _keras(model, keras_name, convention, top1, hashes):
    stem = f"{keras_name}_weights_tf_dim_ordering_tf_kernels"
    return WeightSource(model, "keras.applications", f"{KERAS_URL}{stem}.h5", hashes[0], "md5",
                        convention, top1, notop=(f"{stem}_notop.h5", hashes[1]))


_TORCH_URLS = {"torchvision": TORCHVISION_URL, "fyu/drn": DRN_URL, "timm": TIMM_URL}


def _torch(model, origin, file, top1):
    sha = file.rsplit("-", 1)[1].split(".")[0]
    return WeightSource(model, origin, _TORCH_URLS[origin] + file, sha, "sha256", "torch", top1,
                        interpolation="bicubic" if origin == "timm" else "bilinear")


# keras.applications (keras/src/applications/resnet.py, resnet_v2.py): hashes
# (with top, without top); top-1 from the keras.applications table.
_ROWS = [
    *(_keras(name, keras_name, convention, top1, (top, notop))
      for name, keras_name, convention, top1, top, notop in (
          ("resnet50_v1", "resnet50", "caffe", 0.749, "2cb95161c43110f7111970584f804107",
           "4d473c1dd8becc155b73f8504c6f6626"),
          ("resnet101_v1", "resnet101", "caffe", 0.764, "f1aeb4b969a6efcfb50fad2f0c20cfc5",
           "88cf7a10940856eca736dc7b7e228a21"),
          ("resnet152_v1", "resnet152", "caffe", 0.766, "100835be76be38e30d865e96f2aaae62",
           "ee4c566cf9a93f14d82f913c2dc6dd0c"),
          ("resnet50v2", "resnet50v2", "tf", 0.760, "3ef43a0b657b3be2300d5770ece849e0",
           "fac2f116257151a9d068a22e544a4917"),
          ("resnet101v2", "resnet101v2", "tf", 0.772, "6343647c601c52e1368623803854d971",
           "c0ed64b8031c3730f411d2eb4eea35b5"),
          ("resnet152v2", "resnet152v2", "tf", 0.780, "a49b44d1979771252814e80f8ec446f9",
           "ed17cf2e0169df9d443503ef94b23b33"))),
    *(_torch(*row) for row in (
        # torchvision IMAGENET1K_V1 (Weights.meta "acc@1").
        ("resnet18", "torchvision", "resnet18-f37072fd.pth", 0.69758),
        ("resnet34", "torchvision", "resnet34-b627a593.pth", 0.73314),
        ("resnet50", "torchvision", "resnet50-0676ba61.pth", 0.76130),
        ("resnet101", "torchvision", "resnet101-63fe2227.pth", 0.77374),
        ("resnet152", "torchvision", "resnet152-394f9c45.pth", 0.78312),
        ("resnext50_32x4d", "torchvision", "resnext50_32x4d-7cdf4587.pth", 0.77618),
        ("resnext101_32x8d", "torchvision", "resnext101_32x8d-8ba56ff5.pth", 0.79312),
        ("wide_resnet50_2", "torchvision", "wide_resnet50_2-95faca4d.pth", 0.78468),
        ("wide_resnet101_2", "torchvision", "wide_resnet101_2-32ee1156.pth", 0.78848),
        # fyu/drn model_urls; top-1 = 1 - the README's top-1 error (224 crop of 256).
        ("drn_c_26", "fyu/drn", "drn_c_26-ddedf421.pth", 0.751),
        ("drn_c_42", "fyu/drn", "drn_c_42-9d336e8c.pth", 0.771),
        ("drn_c_58", "fyu/drn", "drn_c_58-0a53a92c.pth", 0.783),
        ("drn_d_22", "fyu/drn", "drn_d_22-4bd2f8ea.pth", 0.742),
        ("drn_d_38", "fyu/drn", "drn_d_38-eebb45f0.pth", 0.762),
        ("drn_d_54", "fyu/drn", "drn_d_54-0e0534ff.pth", 0.788),
        ("drn_d_105", "fyu/drn", "drn_d_105-12b40979.pth", 0.794),
        # timm's own checkpoints (the resnet*d "ra2", seresnet50 "ra" and
        # ecaresnet*d "miil" weights), evaluated with bicubic resizing.
        ("resnet18d", "timm", "v0.1-weights/resnet18d_ra2-48a79e06.pth", None),
        ("resnet26d", "timm", "v0.1-weights/resnet26d-69e92c46.pth", None),
        ("resnet34d", "timm", "v0.1-weights/resnet34d_ra2-f8dcfcaf.pth", None),
        ("resnet50d", "timm", "v0.1-weights/resnet50d_ra2-464e36ba.pth", None),
        ("resnet101d", "timm", "v0.1-weights/resnet101d_ra2-2803ffab.pth", None),
        ("resnet152d", "timm", "v0.1-weights/resnet152d_ra2-5cac0439.pth", None),
        ("seresnet50", "timm", "v0.1-weights/seresnet50_ra_224-8efdb4bb.pth", None),
        ("ecaresnet50d", "timm", "v0.1-tresnet/ecaresnet50d-93c81e3b.pth", None),
        ("ecaresnet101d", "timm", "v0.1-tresnet/ecaresnet101d-153dad65.pth", None))),
]
PRETRAINED = {row.model: row for row in _ROWS}

# Registered timm topologies that timm publishes no ImageNet weights for.
UNTRAINED_IN_TIMM = ("seresnet18", "seresnet34", "seresnet101", "seresnet152")


def pretrained_source(model_name):
    """The :class:`WeightSource` of MODEL_NAME's ImageNet weights, or None."""
    return PRETRAINED.get(model_name)
