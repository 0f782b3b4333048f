"""Regenerate tests/data/endless_while.tflite: a WHILE whose condition never turns false.

    python tests/data/make_endless_while.py tests/data/endless_while.tflite

Input (1, 8, 8, 3) float32, output (1, 4) float32; the loop adds 1 to the input until
its sum is <= -1, which never happens (it ends at +inf, still > -1).
"""

import sys

import tensorflow as tf

SPEC = tf.TensorSpec((1, 8, 8, 3), tf.float32)


@tf.function(input_signature=[SPEC])
def model(x):
    _, v = tf.while_loop(lambda i, v: tf.reduce_sum(v) > -1.0, lambda i, v: (i + 1, v + 1.0), (tf.constant(0), x))
    pooled = tf.reduce_mean(v, axis=[1, 2])
    return tf.nn.softmax(tf.concat([pooled, pooled[:, :1]], axis=1))


if __name__ == "__main__":
    converter = tf.lite.TFLiteConverter.from_concrete_functions([model.get_concrete_function()], model)
    with open(sys.argv[1], "wb") as handle:
        handle.write(converter.convert())
