"""Regenerate tests/data/endless_while.tflite: a WHILE whose condition never turns false (python make_endless_while.py OUT)."""
import tensorflow as tf, time
spec = tf.TensorSpec((1, 8, 8, 3), tf.float32)
@tf.function(input_signature=[spec])
def model(x):
    def cond(i, v):
        return tf.reduce_sum(v) > -1.0
    def body(i, v):
        return i + 1, v + 1.0
    _, v = tf.while_loop(cond, body, (tf.constant(0), x))
    pooled = tf.reduce_mean(v, axis=[1, 2])
    return tf.nn.softmax(tf.concat([pooled, pooled[:, :1]], axis=1))
t=time.time()
conv = tf.lite.TFLiteConverter.from_concrete_functions([model.get_concrete_function()], model)
b = conv.convert()
open(__import__("sys").argv[1], "wb").write(b); print(len(b), time.time()-t)
