"""PyTorch training steps for gpupool's GPU machine script: an MLP
(1024 -> 4096 -> 4096 -> 10, batch 256), a small CNN (batch 64, 64x64), the
MLP again under bf16 autocast, the MLP's step captured once as a CUDA graph
and replayed (`mlp_graph`: one message a step through gpupool), and a small
GPT (`gpt`: 4 pre-norm transformer blocks of width 512, causal attention,
AdamW, bf16 autocast, 16 sequences of 256 tokens), with fixed seeds, so a
run natively and a run through gpupool can be compared loss for loss and
step time for step time.

Usage: `torch_step.py [STEPS [MODEL ...]]` (default 300 steps of mlp, cnn,
mlp_bf16, mlp_graph and gpt). Prints `LOSS <model> <step> <value>` every 50
steps and `BENCH <model>_step_ms <mean over the timed steps>`.
"""
import sys
import time

import torch
import torch.nn as nn


def mlp():
    return nn.Sequential(nn.Linear(1024, 4096), nn.ReLU(), nn.Linear(4096, 4096), nn.ReLU(), nn.Linear(4096, 10))


def cnn():
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(32, 64, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(64 * 16 * 16, 10),
    )


class TinyGPT(nn.Module):
    """A decoder-only transformer: token and position embeddings, pre-norm
    blocks (causal self-attention through scaled_dot_product_attention, a
    GELU MLP), a final norm and the vocabulary's logits."""

    def __init__(self, vocab=8192, width=512, heads=8, layers=4, context=256):
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(context, width)
        block = nn.TransformerEncoderLayer(
            width, heads, 4 * width, dropout=0.0, activation="gelu", batch_first=True, norm_first=True
        )
        self.blocks = nn.TransformerEncoder(block, layers, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)

    def forward(self, idx):
        t = idx.shape[1]
        h = self.tok(idx) + self.pos(torch.arange(t, device=idx.device))
        mask = nn.Transformer.generate_square_subsequent_mask(t, device=idx.device)
        return self.head(self.norm(self.blocks(h, mask=mask, is_causal=True)))


def images(shape, classes=10):
    """Random inputs of `shape` and a class for each."""
    def make(g):
        return torch.randn(*shape, generator=g), torch.randint(0, classes, (shape[0],), generator=g)
    return make


def tokens(batch, context, vocab=8192):
    """Random token sequences; each position's target is the next token."""
    def make(g):
        seq = torch.randint(0, vocab, (batch, context + 1), generator=g)
        return seq[:, :-1].contiguous(), seq[:, 1:].contiguous()
    return make


def run(name, model, data, steps, warmup=20, amp=False, adamw=False):
    torch.manual_seed(0)
    dev = torch.device("cuda")
    model = model.to(dev)
    if adamw:
        opt = torch.optim.AdamW(model.parameters(), lr=3e-4)
    else:
        opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator(device="cpu").manual_seed(1)
    x, y = (t.to(dev) for t in data(g))
    times = []
    for step in range(steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        opt.zero_grad(set_to_none=True)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=amp):
            out = model(x)
            loss = loss_fn(out.reshape(-1, out.shape[-1]), y.reshape(-1))
        loss.backward()
        opt.step()
        torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - t0)
        if step % 50 == 0 or step == steps - 1:
            print(f"LOSS {name} {step} {loss.item():.6f}", flush=True)
    print(f"BENCH {name}_step_ms {1000 * sum(times) / len(times):.4f}", flush=True)


def run_graph(name, model, shape, steps, warmup=20):
    """The step of `run`, captured as a CUDA graph after three eager steps
    on a side stream, then replayed `steps` times; its loss is the same
    sequence as `run`'s from the fourth step on."""
    torch.manual_seed(0)
    dev = torch.device("cuda")
    model = model.to(dev)
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    loss_fn = nn.CrossEntropyLoss()
    g = torch.Generator(device="cpu").manual_seed(1)
    x = torch.randn(*shape, generator=g).to(dev)
    y = torch.randint(0, 10, (shape[0],), generator=g).to(dev)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(3):
            opt.zero_grad(set_to_none=True)
            loss_fn(model(x), y).backward()
            opt.step()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(graph):
        loss = loss_fn(model(x), y)
        loss.backward()
        opt.step()
    times = []
    for step in range(steps):
        torch.cuda.synchronize()
        t0 = time.perf_counter()
        graph.replay()
        torch.cuda.synchronize()
        if step >= warmup:
            times.append(time.perf_counter() - t0)
        if step % 50 == 0 or step == steps - 1:
            print(f"LOSS {name} {step} {loss.item():.6f}", flush=True)
    print(f"BENCH {name}_step_ms {1000 * sum(times) / len(times):.4f}", flush=True)


MODELS = {
    "mlp": lambda steps: run("mlp", mlp(), images((256, 1024)), steps),
    "cnn": lambda steps: run("cnn", cnn(), images((64, 3, 64, 64)), steps),
    # Mixed precision: cuBLASLt's half-precision paths (and its own export
    # table) under autocast.
    "mlp_bf16": lambda steps: run("mlp_bf16", mlp(), images((256, 1024)), steps, amp=True),
    "mlp_graph": lambda steps: run_graph("mlp_graph", mlp(), (256, 1024), steps),
    # Attention (flash attention on a GPU), layer norms, embeddings and
    # AdamW's multi-tensor kernels.
    "gpt": lambda steps: run("gpt", TinyGPT(), tokens(16, 256), steps, amp=True, adamw=True),
}

if __name__ == "__main__":
    steps = int(sys.argv[1]) if len(sys.argv) > 1 else 300
    names = sys.argv[2:] or list(MODELS)
    assert torch.cuda.is_available(), "no CUDA device visible to PyTorch"
    print(f"device 0: {torch.cuda.get_device_name(0)}", flush=True)
    for name in names:
        MODELS[name](steps)
    # PyTorch's autograd device thread may still hold the last backward's
    # graph task, whose release takes the GIL: if the interpreter is
    # finalising by then, PyTorch aborts the process (pytorch/pytorch#38228;
    # seen on two busy cores). Let the thread finish before exiting.
    time.sleep(0.2)
