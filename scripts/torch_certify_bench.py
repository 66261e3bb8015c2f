#!/usr/bin/env python3
"""PyTorch reference for batched certification: logits, the full logit Jacobian, ‖J‖_F,
Prop. 3 and Cor. 2 for N MNIST inputs, on CUDA when available (else CPU).

The ONNX graph (Conv, Relu, MaxPool, Flatten/Reshape, Gemm, MatMul, Add) is interpreted
with torch ops from its own initializers, so the same file certify reads is what is timed.
The Jacobian uses the replicate trick: each input is repeated K times, one backward pass
of sum_k z[b,k,k] gives all K rows. Figures are printed as JSON lines on stdout.

usage: torch_certify_bench.py MODEL.onnx IMAGES.idx[.gz] N [BATCH] [--check OUT.json]
"""
import gzip
import json
import math
import sys
import time

import numpy as np
import onnx
import torch
from onnx import numpy_helper


def read_idx_images(path, n):
    raw = open(path, "rb").read()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    dims = raw[3]
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims).reshape(shape)
    return data[:n].astype(np.float32) / 255.0


def attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


class OnnxNet(torch.nn.Module):
    def __init__(self, path, device):
        super().__init__()
        model = onnx.load(path)
        g = model.graph
        self.inits = {t.name: torch.tensor(numpy_helper.to_array(t).copy(), device=device) for t in g.initializer}
        self.nodes = list(g.node)
        self.input = [i.name for i in g.input if i.name not in self.inits][0]
        self.output = g.output[0].name

    def forward(self, x):
        env = dict(self.inits)
        env[self.input] = x
        for n in self.nodes:
            a = attrs(n)
            ins = [env[i] for i in n.input if i]
            op = n.op_type
            if op == "Conv":
                pads = a.get("pads", [0, 0, 0, 0])
                assert pads[0] == pads[2] and pads[1] == pads[3]
                y = torch.nn.functional.conv2d(ins[0], ins[1], ins[2] if len(ins) > 2 else None,
                                               stride=a.get("strides", [1, 1]), padding=pads[:2],
                                               dilation=a.get("dilations", [1, 1]), groups=a.get("group", 1))
            elif op == "Relu":
                y = torch.relu(ins[0])
            elif op == "MaxPool":
                pads = a.get("pads", [0, 0, 0, 0])
                y = torch.nn.functional.max_pool2d(ins[0], a["kernel_shape"], a.get("strides", a["kernel_shape"]),
                                                   pads[:2], ceil_mode=bool(a.get("ceil_mode", 0)))
            elif op == "Flatten":
                y = ins[0].reshape(ins[0].shape[0], -1)
            elif op == "Reshape":
                y = ins[0].reshape(ins[0].shape[0], -1)
            elif op == "Gemm":
                w = ins[1].t() if a.get("transB", 0) else ins[1]
                y = ins[0] @ w
                if len(ins) > 2:
                    y = y + ins[2]
            elif op == "MatMul":
                y = ins[0] @ ins[1]
            elif op == "Add":
                y = ins[0] + ins[1]
            else:
                raise SystemExit(f"unsupported op {op}")
            env[n.output[0]] = y
        return env[self.output]


def certify(net, x, k):
    """Logits [B,K] and Jacobian [B,K,n] by the replicate trick, then Prop. 3 and Cor. 2."""
    b = x.shape[0]
    xr = x.repeat_interleave(k, dim=0).detach().requires_grad_(True)
    z = net(xr)
    eye = torch.eye(k, device=x.device).repeat(b, 1)
    (g,) = torch.autograd.grad((z * eye).sum(), xr)
    jac = g.reshape(b, k, -1)
    logits = z.detach().reshape(b, k, k)[:, 0, :]
    fro = jac.pow(2).sum(dim=(1, 2)).sqrt()
    top = logits.topk(2, dim=1)
    pred, runner = top.indices[:, 0], top.indices[:, 1]
    margin = top.values[:, 0] - top.values[:, 1]
    prop3 = margin / (math.sqrt(2.0) * fro)
    diff_z = (logits.gather(1, pred[:, None]) - logits).abs()
    jp = jac[torch.arange(b), pred]
    diff_g = (jp[:, None, :] - jac).norm(dim=2)
    ratio = diff_z / diff_g
    ratio[torch.arange(b), pred] = float("inf")
    cor2 = ratio.min(dim=1).values
    return logits, fro, prop3, cor2, pred, runner


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    check = sys.argv[sys.argv.index("--check") + 1] if "--check" in sys.argv else None
    if check:
        args.remove(check)
    model, images, n = args[0], args[1], int(args[2])
    batch = int(args[3]) if len(args) > 3 else 256
    device = "cuda" if torch.cuda.is_available() else "cpu"
    # Plain float32 everywhere (cuDNN would use TF32 for convolutions by default).
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    net = OnnxNet(model, device)
    xs = read_idx_images(images, n)
    shape = [1, 28, 28] if "Conv" in {nd.op_type for nd in net.nodes} else [784]
    x_all = torch.tensor(xs, device=device).reshape(n, *shape)
    with torch.no_grad():
        k = net(x_all[:1]).shape[1]

    def run():
        outs = []
        for s in range(0, n, batch):
            outs.append(certify(net, x_all[s:s + batch], k))
        if device == "cuda":
            torch.cuda.synchronize()
        return outs

    run()  # warm-up (cuDNN autotuning, allocations)
    reps = 3
    t0 = time.perf_counter()
    for _ in range(reps):
        outs = run()
    dt = (time.perf_counter() - t0) / reps
    name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    print(json.dumps({"type": "torch_certify", "device": name, "torch": torch.__version__, "model": model,
                      "n": n, "batch": batch, "seconds": dt, "inputs_per_s": n / dt}))
    if check:
        fro = torch.cat([o[1] for o in outs]).cpu().tolist()
        prop3 = torch.cat([o[2] for o in outs]).cpu().tolist()
        cor2 = torch.cat([o[3] for o in outs]).cpu().tolist()
        with open(check, "w") as f:
            json.dump({"jacobian_fro": fro, "prop3_bound": prop3, "cor2_estimate": cor2}, f)


if __name__ == "__main__":
    main()
