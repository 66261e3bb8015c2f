#!/usr/bin/env python3
"""PyTorch reference timing for one Jacobian-penalty training ("harden") step.

The step is the one `certify harden --penalty exact --loss mean` takes:

    loss = mean_i CE(z_i, y_i) + lambda * sqrt(mean_i ||J_i||_F^2),   J_i = dz_i/dx_i  (K x n)

then double backprop and one Adam step. The ONNX graph is interpreted with torch ops, with the
weights and biases of its Conv, Gemm and MatMul(+Add) nodes turned into trainable Parameters
(copies of the initializers); every other initializer stays a constant. Inverted dropout (training
mode) acts on the input of every dense layer (Gemm, or MatMul with a weight) except the first; one
mask per sample, shared by all the rows of that sample, so J_i is the Jacobian of the thinned
network that produced z_i.

Penalty modes:
  exact          all K rows of every J_i by the replicate trick: each input is repeated K times,
                 one backward of sum_k z[b,k,k] with create_graph=True gives every row.
  projections:P  ||J_i||_F^2 estimated as (K/P) * sum_p ||J_i^T v_p||^2, v_p uniform on the unit
                 sphere of R^K (each input repeated P times, one vjp with create_graph=True).
  none           the plain cross-entropy step.

`--method loop` takes the same penalty with one forward of B rows and K (or P) vjps of it, each
with create_graph; `--method batched` with one forward and one vjp batched over the K (or P)
cotangents (is_grads_batched, vmap). Same values and gradients (up to rounding, and other random
vectors for projections), with about half the arithmetic of the replicate trick on the paper
network: the double backward of the replicate trick also runs back through the K-times-larger
forward graph (zero cotangents from the ReLU/max-pool masks, but computed all the same).

fp32 throughout, TF32 off for matmuls and cuDNN. Mini-batches come from a seeded shuffle of the
training set, floor(N/B) steps an epoch. `--warmup` steps run first (not timed, same data stream,
which is then restarted so the timed steps are exactly the first S steps, or E epochs, of it);
each timed step is bracketed by torch.cuda.synchronize() on CUDA. One JSON line on stdout per run
(type torch_harden_bench, or torch_harden_self_check with --self-check); progress on stderr.

Exit status: 0 ok, 1 self-check above tolerance, 2 bad arguments, unreadable files, unsupported
graph, or --device cuda without CUDA.

usage: torch_harden_bench.py MODEL.onnx TRAIN_IMAGES.idx[.gz] TRAIN_LABELS.idx[.gz]
           [--steps N | --epochs E] [--batch 500] [--lambda 0.1] [--lr 1e-4] [--dropout 0.5]
           [--penalty exact|projections:P|none] [--warmup 3] [--device cuda|cpu] [--seed 0]
           [--method replicate|loop|batched] [--threads T] [--cudnn-benchmark] [--self-check]
"""
import argparse
import gzip
import json
import math
import os
import statistics
import sys
import time

PROG = "torch_harden_bench"


def die(msg, code=2):
    print(f"{PROG}: error: {msg}", file=sys.stderr)
    sys.exit(code)


try:
    import numpy as np
    import onnx
    import torch
    import torch.nn.functional as F
    from onnx import numpy_helper
except ImportError as e:  # pragma: no cover - environment problem
    die(f"missing Python package ({e}); install torch, onnx and numpy")


# ----------------------------------------------------------------------------------------------
# Data


def read_idx(path, want_dims):
    """An IDX file (optionally gzip-compressed) of unsigned bytes as a numpy array."""
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        die(f"cannot read `{path}`: {e.strerror or e}")
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            die(f"`{path}` is not a valid gzip file: {e}")
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        die(f"`{path}` is not an IDX file (bad magic number)")
    if raw[2] != 0x08:
        die(f"`{path}`: IDX element type 0x{raw[2]:02x} is not unsigned byte (0x08)")
    dims = raw[3]
    if dims != want_dims:
        die(f"`{path}` has {dims} dimensions, expected {want_dims}")
    head = 4 + 4 * dims
    if len(raw) < head:
        die(f"`{path}` is truncated in its header")
    shape = [int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(dims)]
    count = int(np.prod(shape))
    if len(raw) - head < count:
        die(f"`{path}` is truncated: header says {shape}, {len(raw) - head} data bytes present")
    return np.frombuffer(raw, dtype=np.uint8, count=count, offset=head).reshape(shape)


# ----------------------------------------------------------------------------------------------
# Trainable interpretation of the ONNX graph


def node_attrs(node):
    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


SUPPORTED = {"Conv", "Relu", "LeakyRelu", "MaxPool", "AveragePool", "Flatten", "Reshape", "Gemm",
             "MatMul", "Add", "Sub", "Mul", "Div", "Identity", "Dropout", "Constant", "Transpose",
             "BatchNormalization", "Clip", "Softmax", "LogSoftmax", "Sigmoid", "Tanh"}


class TrainableOnnxNet(torch.nn.Module):
    """The ONNX graph as a torch module whose layer weights are Parameters.

    forward(x, rep, masks) takes x of shape [B*rep, ...] whose rows come in groups of `rep`
    copies of the same sample; a dropout mask is drawn per sample (or taken from `masks`) and
    repeated over its `rep` rows.
    """

    def __init__(self, path, device):
        super().__init__()
        try:
            model = onnx.load(path)
        except Exception as e:  # onnx raises several types for unreadable files
            die(f"cannot load ONNX model `{path}`: {e}")
        g = model.graph
        self.nodes = list(g.node)
        self.attrs = [node_attrs(n) for n in self.nodes]
        if not self.nodes:
            die(f"`{path}` has an empty graph")
        bad = sorted({n.op_type for n in self.nodes} - SUPPORTED)
        if bad:
            die(f"`{path}`: unsupported ONNX op(s) {', '.join(bad)}")
        init_arrays = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        inputs = [i for i in g.input if i.name not in init_arrays]
        if len(inputs) != 1:
            die(f"`{path}` has {len(inputs)} non-initializer inputs; expected one image input")
        self.input_name = inputs[0].name
        self.input_dims = [d.dim_value if d.HasField("dim_value") else None
                           for d in inputs[0].type.tensor_type.shape.dim]
        self.output_name = g.output[0].name

        producer = {o: n for n in self.nodes for o in n.output}

        # Which initializers are trainable weights.
        trainable = set()
        for n in self.nodes:
            if n.op_type in ("Conv", "Gemm"):
                trainable.update(i for i in n.input[1:] if i in init_arrays)
            elif n.op_type == "MatMul":
                trainable.update(i for i in n.input if i in init_arrays)
            elif n.op_type == "Add":
                others = [i for i in n.input if i not in init_arrays]
                if len(others) == 1 and others[0] in producer and producer[others[0]].op_type == "MatMul":
                    trainable.update(i for i in n.input if i in init_arrays)

        # Dense layers in graph order; dropout on the data input of all but the first.
        self.dropout_at = {}  # node index -> position of the data input
        dense_seen = 0
        for idx, n in enumerate(self.nodes):
            pos = None
            if n.op_type == "Gemm":
                pos = 0
            elif n.op_type == "MatMul" and any(i in init_arrays for i in n.input):
                pos = 0 if n.input[0] not in init_arrays else 1
            if pos is not None:
                if dense_seen > 0:
                    self.dropout_at[idx] = pos
                dense_seen += 1

        self.param_names = sorted(trainable)
        self.params = torch.nn.ParameterList(
            [torch.nn.Parameter(torch.tensor(init_arrays[k].copy(), dtype=torch.float32, device=device))
             for k in self.param_names])
        self.consts = {}
        for k, a in init_arrays.items():
            if k in trainable:
                continue
            t = torch.tensor(a.copy(), device=device)
            self.consts[k] = t.float() if t.is_floating_point() else t
        # A final Softmax/LogSoftmax is stripped: the penalty is on the logits.
        self.skip = set()
        last = producer.get(self.output_name)
        if last is not None and last.op_type in ("Softmax", "LogSoftmax"):
            self.skip.add(id(last))
            self.output_name = last.input[0]
        self.dropout_p = 0.0
        self.gen = None

    def describe(self):
        return [n.op_type for n in self.nodes]

    def input_shape(self):
        """Per-sample input shape from the graph (batch dimension dropped)."""
        dims = self.input_dims[1:]
        if dims and all(d for d in dims):
            return dims
        if any(n.op_type == "Conv" for n in self.nodes):
            return [1, 28, 28]
        return [784]

    def draw_masks(self, b, x_shapes):
        """One inverted-dropout mask per sample for each dropout site (shapes without batch)."""
        keep = 1.0 - self.dropout_p
        return [(torch.rand((b, *s), generator=self.gen, device=self.gen.device) < keep).float() / keep
                for s in x_shapes]

    def forward(self, x, rep=1, masks=None):
        """Logits of x [B*rep, ...]. `masks`: None (draw if training and p > 0) or a list of
        per-sample masks, one per dropout site in graph order (returned as self.last_masks)."""
        env = dict(self.consts)
        env.update(zip(self.param_names, self.params))
        env[self.input_name] = x
        use_dropout = masks is not None or (self.training and self.dropout_p > 0.0)
        used = []
        site = 0
        for idx, n in enumerate(self.nodes):
            if id(n) in self.skip:
                continue
            a = self.attrs[idx]
            ins = [env[i] if i else None for i in n.input]
            op = n.op_type
            if idx in self.dropout_at and use_dropout:
                pos = self.dropout_at[idx]
                h = ins[pos]
                if masks is not None:
                    m = masks[site]
                else:
                    m = self.draw_masks(h.shape[0] // rep, [tuple(h.shape[1:])])[0]
                used.append(m)
                ins[pos] = h * (m.repeat_interleave(rep, dim=0) if rep > 1 else m)
                site += 1
            if op == "Conv":
                pads = a.get("pads", [0, 0, 0, 0])
                nsp = len(pads) // 2
                if pads[:nsp] != pads[nsp:]:
                    x0 = F.pad(ins[0], [p for i in reversed(range(nsp)) for p in (pads[i], pads[i + nsp])])
                    pads = [0] * (2 * nsp)
                else:
                    x0 = ins[0]
                if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET", b"VALID", "VALID"):
                    die(f"Conv {n.name}: auto_pad {a['auto_pad']} is not supported")
                y = F.conv2d(x0, ins[1], ins[2] if len(ins) > 2 else None,
                             stride=a.get("strides", [1, 1]), padding=pads[:nsp],
                             dilation=a.get("dilations", [1, 1]), groups=a.get("group", 1))
            elif op == "Relu":
                y = torch.relu(ins[0])
            elif op == "LeakyRelu":
                y = F.leaky_relu(ins[0], a.get("alpha", 0.01))
            elif op == "Sigmoid":
                y = torch.sigmoid(ins[0])
            elif op == "Tanh":
                y = torch.tanh(ins[0])
            elif op == "Clip":
                lo = ins[1] if len(ins) > 1 and ins[1] is not None else a.get("min")
                hi = ins[2] if len(ins) > 2 and ins[2] is not None else a.get("max")
                y = torch.clamp(ins[0], None if lo is None else float(lo), None if hi is None else float(hi))
            elif op in ("MaxPool", "AveragePool"):
                k = a["kernel_shape"]
                pads = a.get("pads", [0] * 2 * len(k))
                x0 = ins[0]
                if pads[:len(k)] != pads[len(k):]:
                    fill = float("-inf") if op == "MaxPool" else 0.0
                    x0 = F.pad(x0, [p for i in reversed(range(len(k))) for p in (pads[i], pads[i + len(k)])], value=fill)
                    pads = [0] * 2 * len(k)
                if op == "MaxPool":
                    y = F.max_pool2d(x0, k, a.get("strides", [1] * len(k)), pads[:len(k)],
                                     dilation=a.get("dilations", [1] * len(k)), ceil_mode=bool(a.get("ceil_mode", 0)))
                else:
                    y = F.avg_pool2d(x0, k, a.get("strides", [1] * len(k)), pads[:len(k)],
                                     ceil_mode=bool(a.get("ceil_mode", 0)),
                                     count_include_pad=bool(a.get("count_include_pad", 0)))
            elif op == "Flatten":
                axis = a.get("axis", 1)
                y = ins[0].reshape(int(np.prod(ins[0].shape[:axis])) if axis > 0 else 1, -1)
            elif op == "Reshape":
                target = [int(v) for v in ins[1].tolist()]
                # The leading dimension is the batch (models exported with a fixed batch of 1).
                rest = [ins[0].shape[i] if (v == 0 and i < ins[0].dim()) else v
                        for i, v in enumerate(target)][1:]
                y = ins[0].reshape(ins[0].shape[0], *rest)
            elif op == "Transpose":
                y = ins[0].permute(*a["perm"]) if "perm" in a else ins[0].permute(*reversed(range(ins[0].dim())))
            elif op == "Gemm":
                A = ins[0].t() if a.get("transA", 0) else ins[0]
                W = ins[1].t() if a.get("transB", 0) else ins[1]
                y = a.get("alpha", 1.0) * (A @ W)
                if len(ins) > 2 and ins[2] is not None:
                    y = y + a.get("beta", 1.0) * ins[2]
            elif op == "MatMul":
                y = ins[0] @ ins[1]
            elif op == "Add":
                y = ins[0] + ins[1]
            elif op == "Sub":
                y = ins[0] - ins[1]
            elif op == "Mul":
                y = ins[0] * ins[1]
            elif op == "Div":
                y = ins[0] / ins[1]
            elif op in ("Identity", "Dropout"):
                y = ins[0]  # a Dropout node of an exported graph is its inference form
            elif op == "Constant":
                y = torch.tensor(numpy_helper.to_array(a["value"]).copy(), device=x.device)
            elif op == "BatchNormalization":
                eps = a.get("epsilon", 1e-5)
                shape = [1, -1] + [1] * (ins[0].dim() - 2)
                scale = ins[1] / torch.sqrt(ins[4] + eps)
                y = (ins[0] - ins[3].reshape(shape)) * scale.reshape(shape) + ins[2].reshape(shape)
            elif op in ("Softmax", "LogSoftmax"):
                f = torch.softmax if op == "Softmax" else torch.log_softmax
                y = f(ins[0], dim=a.get("axis", -1))
            else:  # guarded by SUPPORTED
                die(f"unsupported op {op}")
            env[n.output[0]] = y
        self.last_masks = used
        z = env[self.output_name]
        return z.reshape(z.shape[0], -1)


# ----------------------------------------------------------------------------------------------
# The training step


def parse_penalty(s):
    if s in ("exact", "none"):
        return s, None
    if s.startswith("projections:"):
        try:
            p = int(s.split(":", 1)[1])
        except ValueError:
            p = 0
        if p >= 1:
            return "projections", p
    raise argparse.ArgumentTypeError(f"`{s}` is not exact, none or projections:P with an integer P >= 1")


METHODS = ("replicate", "loop", "batched")


def unit_vectors(net, rows, k, dtype):
    """`rows` vectors uniform on the unit sphere of R^K."""
    v = torch.randn(rows, k, generator=net.gen, device=net.gen.device, dtype=dtype)
    return v / v.norm(dim=1, keepdim=True)


def jacobian_sq(net, xb, k, mode, proj, masks=None, create_graph=True, method="replicate"):
    """Logits [B,K] and per-sample ||J_i||_F^2 (exact, or the projection estimate), differentiable
    with respect to the weights when create_graph.

    method "replicate": each sample repeated R times (R = K rows, or P projections), one forward
    of B*R rows and one vjp; the logits are those of each sample's first replica.
    method "loop": one forward of B rows, then R vjps of it, each with create_graph (the forward
    graph is shared, so the double backward runs through it once instead of R times).
    method "batched": one forward of B rows, one vjp batched over the R cotangents
    (autograd.grad with is_grads_batched, i.e. vmap), create_graph."""
    b = xb.shape[0]
    r = k if mode == "exact" else proj
    if method == "replicate":
        xr = (xb.repeat_interleave(r, dim=0) if r > 1 else xb).detach().requires_grad_(True)
        z = net(xr, rep=r, masks=masks)
        if mode == "exact":
            w = torch.eye(k, device=xb.device, dtype=z.dtype).repeat(b, 1)
        else:
            w = unit_vectors(net, b * r, k, z.dtype)
        (g,) = torch.autograd.grad((z * w).sum(), xr, create_graph=create_graph)
        sq = g.pow(2).reshape(b, r, -1).sum(dim=(1, 2))
        logits = z.reshape(b, r, k)[:, 0, :]
    elif method == "batched":
        x1 = xb.detach().requires_grad_(True)
        logits = net(x1, masks=masks)
        if mode == "exact":
            v = torch.eye(k, device=xb.device, dtype=logits.dtype)[:, None, :].expand(k, b, k)
        else:
            v = unit_vectors(net, r * b, k, logits.dtype).reshape(r, b, k)
        (g,) = torch.autograd.grad(logits, x1, grad_outputs=v, create_graph=create_graph,
                                   is_grads_batched=True)
        sq = g.pow(2).reshape(r, b, -1).sum(dim=(0, 2))
    else:
        x1 = xb.detach().requires_grad_(True)
        logits = net(x1, masks=masks)
        sq = 0.0
        for j in range(r):
            if mode == "exact":
                out = logits[:, j].sum()
            else:
                out = (logits * unit_vectors(net, b, k, logits.dtype)).sum()
            (g,) = torch.autograd.grad(out, x1, create_graph=create_graph, retain_graph=True)
            sq = sq + g.pow(2).reshape(b, -1).sum(dim=1)
    if mode == "projections":
        sq = sq * (k / r)
    return logits, sq


def make_step(net, opt, k, mode, proj, lam, method="replicate"):
    def step(xb, yb):
        if mode == "none":
            z = net(xb)
            ce = F.cross_entropy(z, yb)
            loss = ce
            msq = None
        else:
            z, sq = jacobian_sq(net, xb, k, mode, proj, method=method)
            ce = F.cross_entropy(z, yb)
            msq = sq.mean()
            loss = ce + lam * msq.sqrt()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return ce.detach(), (msq.detach() if msq is not None else None)
    return step


# ----------------------------------------------------------------------------------------------
# Self-check: replicate trick against torch.autograd.functional.jacobian per sample


def grad_rel_diff(names, params, grads, ref):
    """max over tensors of ||g - g_ref|| / max(||g_ref||, 1e-6 ||all of g_ref||); a tensor whose
    two gradients are both absent or identically zero (a bias the Jacobian does not depend on)
    is listed instead."""
    ref = [torch.zeros_like(p) if g is None else g for p, g in zip(params, ref)]
    grads = [torch.zeros_like(p) if g is None else g for p, g in zip(params, grads)]
    total = torch.sqrt(sum(g.pow(2).sum() for g in ref)).item()
    worst, zero = 0.0, []
    for name, g, gf in zip(names, grads, ref):
        if not g.any() and not gf.any():
            zero.append(name)
            continue
        worst = max(worst, (g - gf).norm().item() / max(gf.norm().item(), 1e-6 * total, 1e-30))
    return worst, zero


def self_check(net, xb, k):
    net.train()
    b = xb.shape[0]
    # Fixed dropout masks shared by every computation (so the thinned network is the same).
    with torch.no_grad():
        net(xb)
    masks = net.last_masks if net.dropout_p > 0 else None
    params = list(net.parameters())

    # Reference: per-sample Jacobian by torch.autograd.functional.jacobian.
    sq_ref = []
    for i in range(b):
        mi = [m[i:i + 1] for m in masks] if masks is not None else None
        f = lambda xi: net(xi.unsqueeze(0), masks=mi)[0]  # noqa: E731
        jac = torch.autograd.functional.jacobian(f, xb[i], create_graph=True)  # [K, *input]
        sq_ref.append(jac.pow(2).sum())
    sq_ref = torch.stack(sq_ref)
    grads_ref = torch.autograd.grad(sq_ref.mean().sqrt(), params, allow_unused=True)

    out = {"samples": b, "dropout_masks": masks is not None,
           "mean_jac_fro_sq_functional": sq_ref.mean().item()}
    worst = 0.0
    for method in METHODS:
        _, sq = jacobian_sq(net, xb, k, "exact", None, masks=masks, create_graph=True, method=method)
        grads = torch.autograd.grad(sq.mean().sqrt(), params, allow_unused=True)
        rel = ((sq - sq_ref).abs() / sq_ref.abs().clamp_min(1e-30)).max().item()
        grel, zero = grad_rel_diff(net.param_names, params, grads, grads_ref)
        out[f"mean_jac_fro_sq_{method}"] = sq.mean().item()
        out[f"max_rel_diff_per_sample_{method}"] = rel
        out[f"max_rel_diff_penalty_grad_{method}"] = grel
        worst = max(worst, rel, grel)
    out["max_rel_diff"] = worst
    out["params_with_zero_penalty_grad"] = zero
    return out


# ----------------------------------------------------------------------------------------------


def main():
    ap = argparse.ArgumentParser(prog=PROG, description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("images")
    ap.add_argument("labels")
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--steps", type=int, help="timed steps (20 when neither --steps nor --epochs is given)")
    g.add_argument("--epochs", type=int, help="timed epochs of floor(N/B) steps")
    ap.add_argument("--batch", type=int, default=500, help="mini-batch size (500)")
    ap.add_argument("--lambda", dest="lam", type=float, default=0.1, help="penalty weight (0.1)")
    ap.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (1e-4)")
    ap.add_argument("--dropout", type=float, default=0.5,
                    help="dropout rate on the input of every dense layer but the first (0.5)")
    ap.add_argument("--penalty", type=parse_penalty, default="exact",
                    help="exact | projections:P | none (exact)")
    ap.add_argument("--method", choices=METHODS, default="replicate",
                    help="how the penalty's vjps are taken: replicate (default; each input repeated "
                         "K or P times, one vjp), loop (one forward, K or P vjps of it) or batched "
                         "(one forward, one vjp batched over the K or P cotangents)")
    ap.add_argument("--warmup", type=int, default=3, help="untimed steps first (3)")
    ap.add_argument("--device", choices=["cuda", "cpu"], default=None,
                    help="default: cuda when available, else cpu")
    ap.add_argument("--seed", type=int, default=0, help="data order, dropout masks, projections (0)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (CPU)")
    ap.add_argument("--cudnn-benchmark", action="store_true", help="let cuDNN autotune (off by default)")
    ap.add_argument("--self-check", action="store_true",
                    help="on one small batch (10 samples, fixed dropout masks), compare per-sample "
                         "||J||_F^2 and the gradient of sqrt(mean ||J||_F^2) from every method with "
                         "torch.autograd.functional.jacobian; exit 1 if a relative difference is above 1e-4")
    args = ap.parse_args()

    mode, proj = args.penalty
    if args.batch < 1:
        ap.error("--batch must be >= 1")
    if args.steps is not None and args.steps < 1:
        ap.error("--steps must be >= 1")
    if args.epochs is not None and args.epochs < 1:
        ap.error("--epochs must be >= 1")
    if args.warmup < 0:
        ap.error("--warmup must be >= 0")
    if not (0.0 <= args.dropout < 1.0):
        ap.error("--dropout must be in [0, 1)")
    if not (args.lr > 0 and math.isfinite(args.lr)):
        ap.error("--lr must be a positive number")
    if not (args.lam >= 0 and math.isfinite(args.lam)):
        ap.error("--lambda must be a non-negative number")
    if args.threads is not None and args.threads < 1:
        ap.error("--threads must be >= 1")
    for p in (args.model, args.images, args.labels):
        if not os.path.isfile(p):
            die(f"`{p}` does not exist or is not a file")

    if args.device == "cuda" and not torch.cuda.is_available():
        die("--device cuda was requested but CUDA is not available to this torch "
            f"({torch.__version__}, built for CUDA {torch.version.cuda})", 2)
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if args.threads:
        torch.set_num_threads(args.threads)
    # Plain float32: no TF32 in matmuls or cuDNN convolutions.
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cudnn.benchmark = bool(args.cudnn_benchmark)
    torch.manual_seed(args.seed)

    images = read_idx(args.images, 3)
    labels = read_idx(args.labels, 1)
    n_train = images.shape[0]
    if labels.shape[0] != n_train:
        die(f"`{args.images}` has {n_train} images but `{args.labels}` has {labels.shape[0]} labels")
    if args.batch > n_train:
        die(f"--batch {args.batch} is larger than the training set ({n_train} images)")

    net = TrainableOnnxNet(args.model, device)
    net.dropout_p = args.dropout
    net.gen = torch.Generator(device=device)
    net.gen.manual_seed(args.seed + 1)
    shape = net.input_shape()
    if int(np.prod(shape)) != images.shape[1] * images.shape[2]:
        die(f"the model's input {shape} does not hold {images.shape[1]}x{images.shape[2]} images")
    # Pixels u8/255 in [0,1], as the models in shared/models expect.
    x_all = torch.tensor(images.reshape(n_train, *shape), device=device).float().div_(255.0)
    y_all = torch.tensor(labels.astype(np.int64), device=device)
    net.eval()
    with torch.no_grad():
        k = net(x_all[:1]).shape[1]
    if int(labels.max()) >= k:
        die(f"label {int(labels.max())} is out of range for a model with {k} outputs")

    steps_per_epoch = n_train // args.batch
    timed = args.epochs * steps_per_epoch if args.epochs is not None else (args.steps if args.steps is not None else 20)

    def batches(total):
        """`total` batch index tensors from the seeded shuffle, epoch after epoch."""
        gen = torch.Generator().manual_seed(args.seed)
        out = []
        while len(out) < total:
            perm = torch.randperm(n_train, generator=gen).to(device)
            for s in range(steps_per_epoch):
                if len(out) == total:
                    break
                out.append(perm[s * args.batch:(s + 1) * args.batch])
        return out

    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)
    dev_name = torch.cuda.get_device_name() if device == "cuda" else "cpu"
    env_info = {"device": dev_name, "device_kind": device, "torch": torch.__version__,
                "cuda": torch.version.cuda if device == "cuda" else None,
                "cudnn": torch.backends.cudnn.version() if device == "cuda" else None,
                "tf32": False, "cudnn_benchmark": bool(args.cudnn_benchmark),
                "threads": torch.get_num_threads()}

    if args.self_check:
        nb = min(args.batch, 10)
        xb = x_all[batches(1)[0][:nb]]
        res = self_check(net, xb, k)
        ok = res["max_rel_diff"] <= 1e-4
        print(json.dumps({"type": "torch_harden_self_check", "model": args.model, **env_info, **res,
                          "tolerance": 1e-4, "ok": ok}), flush=True)
        sys.exit(0 if ok else 1)

    opt = torch.optim.Adam(net.parameters(), lr=args.lr)
    step = make_step(net, opt, k, mode, proj, args.lam, args.method)
    net.train()

    for idx in batches(args.warmup):
        step(x_all[idx], y_all[idx])
    sync()
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()

    times = []
    last = None
    order = batches(timed)
    wall0 = time.perf_counter()
    for s, idx in enumerate(order):
        sync()
        t0 = time.perf_counter()
        last = step(x_all[idx], y_all[idx])
        sync()
        times.append(time.perf_counter() - t0)
        if timed >= 20 and (s + 1) % max(1, timed // 10) == 0:
            print(f"{PROG}: step {s + 1}/{timed}, last {times[-1]:.4f} s, CE {last[0].item():.4f}",
                  file=sys.stderr, flush=True)
    wall = time.perf_counter() - wall0

    ce, msq = last
    mean_s = statistics.fmean(times)
    summary = {
        "type": "torch_harden_bench", "model": args.model, **env_info,
        "penalty": mode, "projections": proj, "method": args.method if mode != "none" else None,
        "loss": "mean", "lambda": args.lam, "optimizer": "adam",
        "lr": args.lr, "dropout": args.dropout, "batch": args.batch, "seed": args.seed,
        "n_train": n_train, "steps_per_epoch": steps_per_epoch, "epochs": args.epochs,
        "warmup_steps": args.warmup, "steps_timed": len(times),
        "median_step_s": statistics.median(times), "mean_step_s": mean_s,
        "min_step_s": min(times), "max_step_s": max(times),
        "examples_per_s": args.batch / mean_s, "timed_wall_s": wall,
        "final_ce": ce.item(),
        # The penalty's ||J||_F^2 as the last step computed it (the projection estimate for
        # projections:P, none for a plain step), before that step's update.
        "final_mean_jac_fro_sq": msq.item() if msq is not None else None,
    }
    if device == "cuda":
        summary["peak_memory_bytes"] = torch.cuda.max_memory_allocated()
    print(json.dumps(summary), flush=True)


if __name__ == "__main__":
    main()
