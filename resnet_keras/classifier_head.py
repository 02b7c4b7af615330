"""The classifier head of a model as the exports see it: its last layer, its
logits (whatever its activation) and the class names that go with it."""
import keras
import tensorflow as tf



def classifier_layer(model):
    """The model's last layer, which must produce its class scores."""
    if len(model.outputs) != 1 or len(model.outputs[0].shape) != 2:
        shapes = [tuple(t.shape) for t in model.outputs]
        raise ValueError(
            f"can only export a classifier with one [batch, classes] output, "
            f"got outputs {shapes} (build the model with include_top=True)")
    layer = model.layers[-1]
    if not isinstance(layer, (keras.layers.Dense, keras.layers.Activation)):
        raise ValueError(
            f"model {model.name!r} ends in a {type(layer).__name__} layer {layer.name!r}, "
            "not a classifier; expected a Dense or Activation layer ('predictions') "
            "(build the model with include_top=True)")
    if layer.output is not model.outputs[0]:
        raise ValueError(
            f"the last layer {layer.name!r} does not produce the model's output; "
            "expected a functional classifier ending in its 'predictions' layer")
    return layer


def _activation_name(layer):
    activation = getattr(layer, "activation", None)
    return getattr(activation, "__name__", None) if activation is not None else "linear"


def logits_function(model):
    """A function mapping normalised images to float32 logits.

    Works whether the model ends in a linear classifier or in softmax: for a
    softmax ``Dense`` head the logits are recomputed from the head's input
    with its own kernel and bias (in the layer's compute dtype); for a softmax
    ``Activation`` layer they are the layer's input.
    """
    layer = classifier_layer(model)
    activation = _activation_name(layer)
    if activation == "linear":
        return lambda x: tf.cast(model(x, training=False), tf.float32)
    if activation != "softmax":
        raise ValueError(
            f"cannot export a classifier whose {layer.name!r} layer has activation "
            f"{activation!r}; expected 'softmax' or None (linear)")
    features = keras.Model(model.inputs, layer.input, name=f"{model.name}_logits")
    if isinstance(layer, keras.layers.Activation):
        return lambda x: tf.cast(features(x, training=False), tf.float32)
    return lambda x: tf.cast(_dense_linear(layer, features(x, training=False)), tf.float32)


def _dense_linear(layer, inputs):
    """``inputs @ kernel + bias`` of a Dense layer, without its activation."""
    dtype = layer.compute_dtype
    outputs = tf.matmul(tf.cast(inputs, dtype), tf.cast(layer.kernel, dtype))
    if layer.use_bias:
        outputs = outputs + tf.cast(layer.bias, dtype)
    return outputs


def check_class_names(class_names):
    """ValueError unless every class name is a non-empty single line (labels.txt)."""
    bad = [name for name in map(str, class_names)
           if not name.strip() or "\n" in name or "\r" in name]
    if bad:
        raise ValueError(f"class names must be non-empty single lines, got {bad[0]!r}")


def check_model(model, image_size, class_names):
    """The class names as a list of strings, checked against the model."""
    classifier_layer(model)
    num_classes = model.outputs[0].shape[-1]
    names = [str(name) for name in class_names]
    if len(names) != num_classes:
        raise ValueError(
            f"got {len(names)} class names for a model with {num_classes} classes")
    check_class_names(names)
    input_shape = tuple(model.inputs[0].shape[1:])
    if input_shape[-1] != 3 or any(side not in (None, image_size) for side in input_shape[:2]):
        raise ValueError(
            f"model input shape {input_shape} does not take {image_size}x{image_size}x3 images")
    return names
