"""JAX through gpupool on a GPU-less node: a jitted training step (grad,
a scan of steps, XLA's GEMM autotuning with its redzone checks on pinned
memory) and control flow run as CUDA graphs with conditional nodes
(`lax.while_loop`, `lax.cond`, with command buffers for them in XLA_FLAGS).

JAX tries CUDA only when /dev/nvidiactl (or /dev/nvidia0, /dev/dxg) exists,
which a GPU-less node lacks; gpupool's device plugin provides a placeholder
there. This script is told the answer instead: the check stands in for that
placeholder, nothing else is changed.
"""

import jax._src.hardware_utils as hardware_utils

hardware_utils.has_visible_nvidia_gpu = lambda: True

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

assert jax.devices()[0].platform == "gpu", jax.devices()

key = jax.random.PRNGKey(0)
k1, k2 = jax.random.split(key)
params = [jax.random.normal(k1, (256, 512)) * 0.05, jax.random.normal(k2, (512, 10)) * 0.05]
x = jax.random.normal(key, (128, 256))
y = jnp.zeros((128,), jnp.int32)


def loss(p, x, y):
    h = jax.nn.relu(x @ p[0])
    return -jnp.mean(jax.nn.log_softmax(h @ p[1])[jnp.arange(128), y])


@jax.jit
def step(p, x, y):
    g = jax.grad(loss)(p, x, y)
    return [a - 0.1 * b for a, b in zip(p, g)]


@jax.jit
def steps(p, x, y):
    return jax.lax.scan(lambda p, _: (step(p, x, y), None), p, None, length=5)[0]


@jax.jit
def control(v, flag):
    def body(c):
        i, w = c
        return i + 1, w * 2.0 + 1.0

    _, w = jax.lax.while_loop(lambda c: c[0] < 10, body, (0, v))
    return jax.lax.cond(flag > 0, lambda u: u + 1, lambda u: u - 1, w)


for _ in range(3):
    params = step(params, x, y)
params = steps(params, x, y)
out = control(jnp.ones((1024,)), 1.0)
jax.block_until_ready((params, out))
print("JAX done", params[0].shape, out.shape, flush=True)
