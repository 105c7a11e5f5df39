"""torch.cond and while_loop captured in a CUDA graph (PyTorch's
conditional-node path), replayed with the predicate changed.

Prints one RESULT line per predicate; on a GPU, with x = 1:
true -> (1 * 2) + 3 = 5, false -> (1 - 1) + 3 = 3. gpupool's tests run it
on the software driver, which does not compute PyTorch's kernels, and check
the calls; scripts/gpu-e2e.sh compares the values, native and remote.
"""

import torch
from torch._higher_order_ops.cudagraph_conditional_nodes import (
    ControlFlowOpWarmupDispatchMode,
    CUDAGraphCaptureControlFlowOpDispatchMode,
)
from torch._higher_order_ops.while_loop import while_loop

x = torch.ones(8, device="cuda")
pred = torch.tensor(True, device="cuda")
i0 = torch.tensor(0, device="cuda")


def f(pred, x, i0):
    y = torch.cond(pred, lambda v: v * 2, lambda v: v - 1, (x,))
    _, z = while_loop(lambda i, v: i < 3, lambda i, v: (i + 1, v + 1), (i0, y))
    return z


s = torch.cuda.Stream()
with torch.cuda.stream(s), ControlFlowOpWarmupDispatchMode():
    f(pred, x, i0)
torch.cuda.synchronize()
g = torch.cuda.CUDAGraph()
with torch.cuda.graph(g), CUDAGraphCaptureControlFlowOpDispatchMode():
    out = f(pred, x, i0)
for p in (True, False):
    pred.fill_(p)
    g.replay()
    torch.cuda.synchronize()
    print(f"RESULT {str(p).lower()} {out.tolist()}", flush=True)
print("replayed", out.shape[0], flush=True)
